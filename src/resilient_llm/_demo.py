"""``python -m resilient_llm demo``: the official client and the resilient one, side by side.

A local fault-injecting provider plays a brownout (slow answers, 429 bursts with Retry-After,
503s, hung requests, cut streams) on the primary model; a cheaper fallback model stays
healthy. The same workload runs through ``openai.OpenAI(timeout=D, max_retries=2)`` (what
users write when they mean "give up after D seconds") and through
``resilient_llm.openai.OpenAI`` with ``RESILIENT_LLM_DEADLINE=D`` and one fallback. The table
shows what each user would have seen. No API key, no network: everything is on 127.0.0.1.
"""

from __future__ import annotations

import logging
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TextIO

PRIMARY = "gpt-4.1"
FALLBACK = "gpt-4.1-mini"
MESSAGES = [{"role": "user", "content": "Summarise the incident report in one line."}]


@dataclass(frozen=True, slots=True)
class CallResult:
    ok: bool
    seconds: float
    error: str | None
    degraded: bool


@dataclass(frozen=True, slots=True)
class Summary:
    name: str
    calls: int
    succeeded: int
    p50: float
    p99: float
    worst_overshoot: float
    attempts_per_call: float
    degraded: int
    errors: dict[str, int]


def brownout(seed: int, count: int) -> list[Any]:
    """The primary model's misbehaviour, one fault per request, the same for both clients."""
    from .testing import Fault

    rng = random.Random(seed)
    faults: list[Any] = []
    for _ in range(count):
        roll = rng.random()
        if roll < 0.50:
            faults.append(Fault.ok(delay=0.05))
        elif roll < 0.64:
            faults.append(Fault.status(429, headers={"retry-after": "1"}))
        elif roll < 0.76:
            faults.append(Fault.status(503))
        elif roll < 0.86:
            faults.append(Fault.ok(delay=6.0))  # slower than anyone's deadline
        elif roll < 0.92:
            faults.append(Fault.stream_cut(after_events=3))
        else:
            faults.append(Fault.hang())
    return faults


def progress_line(name: str, done: int, total: int, elapsed: float) -> str:
    """One progress line: which client, calls done / total, elapsed seconds."""
    width = 20
    filled = width * done // total if total else width
    bar = "#" * filled + "." * (width - filled)
    return f"  {name:<30} [{bar}] {done:>{len(str(total))}}/{total} calls  {elapsed:5.1f} s"


def quarter_marks(done: int, total: int, shown: int) -> int:
    """Calls done at which a non-terminal prints a progress line: each quarter, once."""
    marks = sorted({max(1, round(total * q / 4)) for q in (1, 2, 3, 4)})
    due = [m for m in marks if shown < m <= done]
    return due[-1] if due else shown


class Progress:
    """Shows a client's progress while its calls run.

    On a terminal one line is redrawn in place five times a second, so the elapsed time moves
    even while every call is waiting on a hung request; elsewhere (a log, CI) a plain line is
    written at each quarter of the calls. Thread-safe: the demo's worker threads call ``step``.
    """

    def __init__(self, name: str, total: int, *, stream: TextIO | None = None,
                 tty: bool | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._name, self._total = name, total
        self._stream = stream if stream is not None else sys.stderr
        self._tty = self._stream.isatty() if tty is None else tty
        self._clock = clock
        self._started = clock()
        self._done = 0
        self._shown = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def __enter__(self) -> Progress:
        if self._tty:
            self._ticker = threading.Thread(target=self._tick, name="demo-progress", daemon=True)
            self._ticker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        with self._lock:
            if self._tty:
                self._draw(end="\n")
            elif self._shown < self._done:
                self._print_line()

    def step(self) -> None:
        """One call finished."""
        with self._lock:
            self._done += 1
            if not self._tty:
                mark = quarter_marks(self._done, self._total, self._shown)
                if mark != self._shown:
                    self._print_line()

    def _print_line(self) -> None:
        self._shown = self._done
        self._stream.write(self._line() + "\n")
        self._stream.flush()

    def _line(self) -> str:
        return progress_line(self._name, self._done, self._total, self._clock() - self._started)

    def _draw(self, end: str = "") -> None:
        self._stream.write("\r" + self._line() + "\x1b[K" + end)
        self._stream.flush()

    def _tick(self) -> None:
        while not self._stop.wait(0.2):
            with self._lock:
                self._draw()


def _run(
    name: str,
    make_call: Callable[[int], Any],
    *,
    calls: int,
    workers: int,
    deadline: float,
    provider: Any,
    progress: Progress | None = None,
) -> Summary:
    requests_before = len(provider.requests)

    def one(index: int) -> CallResult:
        start = time.monotonic()
        try:
            degraded = make_call(index)
        except Exception as exc:
            result = CallResult(False, time.monotonic() - start, type(exc).__name__, False)
        else:
            result = CallResult(True, time.monotonic() - start, None, bool(degraded))
        if progress is not None:
            progress.step()
        return result

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(one, range(calls)))
    latencies = sorted(r.seconds for r in results)
    errors: dict[str, int] = {}
    for r in results:
        if r.error:
            errors[r.error] = errors.get(r.error, 0) + 1
    return Summary(
        name=name,
        calls=calls,
        succeeded=sum(r.ok for r in results),
        p50=statistics.median(latencies),
        p99=latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))],
        worst_overshoot=max(0.0, latencies[-1] - deadline),
        attempts_per_call=(len(provider.requests) - requests_before) / calls,
        degraded=sum(r.degraded for r in results),
        errors=errors,
    )


def _workload(client: Any, degraded: Callable[[Any], bool]) -> Callable[[int], bool]:
    """The demo's calls: every fourth one streams; ``degraded`` reads the answer's outcome."""

    def call(index: int) -> bool:
        if index % 4 == 3:
            stream = client.chat.completions.create(model=PRIMARY, messages=MESSAGES, stream=True)
            for _ in stream:
                pass
            return degraded(stream)
        return degraded(client.chat.completions.create(model=PRIMARY, messages=MESSAGES))

    return call


def _official_call(client: Any) -> Callable[[int], bool]:
    return _workload(client, lambda _answer: False)  # the official SDK never degrades


def _resilient_call(client: Any) -> Callable[[int], bool]:
    from .events.outcome import outcome

    return _workload(client, lambda answer: outcome(answer).degraded)


def _table(rows: list[Summary], deadline: float) -> str:
    header = ("client", "success", "p50 s", "p99 s", f"worst overshoot of {deadline:g} s",
              "attempts/call", "served by fallback")
    lines = [header]
    lines.extend(
        (
            row.name,
            f"{row.succeeded}/{row.calls} ({100 * row.succeeded / row.calls:.0f} %)",
            f"{row.p50:.2f}",
            f"{row.p99:.2f}",
            f"{row.worst_overshoot:.2f} s",
            f"{row.attempts_per_call:.2f}",
            str(row.degraded),
        )
        for row in rows
    )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for n, line in enumerate(lines):
        out.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)))
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def run_demo(*, calls: int = 40, deadline: float = 3.0, workers: int = 10, seed: int = 7,
             progress_stream: TextIO | None = None) -> int:
    """Run the side-by-side demo and print the table; returns a process exit code.

    Progress goes to ``progress_stream`` (standard error by default), the table to standard
    output.
    """
    from ._errors import ConfigError
    from ._policy import Policy

    if calls < 1 or not deadline > 0:
        print("demo: --calls must be ≥ 1 and --deadline > 0", file=sys.stderr)
        return 2
    try:
        Policy(deadline=deadline)  # the resilient client's deadline: the policy's range
    except ConfigError as exc:
        print(f"demo: --deadline {deadline:g}: {exc.accepted}", file=sys.stderr)
        return 2
    try:
        import openai

        from .openai import OpenAI as ResilientOpenAI
    except ImportError as exc:
        print("resilient-llm demo: the demo runs the official OpenAI client next to the drop-in, "
              f"so it needs the openai package ({exc}).\nInstall it with:\n"
              "    python -m pip install 'resilient-llm[openai]'", file=sys.stderr)
        return 2

    # The table reports what the per-call WARNING lines would; without a handler configured,
    # Python would print each of them over the progress line.
    quiet = logging.NullHandler()
    logging.getLogger("resilient_llm").addHandler(quiet)
    try:
        return _side_by_side(calls=calls, deadline=deadline, workers=workers, seed=seed,
                             progress_stream=progress_stream, official_class=openai.OpenAI,
                             resilient_class=ResilientOpenAI)
    finally:
        logging.getLogger("resilient_llm").removeHandler(quiet)


def _side_by_side(*, calls: int, deadline: float, workers: int, seed: int,
                  progress_stream: TextIO | None, official_class: Any,
                  resilient_class: Any) -> int:
    from ._policy import Policy
    from .testing import Fault, FaultProvider

    provider = FaultProvider()
    print(f"resilient-llm demo: {calls} calls per client, {workers} at a time, a "
          f"{deadline:g} s deadline, against a local provider in a brownout\n"
          "(primary model: 50 % fine, then 429 bursts, 503s, 6 s answers, cut streams and "
          "hung requests;\n fallback model: healthy). Nothing leaves 127.0.0.1.\n", flush=True)
    rows = []
    with provider.serve() as server:
        provider.set_default(Fault.ok(delay=0.05), model=FALLBACK)
        provider.script(*brownout(seed, calls * 6), model=PRIMARY)
        name = f"openai.OpenAI(timeout={deadline:g})"
        started = time.monotonic()
        with official_class(base_url=server.openai_base_url, api_key="sk-demo",
                            timeout=deadline, max_retries=2) as official, \
                Progress(name, calls, stream=progress_stream) as progress:
            rows.append(_run(name, _official_call(official), calls=calls, workers=workers,
                             deadline=deadline, provider=provider, progress=progress))
        print(f"  official client done in {time.monotonic() - started:.1f} s", flush=True)

        provider.reset()
        provider.set_default(Fault.ok(delay=0.05), model=FALLBACK)
        provider.script(*brownout(seed, calls * 6), model=PRIMARY)
        policy = Policy(deadline=deadline, fallbacks={PRIMARY: [FALLBACK]})
        name = "resilient_llm.openai.OpenAI"
        started = time.monotonic()
        with resilient_class(base_url=server.openai_base_url, api_key="sk-demo",
                             policy=policy) as resilient, \
                Progress(name, calls, stream=progress_stream) as progress:
            rows.append(_run(name, _resilient_call(resilient), calls=calls, workers=workers,
                             deadline=deadline, provider=provider, progress=progress))
        print(f"  resilient client done in {time.monotonic() - started:.1f} s\n", flush=True)
    print(_table(rows, deadline))
    for row in rows:
        if row.errors:
            shown = ", ".join(f"{name} ×{count}" for name, count in sorted(row.errors.items()))
            print(f"\n{row.name} errors: {shown}")
    print("\nThe official client's timeout applies per attempt, so retries stack past the "
          "deadline;\nresilient-llm holds one deadline across attempts, backoff and streams, "
          "and degrades\nto the fallback model instead of failing. outcome(response) tells "
          "which model served.")
    return 0
