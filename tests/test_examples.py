"""Every example runs to completion against the local fault-injecting provider.

Here with the development environment; ``scripts/run_examples.py`` (run by CI) runs each one
in a fresh virtualenv with exactly the install line its header gives.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(path)], capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip(), "an example must show what it did"


def _runner() -> Any:
    spec = importlib.util.spec_from_file_location("run_examples",
                                                  ROOT / "scripts" / "run_examples.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_header_gives_one_install_line_with_extras_that_exist(path: Path) -> None:
    line = _runner().install_line(path)
    pyproject = (ROOT / "pyproject.toml").read_text()
    section = pyproject[pyproject.index("[project.optional-dependencies]"):]
    section = section[:section.index("\n[", 1)]
    extras = set(re.findall(r"^([a-z]+) = \[", section, re.MULTILINE))
    assert {"openai", "anthropic", "otel", "docs", "dev"} <= extras
    wanted = line.partition("[")[2].rstrip("]'").split(",") if "[" in line else []
    assert set(wanted) <= extras - {"dev", "docs"}, line


def test_ci_runs_the_examples_with_their_install_lines() -> None:
    assert "scripts/run_examples.py" in (ROOT / ".ci" / "run").read_text()


def test_the_telemetry_example_needs_the_otel_extra() -> None:
    line = _runner().install_line(ROOT / "examples" / "telemetry_console.py")
    assert "otel" in line


def test_the_degradation_example_shows_the_recovery_it_promises() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "degradation.py")], capture_output=True,
        text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    reasons = [line for line in lines if line.startswith("call ")]
    assert any("reason=overloaded" in line for line in reasons)
    assert any("reason=circuit_open" in line for line in reasons)
    last = reasons[-1]
    assert "served by gpt-4.1 " in last and "degraded=False" in last
    assert "recovered" in lines[-1]
