"""Your own tenacity-retried tools under the agent's deadline, with their attempts recorded.

An agent step has a 1.5 s budget. Its search tool calls an HTTP API that answers 503 and is
retried with tenacity. With tenacity's usual settings (``stop_after_attempt(5)``,
``wait_exponential()``) the tool would run for about 15 s; with the resilient-llm strategies it
stops inside the step's deadline, a 400 is not retried, and a ``Retry-After: 10`` the step
cannot honour ends the tool at once. Part two is the same loop in plain code, with
``remaining()``.

The API is a tiny HTTP server on 127.0.0.1: no network, no API key. Install and run::

    python -m pip install -e '.[tenacity]'
    python examples/tenacity_tools.py
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx2
from tenacity import RetryError, retry, stop_after_attempt

from resilient_llm import deadline, remaining
from resilient_llm.integrations.tenacity import (
    last_outcome,
    record_attempts,
    retry_if_transient,
    stop_at_deadline,
    wait_backoff,
)


@contextmanager
def search_api(status: int, headers: dict[str, str] | None = None) -> Iterator[str]:
    """A loopback HTTP API that answers every request with ``status`` (and ``headers``)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b'{"hits": ["Paris"]}' if status == 200 else b'{"error": "busy"}'
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/search"
    finally:
        server.shutdown()
        server.server_close()


@retry(
    stop=stop_at_deadline() | stop_after_attempt(5),  # whichever comes first
    wait=wait_backoff(),  # jittered, Retry-After honoured, clipped to the time left
    **record_attempts(retry_if_transient(), name="search"),  # 429/5xx/timeouts only
)
def search(http: httpx2.Client, url: str, query: str) -> dict[str, Any]:
    # Each attempt may take at most what is left of the deadline.
    response = http.get(url, params={"q": query}, timeout=remaining())
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def show(label: str, started: float) -> None:
    facts = last_outcome()  # the tool's own call: every attempt, every wait
    attempts = ", ".join(
        f"#{a.number} {a.failure or 'ok'}"
        + (f" after {a.waited_before:.2f} s" if a.waited_before else "")
        for a in facts.attempts
    )
    print(f"{label}: {time.monotonic() - started:.2f} s, {facts.reason or 'served'}; {attempts}")


def get_with_retries(http: httpx2.Client, url: str, *, attempts: int = 4) -> httpx2.Response:
    """The same rules in plain code: every wait and every attempt fits in ``remaining()``."""
    for attempt in range(1, attempts + 1):
        try:
            response = http.get(url, timeout=remaining())  # None: no deadline in force
        except httpx2.TransportError:
            response = None
        if response is not None and response.status_code not in (429, 500, 502, 503, 504, 529):
            return response
        try:  # the server's hint (seconds; an HTTP date counts as no hint here)
            hint = float(response.headers.get("retry-after", 0)) if response is not None else 0.0
        except ValueError:
            hint = 0.0
        delay = max(random.uniform(0, min(8.0, 0.25 * 2 ** (attempt - 1))), hint)
        left = remaining()
        if attempt == attempts or (left is not None and delay + 0.05 > left):
            break  # the next attempt cannot start in time: stop now, not at the deadline
        time.sleep(delay)
    if response is None:
        raise TimeoutError(f"{url}: no answer after {attempt} attempts")
    response.raise_for_status()
    return response


def main() -> None:
    with httpx2.Client() as http:
        tools(http)


def tools(http: httpx2.Client) -> None:
    with search_api(503) as url:
        started = time.monotonic()
        try:
            with deadline(1.5):
                search(http, url, "capital of France")
        except RetryError:
            show("503 under deadline(1.5)", started)

    with search_api(400) as url:
        started = time.monotonic()
        try:
            with deadline(1.5):
                search(http, url, "")
        except httpx2.HTTPStatusError as exc:
            show(f"400 ({exc.response.status_code}, not retried)", started)

    with search_api(503, {"Retry-After": "10"}) as url:
        started = time.monotonic()
        try:
            with deadline(1.5):
                search(http, url, "capital of France")
        except RetryError:
            show("Retry-After: 10 under deadline(1.5)", started)

    with search_api(200) as url, deadline(1.5):
        started = time.monotonic()
        print("200:", search(http, url, "capital of France"))
        show("200", started)

    with search_api(503) as url:
        started = time.monotonic()
        try:
            with deadline(1.5):
                get_with_retries(http, url)
        except httpx2.HTTPStatusError as exc:
            elapsed = time.monotonic() - started
            print(f"plain code, 503 under deadline(1.5): {exc.response.status_code} "
                  f"after {elapsed:.2f} s")


if __name__ == "__main__":
    main()
