"""Shared helpers for the benchmarks: fresh-process runs, statistics, a provider process.

Nothing here is part of the library. Every socket is on 127.0.0.1.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# --- statistics ---------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100) with linear interpolation between closest ranks."""
    if not values:
        return math.nan
    data = sorted(values)
    if len(data) == 1:
        return data[0]
    rank = (len(data) - 1) * p / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def iqr(values: Sequence[float]) -> float:
    return percentile(values, 75) - percentile(values, 25)


def spread(values: Sequence[float]) -> tuple[float, float]:
    return (min(values), max(values)) if values else (math.nan, math.nan)


# --- machine ------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What the figures were measured on (for the JSON and the docs)."""
    versions: dict[str, str] = {}
    from importlib import metadata

    for dist in ("resilient-llm", "openai", "anthropic", "httpx2", "pydantic", "anyio"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "-"
    return {
        "git": _git_revision(),
        "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "versions": versions,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True,
                             text=True, cwd=str(ROOT), timeout=10, check=False)
    except OSError:
        return None
    return out.stdout.strip() or None


def load_note() -> str:
    """One line on how busy the machine is (the figures are only as quiet as the machine)."""
    if not hasattr(os, "getloadavg"):
        return ""
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"


def pin_to(cpu: int) -> bool:
    """Pin this process to one CPU when the machine has more than one (Linux only)."""
    if not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) < 2:
        return False
    try:
        os.sched_setaffinity(0, {cpu % (os.cpu_count() or 1)})
    except OSError:
        return False
    return True


# --- fresh processes ----------------------------------------------------------------------------


def child_env() -> dict[str, str]:
    """The environment for measured interpreters: bytecode caching on (as for a user whose
    packages were installed by pip), no resilient-llm settings from the shell."""
    env = {k: v for k, v in os.environ.items()
           if k != "PYTHONDONTWRITEBYTECODE" and not k.startswith("RESILIENT_LLM_")}
    return env


def run_fresh(code: str, *, env: dict[str, str] | None = None) -> dict[str, float]:
    """Run ``python -c code`` in a new interpreter; wall seconds, child CPU seconds, peak RSS.

    Uses ``os.wait4`` so CPU time and peak RSS are the child's own, not every child's so far.
    """
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env if env is not None else child_env(),
        cwd=str(ROOT),
    )
    assert proc.stderr is not None
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stderr.close()
    if proc.returncode != 0:
        raise RuntimeError(f"python -c {code!r} failed ({proc.returncode}): "
                           f"{stderr.decode(errors='replace')[-400:]}")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss_kib": usage.ru_maxrss}


def subprocess_json(code: str) -> Any:
    """Run ``code`` in a fresh interpreter and parse the JSON it prints."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=str(ROOT), timeout=60, check=False, env=child_env())
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-400:])
    return json.loads(out.stdout)


def importable(module: str) -> tuple[bool, str]:
    """Whether ``module`` imports in a fresh interpreter, and the error line if it does not."""
    out = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True,
                         text=True, cwd=str(ROOT), timeout=60, check=False, env=child_env())
    if out.returncode == 0:
        return True, ""
    lines = [line for line in out.stderr.strip().splitlines() if line.strip()]
    return False, lines[-1] if lines else f"exit {out.returncode}"


# --- the provider in its own process --------------------------------------------------------------


def serve_stdio(options: dict[str, Any], cpu: int | None) -> None:
    """Child process: run a FaultProvider on loopback; answer line commands on stdin.

    Prints the server URL as the first line, then one JSON line per command: ``log``,
    ``count``, ``reset``; ``stop`` (or end of input) stops the server.
    """
    if cpu is not None:
        pin_to(cpu)
    from resilient_llm.testing import FaultProvider

    provider = FaultProvider(**options)
    out = sys.stdout
    with provider.serve() as server:
        out.write(server.url + "\n")
        out.flush()
        for line in sys.stdin:
            command = line.strip()
            if command == "stop":
                break
            answer: Any = None
            if command == "reset":
                provider.reset()
                answer = True
            elif command == "count":
                answer = len(provider.requests)
            elif command == "log":
                answer = [
                    {
                        "status": r.status,
                        "fault": r.fault,
                        "model": r.model,
                        "started_at": r.started_at,
                        "ended_at": r.ended_at,
                    }
                    for r in provider.requests
                ]
            out.write(json.dumps(answer) + "\n")
            out.flush()


class ProviderProcess:
    """A ``FaultProvider`` served from a separate process, optionally pinned to one CPU.

    ``url`` is ``http://127.0.0.1:PORT``; ``log()`` returns the request log as dicts (the
    monotonic clock is system-wide on Linux, so its times compare with this process's);
    ``reset()`` clears the log, the limits' in-flight slots and any script.
    """

    def __init__(self, *, cpu: int | None = None, **options: Any) -> None:
        options.setdefault("log_limit", 100_000)
        code = (
            f"import json, sys; sys.path.insert(0, {str(ROOT)!r})\n"
            "from benchmarks._common import serve_stdio\n"
            "serve_stdio(json.loads(sys.argv[1]), None if sys.argv[2] == '-' else int(sys.argv[2]))"
        )
        self._proc = subprocess.Popen(
            [sys.executable, "-c", code, json.dumps(options), "-" if cpu is None else str(cpu)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=str(ROOT),
            env=child_env(),
        )
        assert self._proc.stdout is not None and self._proc.stdin is not None
        self._in, self._out = self._proc.stdin, self._proc.stdout
        line = self._out.readline().strip()
        if not line.startswith("http://"):
            self.close()
            raise RuntimeError(f"the provider process did not start: {line!r}")
        self.url: str = line

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    def _ask(self, command: str) -> Any:
        self._in.write(command + "\n")
        self._in.flush()
        line = self._out.readline()
        if not line:
            raise RuntimeError(f"the provider process ended before answering {command!r}")
        return json.loads(line)

    def reset(self) -> None:
        self._ask("reset")

    def log(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._ask("log")
        return result

    def count(self) -> int:
        result: int = self._ask("count")
        return result

    def close(self) -> None:
        proc = self._proc
        if proc.poll() is None:
            try:
                self._in.write("stop\n")
                self._in.flush()
                self._in.close()
            except (BrokenPipeError, OSError, ValueError):
                pass
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.terminate()  # only the process this object started
                proc.wait(5)
        self._out.close()

    def __enter__(self) -> ProviderProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def provider_process(*, pin: bool = True, **options: Any) -> Iterator[ProviderProcess]:
    """Start a provider process; with ``pin`` (and ≥ 2 CPUs) the provider gets CPU 1 and this
    process CPU 0, so client CPU is not shared with the server."""
    multi = (os.cpu_count() or 1) >= 2
    server_cpu = 1 if pin and multi else None
    original = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    if pin and multi:
        pin_to(0)
    try:
        with ProviderProcess(cpu=server_cpu, **options) as proc:
            yield proc
    finally:
        if original is not None and pin and multi:
            os.sched_setaffinity(0, original)


# --- output -------------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain side-by-side table (right-aligned numbers)."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        parts = [c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(row)]
        lines.append("  ".join(parts))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    return str(value)


def write_json(path: str | None, payload: dict[str, Any]) -> None:
    if not path:
        return
    payload = _clean({"machine": machine(), **payload})
    Path(path).write_text(json.dumps(payload, indent=2, default=str, allow_nan=False) + "\n")
    print(f"\nwrote {path}")


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf become null, tuples lists, keys strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value

