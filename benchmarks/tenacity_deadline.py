"""A tenacity-retried tool under an agent's deadline: tenacity alone vs the integration.

The issue's scenario, side by side in one run: under ``deadline(D)``, a tool that calls a
loopback endpoint answering 503 (optionally with ``Retry-After``) and is retried with

* tenacity alone: ``stop_after_attempt(5)``, ``wait_exponential(multiplier=1)``;
* the integration: ``stop_at_deadline() | stop_after_attempt(5)``, ``wait_backoff()``,
  ``**record_attempts(retry_if_transient())``.

Prints, per setting and endpoint, the wall time, the attempts the endpoint saw and the overshoot
past the deadline (median of ``--runs``). Every socket is on 127.0.0.1. tenacity alone sleeps
1 + 2 + 4 + 8 s, so a full run takes about a minute per run.

    python benchmarks/tenacity_deadline.py --deadline 3 --runs 1
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx2
from tenacity import RetryError, retry, stop_after_attempt, wait_exponential

from resilient_llm import deadline
from resilient_llm.integrations.tenacity import (
    record_attempts,
    retry_if_transient,
    stop_at_deadline,
    wait_backoff,
)


@contextmanager
def endpoint(headers: dict[str, str]) -> Iterator[tuple[str, list[float]]]:
    hits: list[float] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(time.monotonic())
            self.send_response(503)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", hits
    finally:
        server.shutdown()
        server.server_close()


def tool(http: httpx2.Client, url: str) -> Callable[[], Any]:
    """The user's tool as the issue has it: its own 10 s timeout, no deadline awareness."""

    def call() -> Any:
        response = http.get(url, timeout=10.0)
        response.raise_for_status()
        return response

    return call


def plain(http: httpx2.Client, url: str) -> Callable[[], Any]:
    return retry(stop=stop_after_attempt(5), wait=wait_exponential(multiplier=1))(
        tool(http, url))


def integrated(http: httpx2.Client, url: str) -> Callable[[], Any]:
    return retry(stop=stop_at_deadline() | stop_after_attempt(5), wait=wait_backoff(),
                 **record_attempts(retry_if_transient(), name="search"))(tool(http, url))


def once(build: Callable[[httpx2.Client, str], Callable[[], Any]], headers: dict[str, str],
         seconds: float) -> tuple[float, int]:
    with endpoint(headers) as (url, hits), httpx2.Client() as http:
        call = build(http, url)
        start = time.monotonic()
        try:
            with deadline(seconds):
                call()
        except (RetryError, httpx2.HTTPError):
            pass
        return time.monotonic() - start, len(hits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deadline", type=float, default=3.0)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    print(f"deadline({args.deadline:g}); median of {args.runs} run(s)")
    print(f"{'endpoint':<26}{'retries':<14}{'wall s':>8}{'attempts':>10}{'overshoot s':>13}")
    for label, headers in (("503", {}), ("503, Retry-After: 10", {"Retry-After": "10"})):
        for name, build in (("tenacity", plain), ("integration", integrated)):
            runs = [once(build, headers, args.deadline) for _ in range(args.runs)]
            wall = statistics.median(r[0] for r in runs)
            attempts = statistics.median(r[1] for r in runs)
            print(f"{label:<26}{name:<14}{wall:>8.2f}{attempts:>10g}"
                  f"{max(0.0, wall - args.deadline):>13.2f}")


if __name__ == "__main__":
    main()
