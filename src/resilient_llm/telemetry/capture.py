"""Replayable capture: one JSON line per logical call in ``RESILIENT_LLM_CAPTURE_FILE``.

The capture sink writes each call's :class:`~.summary.CallSummary` with the last attempt's
exact request and answer (from the tap), so ``python -m resilient_llm replay`` can re-send the
calls to another model. Credentials never reach a line: credential headers are dropped, and any
credential value seen in them is masked wherever it appears.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._instances import Instances
from .redact import redact_text, safe_headers
from .tap import Exchange

if TYPE_CHECKING:
    from .summary import CallSummary

__all__ = ["SCHEMA", "Sink", "capture_line", "exchange_fields", "sink_for", "utc_now"]

log = logging.getLogger("resilient_llm.capture")

#: The ``schema`` of every line (``replay`` reads lines whose schema starts with
#: ``resilient_llm.capture/``).
SCHEMA = "resilient_llm.capture/1"


def _body_fields(body: bytes | None, *, truncated: bool = False) -> dict[str, Any]:
    """A body as JSON when it parses, else as (masked) text."""
    if body is None:
        return {}
    text = body.decode("utf-8", errors="replace")
    fields: dict[str, Any] = {}
    try:
        fields["body"] = json.loads(redact_text(text, patterns=False))
    except ValueError:
        fields["body_text"] = redact_text(text, patterns=False)
    if truncated:
        fields["truncated"] = True
    return fields


_Fields = dict[str, Any] | None


def exchange_fields(exchange: Exchange | None) -> tuple[_Fields, _Fields, _Fields]:
    """(request, response, error) of ``exchange`` as JSON-ready dicts, credentials removed."""
    if exchange is None:
        return None, None, None
    req = exchange.request
    request: dict[str, Any] = {
        "method": req.method,
        "url": str(req.url),
        "headers": safe_headers(req.headers),
        **_body_fields(exchange.request_body()),
    }
    response: dict[str, Any] | None = None
    if exchange.response is not None:
        resp = exchange.response
        response = {"status": resp.status_code, "headers": safe_headers(resp.headers)}
        body = exchange.response_body()
        if exchange.is_stream:
            response["stream"] = redact_text(
                (body or b"").decode("utf-8", errors="replace"), patterns=False
            )
            if exchange.stream_truncated:
                response["truncated"] = True
        else:
            response.update(_body_fields(body))
    error: dict[str, Any] | None = None
    if exchange.error is not None:
        error = {"type": type(exchange.error).__name__,
                 "message": redact_text(str(exchange.error))[:2000]}
    return request, response, error


class Sink:
    """Appends JSON lines to one file; thread-safe; a failing disk never fails a call."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(os.path.expanduser(path))
        self._lock = threading.Lock()
        self._failed = False

    def write(self, line: Mapping[str, Any]) -> None:
        """Append ``line`` (one JSON object) and flush it."""
        text = json.dumps(line, ensure_ascii=False, separators=(",", ":"), default=str) + "\n"
        with self._lock:
            try:
                with open(self.path, "a", encoding="utf-8") as handle:
                    handle.write(text)
            except OSError as exc:
                if not self._failed:
                    self._failed = True
                    log.warning("resilient_llm capture: cannot write %s (%s); captured calls "
                                "are being dropped", self.path, exc.strerror or exc)
                return
        self._failed = False


_sinks: Instances[str, Sink] = Instances(Sink)


def sink_for(path: str) -> Sink:
    """The one sink of ``path`` in this process (so concurrent clients share one lock)."""
    return _sinks.get(os.path.abspath(os.path.expanduser(path)))


def utc_now() -> str:
    """The current time, ISO 8601 in UTC with microseconds."""
    return dt.datetime.now(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def capture_line(summary: CallSummary) -> dict[str, Any]:
    """The capture line of one call (schema ``resilient_llm.capture/1``)."""
    request, response, failure = exchange_fields(summary.exchange)
    usage = summary.usage
    return {
        "schema": SCHEMA,
        "time": utc_now(),
        "provider": summary.provider,
        "call": {
            "requested": summary.requested,
            "served_by": summary.served_by,
            "degraded": summary.degraded,
            "reason": summary.reason,
            "error": summary.error,
            "elapsed": summary.elapsed,
            "deadline_budget": summary.deadline_budget,
            "attributes": dict(summary.attributes),
            "attempts": [
                {"number": a.number, "target": a.target, "failure": a.failure,
                 "status": a.status, "duration": a.duration, "waited_before": a.waited_before}
                for a in summary.attempts
            ],
            "usage": None if usage is None else {
                "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
                "cache_read_tokens": usage.cache_read_tokens,
                "cache_write_tokens": usage.cache_write_tokens,
                "reasoning_tokens": usage.reasoning_tokens,
            },
            "cost": None if summary.cost is None else summary.cost.total,
        },
        "request": request,
        "response": response,
        "transport_error": failure,
    }
