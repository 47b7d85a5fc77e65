"""Wire formats of the fault provider: bodies, SSE events and headers as the real APIs send them.

Plain ``json`` and byte concatenation only: this runs once per request in benchmarks.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import struct
import time
from dataclasses import dataclass
from typing import Any

from ._faults import Status, ToolCall, Usage

__all__ = [
    "DEFAULT_TEXT",
    "EventScript",
    "Exchange",
    "error_body",
    "error_event",
    "go_duration",
    "json_body",
    "malformed_event",
    "prefill_of",
    "rfc3339_after",
    "sse_script",
]

DEFAULT_TEXT = "Hello from the fault provider."

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_WORDS = re.compile(r"\s*\S+\s*|\s+")


@dataclass(slots=True)
class Exchange:
    """Per-request facts the wire builders need (parsed once by the provider)."""

    api: str  # "chat" | "responses" | "embeddings" | "messages" | "unknown"
    flavor: str  # "openai" | "anthropic"
    model: str
    index: int
    stream: bool
    include_usage: bool
    body_size: int
    body: Any
    prefill: str | None = None  # set by the provider: the assistant text to continue from

    @property
    def request_id(self) -> str:
        return f"req_fault{self.index:012d}"


@dataclass(slots=True)
class EventScript:
    """A full SSE stream as separate events, with the positions faults need."""

    events: list[bytes]
    first_content: int  # index of the first content delta (or where it would be)
    terminal: int  # number of trailing terminator events


def prefill_of(x: Exchange) -> str | None:
    """The text of the final assistant turn of a chat or Messages request, else ``None``."""
    if x.api not in ("chat", "messages") or not isinstance(x.body, dict):
        return None
    messages = x.body.get("messages")
    if not isinstance(messages, list) or not messages:
        return None
    last = messages[-1]
    if not isinstance(last, dict) or last.get("role") != "assistant":
        return None
    content = last.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return None


def split_text(text: str) -> list[str]:
    """Word-sized deltas, so a stream has several content events like a real one."""
    return _WORDS.findall(text)


def split_arguments(arguments: str) -> list[str]:
    """A tool call's arguments in pieces of eight characters (one content event each)."""
    return [arguments[i:i + 8] for i in range(0, len(arguments), 8)] or [""]


def _tool_id(x: Exchange, prefix: str, i: int) -> str:
    return f"{prefix}_fault{x.index}_{i}"


def _usage(x: Exchange, usage: Usage | None, pieces: list[str]) -> Usage:
    if usage is not None:
        return usage
    return Usage(input_tokens=max(1, x.body_size // 4), output_tokens=max(1, len(pieces)))


def _sse(data: object, event: str | None = None) -> bytes:
    payload = _dumps(data).encode()
    if event is None:
        return b"data: " + payload + b"\n\n"
    return b"event: " + event.encode() + b"\ndata: " + payload + b"\n\n"


# ---------------------------------------------------------------- OpenAI chat completions


def _chat_usage(u: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.input_tokens + u.output_tokens,
        "prompt_tokens_details": {
            "cached_tokens": u.cache_read_tokens,
            "cache_write_tokens": u.cache_creation_tokens,
            "audio_tokens": 0,
        },
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _chat_json(x: Exchange, text: str, usage: Usage | None,
               tools: tuple[ToolCall, ...] = ()) -> dict[str, Any]:
    u = _usage(x, usage, split_text(text))
    message: dict[str, Any] = {"role": "assistant", "content": text or None, "refusal": None,
                               "annotations": []}
    if tools:
        message["tool_calls"] = [
            {"id": _tool_id(x, "call", i), "type": "function",
             "function": {"name": t.name, "arguments": t.arguments}}
            for i, t in enumerate(tools)]
    return {
        "id": f"chatcmpl-fault{x.index}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": x.model,
        "choices": [
            {
                "index": 0,
                "message": message if tools else {**message, "content": text},
                "logprobs": None,
                "finish_reason": "tool_calls" if tools else "stop",
            }
        ],
        "usage": _chat_usage(u),
        "service_tier": "default",
        "system_fingerprint": "fp_fault",
    }


def _chat_script(x: Exchange, text: str, usage: Usage | None,
                 tools: tuple[ToolCall, ...] = ()) -> EventScript:
    pieces = split_text(text)
    calls = [split_arguments(t.arguments) for t in tools]
    created = int(time.time())
    base = {
        "id": f"chatcmpl-fault{x.index}",
        "object": "chat.completion.chunk",
        "created": created,
        "model": x.model,
        "service_tier": "default",
        "system_fingerprint": "fp_fault",
    }
    if x.include_usage:
        base["usage"] = None

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return _sse({**base, "choices": [choice]})

    events = [chunk({"role": "assistant", "content": "", "refusal": None})]
    events.extend(chunk({"content": piece}) for piece in pieces)
    for i, (tool, args) in enumerate(zip(tools, calls, strict=True)):
        function = {"name": tool.name, "arguments": ""}
        events.append(chunk({"tool_calls": [{"index": i, "id": _tool_id(x, "call", i),
                                             "type": "function", "function": function}]}))
        events.extend(chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]})
                      for piece in args)
    events.append(chunk({}, "tool_calls" if tools else "stop"))
    if x.include_usage:
        counted = pieces + [piece for args in calls for piece in args]
        events.append(_sse({**base, "choices": [],
                            "usage": _chat_usage(_usage(x, usage, counted))}))
    events.append(b"data: [DONE]\n\n")
    return EventScript(events, first_content=1, terminal=1)


# ---------------------------------------------------------------- OpenAI responses


def _responses_usage(u: Usage) -> dict[str, Any]:
    return {
        "input_tokens": u.input_tokens,
        "input_tokens_details": {
            "cached_tokens": u.cache_read_tokens,
            "cache_write_tokens": u.cache_creation_tokens,
        },
        "output_tokens": u.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": u.input_tokens + u.output_tokens,
    }


def _response_object(
    x: Exchange, *, status: str, output: list[Any], usage: Usage | None, created: int
) -> dict[str, Any]:
    body = x.body if isinstance(x.body, dict) else {}
    return {
        "id": f"resp_fault{x.index}",
        "object": "response",
        "created_at": created,
        "status": status,
        "completed_at": created if status == "completed" else None,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": x.model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": None if usage is None else _responses_usage(usage),
        "metadata": {},
    }


def _output_message(x: Exchange, text: str, status: str) -> dict[str, Any]:
    content = [] if status == "in_progress" else [_output_text(text)]
    return {
        "id": f"msg_fault{x.index}",
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": content,
    }


def _output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _responses_json(x: Exchange, text: str, usage: Usage | None) -> dict[str, Any]:
    u = _usage(x, usage, split_text(text))
    return _response_object(
        x,
        status="completed",
        output=[_output_message(x, text, "completed")],
        usage=u,
        created=int(time.time()),
    )


def _responses_script(x: Exchange, text: str, usage: Usage | None) -> EventScript:
    pieces = split_text(text)
    u = _usage(x, usage, pieces)
    created = int(time.time())
    item_id = f"msg_fault{x.index}"
    seq = 0
    events: list[bytes] = []

    def add(name: str, data: dict[str, Any]) -> None:
        nonlocal seq
        events.append(_sse({"type": name, "sequence_number": seq, **data}, name))
        seq += 1

    pending = _response_object(x, status="in_progress", output=[], usage=None, created=created)
    add("response.created", {"response": pending})
    add("response.in_progress", {"response": pending})
    add(
        "response.output_item.added",
        {"output_index": 0, "item": _output_message(x, text, "in_progress")},
    )
    where = {"item_id": item_id, "output_index": 0, "content_index": 0}
    add("response.content_part.added", {**where, "part": _output_text("")})
    first_content = len(events)
    for piece in pieces:
        add("response.output_text.delta", {**where, "delta": piece, "logprobs": []})
    add("response.output_text.done", {**where, "text": text, "logprobs": []})
    add("response.content_part.done", {**where, "part": _output_text(text)})
    done = _output_message(x, text, "completed")
    add("response.output_item.done", {"output_index": 0, "item": done})
    final = _response_object(x, status="completed", output=[done], usage=u, created=created)
    add("response.completed", {"response": final})
    return EventScript(events, first_content=first_content, terminal=1)


# ---------------------------------------------------------------- OpenAI embeddings


def _vector(text: str, dims: int) -> list[float]:
    out: list[float] = []
    counter = 0
    while len(out) < dims:
        digest = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        out.extend(v / 2147483648.0 for v in struct.unpack("<8i", digest))
        counter += 1
    del out[dims:]
    norm = math.sqrt(sum(v * v for v in out)) or 1.0
    return [v / norm for v in out]


def _embeddings_json(x: Exchange, usage: Usage | None) -> dict[str, Any]:
    body = x.body if isinstance(x.body, dict) else {}
    raw = body.get("input", "")
    inputs: list[Any] = (
        raw if isinstance(raw, list) and raw and not isinstance(raw[0], int) else [raw]
    )
    dims = body.get("dimensions")
    dims = dims if isinstance(dims, int) and 0 < dims <= 4096 else 16
    as_base64 = body.get("encoding_format") == "base64"
    data: list[dict[str, Any]] = []
    for i, item in enumerate(inputs):
        vec = _vector(item if isinstance(item, str) else _dumps(item), dims)
        emb: object = (
            base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode() if as_base64 else vec
        )
        data.append({"object": "embedding", "index": i, "embedding": emb})
    tokens = usage.input_tokens if usage is not None else max(1, x.body_size // 4)
    return {
        "object": "list",
        "data": data,
        "model": x.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


# ---------------------------------------------------------------- Anthropic messages


def _anthropic_usage(u: Usage, output_tokens: int | None = None) -> dict[str, Any]:
    return {
        "input_tokens": u.input_tokens,
        "cache_creation_input_tokens": u.cache_creation_tokens,
        "cache_read_input_tokens": u.cache_read_tokens,
        "cache_creation": {
            "ephemeral_5m_input_tokens": u.cache_creation_tokens,
            "ephemeral_1h_input_tokens": 0,
        },
        "output_tokens": u.output_tokens if output_tokens is None else output_tokens,
        "service_tier": "standard",
    }


def _message(x: Exchange, content: list[Any], stop: str | None, usage: dict[str, Any]) -> Any:
    return {
        "id": f"msg_fault{x.index:012d}",
        "type": "message",
        "role": "assistant",
        "model": x.model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": usage,
    }


def _messages_json(x: Exchange, text: str, usage: Usage | None,
                   tools: tuple[ToolCall, ...] = ()) -> dict[str, Any]:
    u = _usage(x, usage, split_text(text))
    content: list[Any] = [{"type": "text", "text": text}] if text or not tools else []
    content += [{"type": "tool_use", "id": _tool_id(x, "toolu", i), "name": t.name,
                 "input": json.loads(t.arguments or "{}")} for i, t in enumerate(tools)]
    return dict(_message(x, content, "tool_use" if tools else "end_turn", _anthropic_usage(u)))


def _messages_script(x: Exchange, text: str, usage: Usage | None,
                     tools: tuple[ToolCall, ...] = ()) -> EventScript:
    pieces = split_text(text)
    calls = [split_arguments(t.arguments) for t in tools]
    u = _usage(x, usage, pieces + [piece for args in calls for piece in args])
    start = _message(x, [], None, _anthropic_usage(u, output_tokens=1))
    events = [_sse({"type": "message_start", "message": start}, "message_start")]
    index = 0
    if text or not tools:
        events += [
            _sse({"type": "content_block_start", "index": 0,
                  "content_block": {"type": "text", "text": ""}}, "content_block_start"),
            _sse({"type": "ping"}, "ping"),
        ]
        events.extend(
            _sse({"type": "content_block_delta", "index": 0,
                  "delta": {"type": "text_delta", "text": p}}, "content_block_delta")
            for p in pieces
        )
        events.append(_sse({"type": "content_block_stop", "index": 0}, "content_block_stop"))
        index = 1
    for i, (tool, args) in enumerate(zip(tools, calls, strict=True)):
        block = {"type": "tool_use", "id": _tool_id(x, "toolu", i), "name": tool.name,
                 "input": {}}
        events.append(_sse({"type": "content_block_start", "index": index + i,
                            "content_block": block}, "content_block_start"))
        events.extend(
            _sse({"type": "content_block_delta", "index": index + i,
                  "delta": {"type": "input_json_delta", "partial_json": piece}},
                 "content_block_delta")
            for piece in args
        )
        events.append(_sse({"type": "content_block_stop", "index": index + i},
                           "content_block_stop"))
    final_usage = _anthropic_usage(u)
    del final_usage["cache_creation"], final_usage["service_tier"]
    events += [
        _sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use" if tools else "end_turn",
                          "stop_sequence": None},
                "usage": final_usage,
            },
            "message_delta",
        ),
        _sse({"type": "message_stop"}, "message_stop"),
    ]
    return EventScript(events, first_content=3 if text or not tools else 2, terminal=1)


# ---------------------------------------------------------------- dispatch


def json_body(x: Exchange, text: str, usage: Usage | None,
              tools: tuple[ToolCall, ...] = ()) -> bytes:
    """The complete non-streaming answer for ``x`` (tool calls: chat and messages only)."""
    if x.api == "messages":
        data = _messages_json(x, text, usage, tools)
    elif x.api == "responses":
        data = _responses_json(x, text, usage)
    elif x.api == "embeddings":
        data = _embeddings_json(x, usage)
    else:
        data = _chat_json(x, text, usage, tools)
    return _dumps(data).encode()


def sse_script(x: Exchange, text: str, usage: Usage | None,
               tools: tuple[ToolCall, ...] = ()) -> EventScript:
    """The complete streamed answer for ``x``, one entry per SSE event (tool calls: chat and
    messages only)."""
    if x.api == "messages":
        return _messages_script(x, text, usage, tools)
    if x.api == "responses":
        return _responses_script(x, text, usage)
    return _chat_script(x, text, usage, tools)


def malformed_event(x: Exchange) -> bytes:
    """An event whose ``data:`` is not valid JSON (named, so Anthropic's decoder reads it)."""
    if x.api == "messages":
        return b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,\n\n'
    if x.api == "responses":
        return b'event: response.output_text.delta\ndata: {"type":"response.output_text.\n\n'
    return b'data: {"id":"chatcmpl-fault","object":"chat.completion.chunk","choices":[{\n\n'


def error_event(x: Exchange, error_type: str | None, message: str | None, seq: int) -> bytes:
    """A provider error event inside a 200 stream."""
    if x.api == "messages":
        etype = error_type or "overloaded_error"
        return _sse(
            {
                "type": "error",
                "error": {
                    "type": etype,
                    "message": message or _ANTHROPIC_MESSAGES.get(etype, etype),
                },
                "request_id": x.request_id,
            },
            "error",
        )
    etype = error_type or "server_error"
    msg = message or _OPENAI_SERVER_ERROR
    if x.api == "responses":
        return _sse(
            {"type": "error", "code": etype, "message": msg, "param": None, "sequence_number": seq},
            "error",
        )
    return _sse({"error": {"message": msg, "type": etype, "param": None, "code": None}})


# ---------------------------------------------------------------- errors

_OPENAI_SERVER_ERROR = "The server had an error while processing your request. Sorry about that!"

_OPENAI_STATUS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: (
        "invalid_request_error",
        "invalid_api_key",
        ("Incorrect API key provided. You can find your API key at "
        "https://platform.openai.com/account/api-keys."),
    ),
    403: (
        "invalid_request_error",
        "unsupported_country_region_territory",
        "Country, region, or territory not supported",
    ),
    404: (
        "invalid_request_error",
        "model_not_found",
        "The model `{model}` does not exist or you do not have access to it.",
    ),
    408: ("invalid_request_error", "timeout", "Request timed out."),
    409: ("invalid_request_error", "conflict", "Conflict."),
    413: ("invalid_request_error", None, "Request too large."),
    422: ("invalid_request_error", None, "Unprocessable entity."),
    429: (
        "requests",
        "rate_limit_exceeded",
        ("Rate limit reached for {model} in organization org-fault on requests per min (RPM). "
        "Please try again in 1s."),
    ),
    500: ("server_error", None, _OPENAI_SERVER_ERROR),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
    504: ("server_error", None, "Gateway timeout."),
    529: ("server_error", None, "The server is overloaded, please try again later."),
}

_OPENAI_CODES: dict[str, tuple[str, str | None, str]] = {
    "context_length_exceeded": (
        "invalid_request_error",
        "messages",
        ("This model's maximum context length is 128000 tokens. However, your messages "
        "resulted in 130000 tokens. Please reduce the length of the messages."),
    ),
    "insufficient_quota": (
        "insufficient_quota",
        None,
        "You exceeded your current quota, please check your plan and billing details.",
    ),
    "content_policy_violation": (
        "invalid_request_error",
        None,
        "Your request was rejected as a result of our safety system.",
    ),
    "rate_limit_exceeded": ("requests", None, _OPENAI_STATUS[429][2]),
}

_ANTHROPIC_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}

_ANTHROPIC_MESSAGES: dict[str, str] = {
    "invalid_request_error": "Invalid request.",
    "authentication_error": "invalid x-api-key",
    "billing_error": "Your credit balance is too low to access the Anthropic API.",
    "permission_error": "Your API key does not have permission to use the specified resource.",
    "not_found_error": "model: {model}",
    "request_too_large": "Request exceeds the maximum allowed number of bytes.",
    "rate_limit_error": "This request would exceed the rate limit for your organization of "
    "50 requests per minute. For details, refer to: https://docs.claude.com/en/api/rate-limits.",
    "api_error": "Internal server error",
    "timeout_error": "Request timed out",
    "overloaded_error": "Overloaded",
}

# OpenAI-style codes translated to what Anthropic really says for the same condition.
_ANTHROPIC_CODES: dict[str, tuple[str, str | None, str]] = {
    "context_length_exceeded": (
        "invalid_request_error",
        None,
        "prompt is too long: 210000 tokens > 200000 maximum",
    ),
    "insufficient_quota": (
        "rate_limit_error",
        "enforced_spend_limit_reached",
        ("You have reached your specified API usage limits. You will regain access on the "
        "first day of next month."),
    ),
    "content_policy_violation": (
        "invalid_request_error",
        None,
        "Output blocked by content filtering policy",
    ),
}


def error_body(x: Exchange, fault: Status) -> bytes:
    """The JSON error body of ``fault`` in the request's provider shape."""
    if fault.body is not None:
        return _dumps(fault.body).encode()
    code = fault.code
    if x.flavor == "anthropic":
        etype, details_code, msg = _anthropic_defaults(code, fault.error_code)
        err: dict[str, Any] = {
            "type": fault.error_type or etype,
            "message": fault.message or msg.replace("{model}", x.model),
        }
        if details_code is not None:
            err["details"] = {"error_code": details_code}
        return _dumps({"type": "error", "error": err, "request_id": x.request_id}).encode()
    if fault.error_code is not None and fault.error_code in _OPENAI_CODES:
        etype, param, msg = _OPENAI_CODES[fault.error_code]
    else:
        etype, _code, msg = _OPENAI_STATUS.get(
            code, ("server_error" if code >= 500 else "invalid_request_error", None, "Error.")
        )
        param = None
    ecode = (
        fault.error_code
        if fault.error_code is not None
        else _OPENAI_STATUS.get(code, ("", None, ""))[1]
    )
    return _dumps(
        {
            "error": {
                "message": fault.message or msg.replace("{model}", x.model),
                "type": fault.error_type or etype,
                "param": fault.param if fault.param is not None else param,
                "code": ecode,
            }
        }
    ).encode()


def _anthropic_defaults(status: int, error_code: str | None) -> tuple[str, str | None, str]:
    if error_code is not None and error_code in _ANTHROPIC_CODES:
        return _ANTHROPIC_CODES[error_code]
    etype = _ANTHROPIC_TYPES.get(status) or (
        "api_error" if status >= 500 else "invalid_request_error"
    )
    return etype, error_code, _ANTHROPIC_MESSAGES[etype]


# ---------------------------------------------------------------- header value formats


def go_duration(seconds: float) -> str:
    """Format like Go's ``time.Duration.String`` at millisecond precision (``120ms``, ``6m0s``)."""
    ms = math.ceil(seconds * 1000) if seconds > 0 else 0
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def rfc3339_after(seconds: float) -> str:
    """UTC RFC 3339 timestamp ``seconds`` from now, rounded up to the second (Anthropic resets)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(math.ceil(time.time() + seconds)))
