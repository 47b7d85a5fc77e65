"""``python -m resilient_llm replay FILE --model NAME``: re-send captured calls to another model.

Reads the JSON lines written by ``RESILIENT_LLM_CAPTURE_FILE``, sends each recorded request
again (as it was last sent, with ``model`` replaced) through a resilient client, and writes a
side-by-side file: one line per captured call, ``{"index", "original", "replay"}``, so a day of
traffic can be compared on answers, latency, tokens and cost before switching models.

Credentials are not in the capture file: the replay uses ``--api-key`` or the provider's usual
environment variable (``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``). Headers tied to the original
call (idempotency key, SDK retry counters, content length) are not replayed, and replays are
never captured again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx2

from .pricing import load_prices, token_usage

__all__ = ["ReplaySummary", "read_capture", "replay"]

_DROPPED_HEADERS = frozenset({"idempotency-key", "content-length", "host", "transfer-encoding",
                              "connection", "accept-encoding"})
_KEY_ENV = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}


@dataclass(slots=True)
class ReplaySummary:
    """What a replay run did."""

    out: str
    replayed: int = 0
    skipped: int = 0
    failed: int = 0
    notes: list[str] = field(default_factory=list)


def read_capture(path: str) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    """Each line of a capture file as (line number, record, why it cannot be replayed)."""
    with open(path, encoding="utf-8") as handle:
        for number, text in enumerate(handle, 1):
            if not text.strip():
                continue
            try:
                line = json.loads(text)
            except ValueError:
                yield number, None, "not a JSON line"
                continue
            if not isinstance(line, dict) or not str(line.get("schema", "")).startswith(
                    "resilient_llm.capture/"):
                yield number, None, "not a resilient_llm capture line"
                continue
            request = line.get("request")
            if not isinstance(request, dict) or not isinstance(request.get("body"), dict):
                yield number, line, "no replayable JSON request body was recorded"
                continue
            yield number, line, None


def _provider(line: Mapping[str, Any]) -> str:
    provider = line.get("provider")
    if provider in _KEY_ENV:
        return str(provider)
    url = str((line.get("request") or {}).get("url", ""))
    return "anthropic" if url.endswith("/messages") else "openai"


def _texts(blocks: Any) -> list[str]:
    if not isinstance(blocks, list):
        return []
    return [b["text"] for b in blocks if isinstance(b, Mapping) and isinstance(b.get("text"), str)]


def _output_text(body: Any) -> str | None:
    """The answer's text from a chat completion, a Responses object or an Anthropic message."""
    if not isinstance(body, Mapping):
        return None
    parts: list[str] = []
    for choice in body.get("choices") or ():
        message = choice.get("message") if isinstance(choice, Mapping) else None
        if isinstance(message, Mapping) and isinstance(message.get("content"), str):
            parts.append(message["content"])
    parts.extend(_texts(body.get("content")))  # Anthropic
    for item in body.get("output") or ():  # Responses API
        if isinstance(item, Mapping):
            parts.extend(_texts(item.get("content")))
    return "".join(parts) if parts else None


def _stream_facts(provider: str, text: str) -> tuple[str, Any]:
    from ..providers import StreamScanner, wire_for

    scanner = StreamScanner(wire_for(provider))
    scanner.feed(text.encode("utf-8"))
    scanner.finish()
    return scanner.text, scanner.usage


def _usage_dict(provider: str, usage: Any) -> dict[str, int] | None:
    tokens = token_usage(usage, provider)
    if tokens is None:
        return None
    return {"input_tokens": tokens.input_tokens, "output_tokens": tokens.output_tokens,
            "cache_read_tokens": tokens.cache_read_tokens,
            "cache_write_tokens": tokens.cache_write_tokens}


def _original(line: Mapping[str, Any], provider: str) -> dict[str, Any]:
    call = line.get("call") or {}
    request = line.get("request") or {}
    response = line.get("response") or {}
    body = request.get("body") or {}
    text = None
    if isinstance(response.get("stream"), str):
        text, _ = _stream_facts(provider, response["stream"])
    elif "body" in response:
        text = _output_text(response["body"])
    return {
        "time": line.get("time"),
        "model": body.get("model"),
        "requested": call.get("requested"),
        "served_by": call.get("served_by"),
        "status": response.get("status"),
        "error": call.get("error"),
        "elapsed": call.get("elapsed"),
        "attempts": len(call.get("attempts") or ()),
        "usage": call.get("usage"),
        "cost": call.get("cost"),
        "text": text,
    }


class _Replayer:
    """One resilient httpx2 client per provider, and the send of one recorded request."""

    def __init__(self, *, model: str, base_url: str | None, api_key: str | None,
                 transport: httpx2.BaseTransport | None, policy: Any) -> None:
        self.model = model
        self.base_url = base_url.rstrip("/") if base_url else None
        self.api_key = api_key
        self.transport = transport
        self.policy = policy
        self.prices = load_prices(getattr(policy, "prices", None),
                                  getattr(policy, "prices_file", None))
        self.clients: dict[str, httpx2.Client] = {}

    def client(self, provider: str) -> httpx2.Client:
        client = self.clients.get(provider)
        if client is None:
            from ..transport.drivers import ResilientTransport
            from .listener import attach

            inner = self.transport if self.transport is not None else httpx2.HTTPTransport()
            tapped = attach(inner, self.policy, asynchronous=False)  # as a drop-in client would
            client = httpx2.Client(transport=ResilientTransport(
                tapped, policy=self.policy, provider=provider), timeout=None)
            self.clients[provider] = client
        return client

    def request(self, line: Mapping[str, Any], provider: str) -> httpx2.Request:
        recorded = line["request"]
        url = httpx2.URL(recorded["url"])
        if self.base_url is not None:  # another origin, the recorded path
            origin = httpx2.URL(self.base_url)
            url = url.copy_with(scheme=origin.scheme, host=origin.host, port=origin.port)
        headers = {name: value for name, value in (recorded.get("headers") or {}).items()
                   if name.lower() not in _DROPPED_HEADERS
                   and not name.lower().startswith("x-stainless-")}
        key = self.api_key or os.environ.get(_KEY_ENV[provider])
        if key:
            if provider == "anthropic":
                headers["x-api-key"] = key
            else:
                headers["authorization"] = f"Bearer {key}"
        body = dict(recorded["body"])
        body["model"] = self.model
        return httpx2.Request(recorded.get("method", "POST"), url, headers=headers,
                              content=json.dumps(body, ensure_ascii=False).encode("utf-8"))

    def send(self, line: Mapping[str, Any], provider: str) -> dict[str, Any]:
        from ..dropin.base import CallScope

        request = self.request(line, provider)
        stream = bool(line["request"]["body"].get("stream"))
        scope = CallScope(self.policy, self.model, None)
        record = scope.call.record
        result: dict[str, Any] = {"model": self.model, "status": None, "error": None,
                                  "text": None, "usage": None}
        raw_usage: Any = None
        try:
            response = self.client(provider).send(request, stream=stream)
            try:
                body = response.read()
            finally:
                response.close()
            result["status"] = response.status_code
            if stream and response.status_code < 400:
                result["text"], raw_usage = _stream_facts(
                    provider, body.decode("utf-8", errors="replace"))
            else:
                try:
                    parsed = json.loads(body) if body else None
                except ValueError:
                    parsed = None
                if response.status_code < 400:
                    result["text"] = _output_text(parsed)
                    raw_usage = (parsed or {}).get("usage")
                else:
                    error = (parsed or {}).get("error") if isinstance(parsed, dict) else None
                    kind = error.get("type") if isinstance(error, dict) else None
                    result["error"] = f"HTTP {response.status_code}" + (f" {kind}" if kind else "")
        except Exception as exc:  # every failure is a result of the comparison, not a crash
            result["error"] = f"{type(exc).__name__}: {exc}"[:500]
        finally:
            scope.close()
        outcome = record.outcome()
        result.update(served_by=outcome.served_by, elapsed=outcome.elapsed,
                      attempts=len(outcome.attempts), degraded=outcome.degraded)
        result["usage"] = _usage_dict(provider, raw_usage)
        cost = self.prices.cost(outcome.served_by, token_usage(raw_usage, provider)) \
            if self.prices is not None and result["error"] is None else None
        result["cost"] = None if cost is None else cost.total
        return result

    def close(self) -> None:
        for client in self.clients.values():
            client.close()


def replay(
    path: str,
    *,
    model: str,
    out: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    limit: int | None = None,
    transport: httpx2.BaseTransport | None = None,
    policy: Any = None,
) -> ReplaySummary:
    """Replay every call captured in ``path`` against ``model``; write the pairs to ``out``.

    ``out`` defaults to ``PATH.replay-MODEL.jsonl``. ``base_url`` replaces the recorded
    origin (scheme, host, port; the recorded path is kept); ``transport`` (tests) replaces
    the network. ``policy`` defaults to ``Policy.from_env()`` with capture off.
    """
    from .._policy import Policy

    if not model.strip():
        raise ValueError("replay needs a model name (--model)")
    if policy is None:
        policy = Policy.from_env(capture_file=None)
    elif getattr(policy, "capture_file", None):
        policy = policy.replace(capture_file=None)
    safe_model = "".join(ch if ch.isalnum() or ch in "-._" else "_" for ch in model)
    out = out or f"{path}.replay-{safe_model}.jsonl"
    summary = ReplaySummary(out=out)
    replayer = _Replayer(model=model, base_url=base_url, api_key=api_key,
                         transport=transport, policy=policy)
    try:
        with open(out, "w", encoding="utf-8") as sink:
            for number, line, problem in read_capture(path):
                if limit is not None and summary.replayed >= limit:
                    break
                if line is None or problem is not None:
                    summary.skipped += 1
                    summary.notes.append(f"line {number}: {problem}")
                    continue
                provider = _provider(line)
                replayed = replayer.send(line, provider)
                if replayed["error"] is not None:
                    summary.failed += 1
                pair = {"index": summary.replayed, "line": number, "provider": provider,
                        "original": _original(line, provider), "replay": replayed}
                sink.write(json.dumps(pair, ensure_ascii=False, default=str) + "\n")
                summary.replayed += 1
    finally:
        replayer.close()
    return summary
