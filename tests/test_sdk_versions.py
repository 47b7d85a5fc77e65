"""SDK version bounds: one place, lower bounds only, a clear failure below, a warning above."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

from resilient_llm import _sdk_versions
from resilient_llm._sdk_versions import SDK_VERSIONS, check_sdk_version, sdk_version_status

ROOT = Path(__file__).resolve().parents[1]


def _compat_module() -> Any:
    spec = importlib.util.spec_from_file_location(
        "run_sdk_suites", ROOT / "tests" / "compat" / "run_sdk_suites.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("run_sdk_suites", module)  # its dataclasses look themselves up
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("installed", "status"), [
    ("3.49.9", "too_old"), ("3.50.0", "supported"), ("3.54.0", "supported"),
    ("3.63.0", "supported"), ("3.63.1", "newer"), ("4.0.0", "newer"), ("3.50", "supported"),
    ("3.64.0rc1", "newer"),
])
def test_status_against_the_supported_range(installed: str, status: str) -> None:
    assert SDK_VERSIONS["openai"] == ("3.50.0", "3.63.0")
    assert sdk_version_status("openai", installed) == status


def test_an_older_sdk_fails_with_the_upgrade_line() -> None:
    with pytest.raises(ImportError, match=r"needs anthropic >= 2\.10\.0, but anthropic 2\.9\.0 "
                                          r"is installed: python -m pip install --upgrade "
                                          r"'resilient-llm\[anthropic\]'"):
        check_sdk_version("anthropic", "2.9.0")


def test_a_newer_sdk_warns_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_sdk_versions, "_warned", set())
    with pytest.warns(UserWarning, match=r"anthropic 2\.99\.0 is newer than 2\.17\.0"):
        check_sdk_version("anthropic", "2.99.0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_sdk_version("anthropic", "2.99.0")  # once per process and version
        check_sdk_version("anthropic", "2.17.0")  # the tested range is silent


@pytest.mark.parametrize(("sdk", "fake", "expect"), [
    ("openai", "3.49.0", "ImportError: resilient_llm.openai needs openai >= 3.50.0"),
    ("openai", "9.0.0", "UserWarning: openai 9.0.0 is newer than 3.63.0"),
    ("anthropic", "2.0.0", "ImportError: resilient_llm.anthropic needs anthropic >= 2.10.0"),
])
def test_the_drop_in_modules_check_the_installed_sdk(sdk: str, fake: str, expect: str) -> None:
    code = (f"import {sdk}; {sdk}.__version__ = {fake!r}\n"
            "import warnings; warnings.simplefilter('always')\n"
            f"import resilient_llm.{sdk}\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert expect in proc.stderr
    assert (proc.returncode != 0) == expect.startswith("ImportError")


def test_pyproject_has_the_lower_bounds_and_no_upper_pin_for_users() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    for sdk, (oldest, newest) in SDK_VERSIONS.items():
        extra = re.search(rf'^{sdk} = \["([^"]*)"\]', pyproject, re.MULTILINE)
        assert extra is not None, sdk
        assert extra.group(1) == f"{sdk}>={oldest}"
        # The development environment stays on releases whose suites tests/compat knows.
        assert f'"{sdk}<={newest}"' in pyproject


def test_the_compat_runner_knows_both_bounds_of_each_sdk() -> None:
    tested = _compat_module().TESTED
    for sdk, (oldest, newest) in SDK_VERSIONS.items():
        versions = sorted(tested[sdk], key=lambda v: tuple(int(p) for p in v.split(".")))
        assert versions[0] == oldest and versions[-1] == newest, (sdk, versions)
        assert all(re.fullmatch(r"[0-9a-f]{64}", digest) for digest in tested[sdk].values())


def test_the_ci_oldest_stage_installs_the_oldest_supported_releases() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    stage = ci[ci.index("oldest_pins="):]
    assert "from resilient_llm._sdk_versions import SDK_VERSIONS" in stage
    assert "tests/test_compat.py" in stage and "tests/test_openai_dropin.py" in stage
