"""``python -m resilient_llm.testing serve``: the command line reaches the provider's options."""

from __future__ import annotations

import json
import selectors
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest


def _post(url: str) -> tuple[int, dict[str, str]]:
    body = json.dumps({"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]})
    request = urllib.request.Request(url, data=body.encode(), method="POST",
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers)


def _first_line(process: subprocess.Popen[str], timeout: float) -> str:
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            pytest.fail(f"the server printed nothing in {timeout} s")
    return process.stdout.readline()


def test_serve_passes_limits_and_the_script_to_the_provider(tmp_path: Path) -> None:
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"faults": [{"kind": "status", "code": 503}]}))
    with subprocess.Popen(
        [sys.executable, "-m", "resilient_llm.testing", "serve", "--port", "0",
         "--script", str(script), "--rate-limit-rps", "0.01", "--retry-after"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    ) as process:
        try:
            _serve_and_check(process)
        finally:
            process.terminate()
            process.wait(timeout=10)


def _serve_and_check(process: subprocess.Popen[str]) -> None:
    line = _first_line(process, timeout=30)
    assert line.startswith("fault provider on http://127.0.0.1:")
    url = line.split(" on ", 1)[1].strip() + "/v1/chat/completions"
    status, _ = _post(url)
    assert status == 503  # the scripted fault
    status, headers = _post(url)
    assert status == 429  # one request per 100 s: the bucket (depth 1) is empty
    assert int({k.lower(): v for k, v in headers.items()}["retry-after"]) >= 1
