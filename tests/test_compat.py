"""The official SDKs' own ``tests/test_client.py`` pass against the drop-in classes.

Runs ``tests/compat/run_sdk_suites.py`` (pinned sdists from the package registry, their test
dependencies in a separate virtualenv, the committed deviation list): any failure outside
``tests/compat/deviations.toml``, or a listed deviation that now passes, fails this test. About
a minute on two cores once the cache is warm; the first run also downloads the sdists.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent / "compat" / "run_sdk_suites.py"


@pytest.mark.slow
@pytest.mark.compat
def test_official_client_suites_pass_against_the_drop_ins() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=900, check=False
    )
    report = proc.stdout + proc.stderr
    print(report)
    assert proc.returncode == 0, report
    assert "compat openai" in report and "compat anthropic" in report
