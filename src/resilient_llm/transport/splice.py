"""Stream recovery without I/O: how a broken stream is continued, and the bytes that continue it.

A stream that broke after its first output is resumed by a new attempt (on the same target or
the next of the chain) in one of two modes:

* ``prefill``: the request repeats the conversation plus the delivered text as a final,
  partial assistant turn, and the target answers only what follows it (Anthropic Messages;
  OpenAI-compatible servers declared in ``RESILIENT_LLM_STREAM_CONTINUATION``). Anthropic
  refuses a prefill that ends in white space, so trailing white space is left out of the
  prefill and verified like a restart's prefix.
* ``restart``: the original request again; the new answer is withheld until it has reproduced
  the delivered text exactly, and only what follows is passed on.

:class:`Splicer` turns the new attempt's events into the rest of the caller's stream: it drops
the opening events the caller already has (``message_start``, the open content block, the role
chunk, ``response.created``), verifies the delivered prefix, cuts the event that crosses it,
and rewrites what must describe the whole answer (token counts, sequence numbers). Text that
does not match raises :class:`Diverged`: nothing is ever spliced that does not belong.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any, Literal

from .._policy import Policy

__all__ = [
    "Diverged",
    "Mode",
    "Splicer",
    "api_of",
    "billed_usage",
    "continuation_body",
    "continuation_mode",
    "remember_rejection",
]

Mode = Literal["prefill", "restart"]

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

#: (origin, model) pairs that answered a prefill with a 400, for the life of the process.
_REJECTED: set[tuple[str, str]] = set()
_REJECTED_LOCK = threading.Lock()


class Diverged(Exception):
    """The new attempt's answer differs from the text the caller already received."""


def api_of(path: str) -> str | None:
    """The streamed API a request path names (``chat``, ``responses``, ``messages``)."""
    for suffix, api in (("/chat/completions", "chat"), ("/responses", "responses"),
                        ("/messages", "messages")):
        if path.endswith(suffix):
            return api
    return None


def continuation_mode(policy: Policy, api: str, model: str | None, origin: str) -> Mode:
    """How ``model`` at ``origin`` resumes a stream: the configured mode, else ``prefill`` for
    Anthropic Messages and ``restart`` elsewhere; ``restart`` for the Responses API (it has no
    partial assistant turn) and for a target that rejected a prefill before."""
    if api == "responses":
        return "restart"
    mode = policy.continuation(model) or ("prefill" if api == "messages" else "restart")
    if mode == "prefill":
        with _REJECTED_LOCK:
            if (origin, model or "") in _REJECTED:
                return "restart"
    return mode


def remember_rejection(origin: str, model: str | None) -> None:
    """``model`` at ``origin`` answered a prefill with a 400: restart there from now on."""
    with _REJECTED_LOCK:
        _REJECTED.add((origin, model or ""))


def forget_rejections() -> None:
    """Forget every remembered rejection (tests)."""
    with _REJECTED_LOCK:
        _REJECTED.clear()


def continuation_body(body: Mapping[str, Any], api: str, delivered: str
                      ) -> tuple[dict[str, Any], str] | None:
    """The request body that continues ``delivered`` by prefill, and the delivered text the
    new answer must still reproduce (trailing white space, which a prefill may not end with);
    ``None`` when nothing is left to prefill (only white space was delivered)."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return None
    kept = list(messages)
    earlier = ""
    last = kept[-1] if kept else None
    if isinstance(last, Mapping) and last.get("role") == "assistant":
        content = last.get("content")
        if isinstance(content, str):
            earlier = content
        elif isinstance(content, list) and all(
            isinstance(part, Mapping) and part.get("type") == "text" for part in content
        ):
            earlier = "".join(str(part.get("text", "")) for part in content)
        else:
            return None
        kept.pop()
    full = earlier + delivered
    prefill = full.rstrip() if api == "messages" else full
    if len(prefill) <= len(earlier):
        return None
    kept.append({"role": "assistant", "content": prefill})
    edited = dict(body)
    edited["messages"] = kept
    return edited, full[len(prefill):]


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


#: The (input, output, total) token fields of each API's usage object.
_USAGE_FIELDS: Mapping[str, tuple[str, str, str | None]] = {
    "chat": ("prompt_tokens", "completion_tokens", "total_tokens"),
    "responses": ("input_tokens", "output_tokens", "total_tokens"),
    "messages": ("input_tokens", "output_tokens", None),
}


def billed_usage(api: str, final: Mapping[str, Any], earlier: list[tuple[int | None, int]]
                 ) -> dict[str, Any]:
    """The usage of every attempt of a recovered stream: ``final`` (the last attempt's, in the
    provider's shape) plus the ``(input, output)`` tokens of each earlier attempt. An input the
    provider never reported (a chat stream cut before its usage chunk) counts as the last
    attempt's own input: the same conversation was sent."""
    fields = _USAGE_FIELDS.get(api)
    if fields is None:
        return dict(final)
    inp, out, total = fields
    usage = dict(final)
    extra_in = sum(_int(final.get(inp)) if tokens is None else tokens for tokens, _ in earlier)
    extra_out = sum(tokens for _, tokens in earlier)
    usage[inp] = _int(final.get(inp)) + extra_in
    usage[out] = _int(final.get(out)) + extra_out
    if total is not None:
        usage[total] = usage[inp] + usage[out]
    return usage


class Splicer:
    """The events of a continuation attempt → the rest of the caller's stream.

    ``expected`` is the delivered text the new answer must reproduce before anything passes
    (all of it for a restart; for a prefill, the trailing white space left out of it);
    ``slot`` is the caller's open output (the Anthropic block, the Responses output item);
    ``prior`` is the number of content events the caller already received by prefill (added
    to the final token counts so that they describe the whole answer); ``sequence`` is the
    last Responses ``sequence_number`` the caller saw.
    """

    __slots__ = ("_buffer", "api", "expected", "ids", "mode", "prior", "regenerated",
                 "sequence", "slot", "verified")

    def __init__(self, api: str, mode: Mode, *, expected: str, slot: int, prior: int,
                 sequence: int | None, ids: Mapping[str, str] | None = None) -> None:
        self.api = api
        self.mode = mode
        self.expected = expected
        self.verified = False
        self.slot = slot
        self.prior = prior if mode == "prefill" else 0
        self.sequence = sequence
        #: The caller's Responses ids (``response``, ``item``): the SDK refuses a stream whose
        #: identity changes, so the continuation's events carry them.
        self.ids = dict(ids or {})
        #: Content events of the new answer withheld because the caller already had them.
        self.regenerated = 0
        self._buffer = b""

    # --- bytes in, bytes out ----------------------------------------------------------------

    def feed(self, chunk: bytes) -> list[bytes]:
        """The caller's share of ``chunk`` (complete events only); raises :class:`Diverged`."""
        data = self._buffer + chunk
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *blocks, self._buffer = data.split(b"\n\n")
        out: list[bytes] = []
        for block in blocks:
            if block:
                passed = self._event(block)
                if passed is not None:
                    out.append(passed)
        return out

    def finish(self) -> list[bytes]:
        """The new stream ended: whatever complete event is left."""
        rest, self._buffer = self._buffer, b""
        if not rest.strip():
            return []
        passed = self._event(rest)
        return [] if passed is None else [passed]

    def _event(self, block: bytes) -> bytes | None:
        name: str | None = None
        lines: list[str] = []
        for line in block.decode("utf-8").split("\n"):
            if not line or line.startswith(":"):
                continue
            key, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if key == "data":
                lines.append(value)
            elif key == "event":
                name = value
        if not lines:
            return None
        data = "\n".join(lines)
        if data == "[DONE]":
            self._require("the stream ended")
            return block + b"\n\n"
        obj = json.loads(data)
        if not isinstance(obj, dict):
            return block + b"\n\n" if self.verified else None
        if self.api == "messages":
            new = self._messages(name or str(obj.get("type")), obj)
        elif self.api == "responses":
            new = self._responses(str(obj.get("type")), obj)
        else:
            new = self._chat(obj)
        if new is None:
            return None
        if new is obj and not self._rewrites():
            return block + b"\n\n"
        return _event_bytes(name, new)

    def _rewrites(self) -> bool:
        """Events that pass unchanged still need a rewrite (Responses: sequence and ids)."""
        return self.api == "responses"

    # --- the prefix -------------------------------------------------------------------------

    def _require(self, what: str) -> None:
        if not self.verified and self.expected:
            raise Diverged(f"{what} before reproducing the delivered text")
        self.verified = True

    def _verify(self, piece: str) -> str:
        """What of ``piece`` follows the delivered text (``""``: the caller already had it)."""
        if self.verified:
            return piece
        expected = self.expected
        if len(piece) <= len(expected):
            if not expected.startswith(piece):
                raise Diverged("the new answer differs from the delivered text")
            self.expected = expected[len(piece):]
            self.regenerated += 1
            self.verified = not self.expected
            return ""
        if not piece.startswith(expected):
            raise Diverged("the new answer differs from the delivered text")
        if expected:
            self.regenerated += 1
        self.expected = ""
        self.verified = True
        return piece[len(expected):]

    # --- per API ----------------------------------------------------------------------------

    def _chat(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        choices = obj.get("choices")
        if not isinstance(choices, list) or not choices:
            if obj.get("usage"):
                self._require("the usage arrived")
                return self._usage(obj, "usage", "prompt_tokens", "completion_tokens")
            return obj if self.verified else None
        if len(choices) != 1 or not isinstance(choices[0], dict):
            raise Diverged("the new answer has other choices")
        choice = choices[0]
        delta = choice.get("delta")
        delta = delta if isinstance(delta, dict) else {}
        content = delta.get("content")
        was = self.verified
        tail: str | None = None
        if isinstance(content, str) and content:
            tail = self._verify(content)
        elif any(delta.get(key) for key in ("tool_calls", "function_call", "refusal")):
            self._require("other output came")
        if choice.get("finish_reason"):
            self._require("the answer finished")
        if was:
            return obj
        if not self.verified or (tail == "" and not choice.get("finish_reason")):
            return None
        new_delta = {k: v for k, v in delta.items() if k != "role"}
        new_delta["content"] = tail or None
        if not tail:
            new_delta.pop("content")
        return {**obj, "choices": [{**choice, "delta": new_delta}]}

    def _messages(self, kind: str, obj: dict[str, Any]) -> dict[str, Any] | None:
        index = obj.get("index")
        if kind in ("message_start", "ping"):
            return obj if kind == "ping" and self.verified else None
        if kind == "content_block_start":
            if index == 0:
                return None  # the caller's block is open already
            self._require("another content block started")
            return self._index(obj)
        if kind == "content_block_delta":
            delta = obj.get("delta")
            delta = delta if isinstance(delta, dict) else {}
            text = delta.get("text") if delta.get("type") == "text_delta" else None
            if index != 0 or not isinstance(text, str):
                self._require("other output came")
                return self._index(obj)
            was = self.verified
            tail = self._verify(text)
            if was:
                return self._index(obj)
            if not tail:
                return None
            return self._index({**obj, "delta": {**delta, "text": tail}})
        if kind == "content_block_stop":
            self._require("the content block ended")
            return self._index(obj)
        if kind == "message_delta":
            self._require("the message ended")
            return self._usage(obj, "usage", "input_tokens", "output_tokens")
        return obj if self.verified else None

    def _index(self, obj: dict[str, Any]) -> dict[str, Any]:
        """A prefill's blocks are numbered from 0: shift them to continue the caller's."""
        index = obj.get("index")
        if self.mode == "prefill" and self.slot and isinstance(index, int):
            return {**obj, "index": index + self.slot}
        return obj

    def _responses(self, kind: str, obj: dict[str, Any]) -> dict[str, Any] | None:
        if kind in ("response.created", "response.in_progress"):
            return None
        index = obj.get("output_index")
        if kind in ("response.output_item.added", "response.content_part.added") \
                and index == self.slot and not self.verified:
            return None
        if kind == "response.output_text.delta" and isinstance(obj.get("delta"), str):
            was = self.verified
            tail = self._verify(obj["delta"])
            if was:
                return self._sequenced(obj)
            if not tail:
                return None
            return self._sequenced({**obj, "delta": tail})
        self._require(f"{kind} came")
        return self._sequenced(obj)

    def _sequenced(self, obj: dict[str, Any]) -> dict[str, Any]:
        """A Responses event in the caller's numbering and identity."""
        if self.sequence is not None:
            self.sequence += 1
            obj = {**obj, "sequence_number": self.sequence}
        item, response = self.ids.get("item"), self.ids.get("response")
        if item is not None and obj.get("output_index") == self.slot:
            if "item_id" in obj:
                obj = {**obj, "item_id": item}
            if isinstance(obj.get("item"), dict):
                obj = {**obj, "item": {**obj["item"], "id": item}}
        body = obj.get("response")
        if response is not None and isinstance(body, dict):
            body = {**body, "id": response}
            output = body.get("output")
            if item is not None and isinstance(output, list) and len(output) > self.slot \
                    and isinstance(output[self.slot], dict):
                output = list(output)
                output[self.slot] = {**output[self.slot], "id": item}
                body["output"] = output
            obj = {**obj, "response": body}
        return obj

    def _usage(self, obj: dict[str, Any], key: str, inp: str, out: str) -> dict[str, Any]:
        """A prefill's token counts, made to describe the whole answer: the content the caller
        received before the break counts as output, not as input."""
        usage = obj.get(key)
        if not self.prior or not isinstance(usage, dict):
            return obj
        fixed = dict(usage)
        if isinstance(fixed.get(out), int):
            fixed[out] = fixed[out] + self.prior
        if isinstance(fixed.get(inp), int):
            fixed[inp] = max(0, fixed[inp] - self.prior)
        return {**obj, key: fixed}


def _event_bytes(name: str | None, obj: Mapping[str, Any]) -> bytes:
    payload = _dumps(obj).encode()
    if name is None:
        return b"data: " + payload + b"\n\n"
    return b"event: " + name.encode() + b"\ndata: " + payload + b"\n\n"
