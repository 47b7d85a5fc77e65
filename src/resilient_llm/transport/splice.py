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
from ..providers._sse import event_fields

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


#: What a continuation must reproduce: each delivered output in order, as (kind, tool name,
#: text). A prefill expects one text: the white space its prefill left out.
Expected = list[tuple[str, str | None, str]]


class Splicer:
    """The events of a continuation attempt → the rest of the caller's stream.

    ``expected`` lists the outputs the caller already has, which the new answer must reproduce
    in order before anything passes (every output for a restart; for a prefill, the trailing
    white space left out of it); ``slot`` is the caller's open output (the Anthropic block a
    prefill continues, the Responses output item); ``prior`` is the number of content events
    the caller already received by prefill (added to the final token counts so that they
    describe the whole answer); ``sequence`` and ``ids`` are the last Responses
    ``sequence_number`` and the caller's response and item ids.
    """

    __slots__ = ("_buffer", "_left", "_order", "api", "expected", "ids", "mode", "prior",
                 "regenerated", "sequence", "slot", "verified")

    def __init__(self, api: str, mode: Mode, *, expected: Expected, slot: int, prior: int,
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
        #: Content events of the new answer that repeated what the caller had (withheld).
        self.regenerated = 0
        self._buffer = b""
        #: The new answer's outputs seen so far → their position in ``expected``.
        self._order: dict[Any, int] = {}
        #: What the current expected output still has to reproduce.
        self._left = ""

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
        try:
            return self._parsed(block)
        except ValueError as exc:  # not UTF-8 or not JSON (a compressed body): cannot verify
            raise Diverged("the new answer's events do not parse") from exc

    def _parsed(self, block: bytes) -> bytes | None:
        name, data = event_fields(block.decode("utf-8"))
        if data is None:
            return None
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
        if new is obj and self.api != "responses":  # Responses events get the caller's ids
            return block + b"\n\n"
        return _event_bytes(name, new)

    # --- the delivered outputs --------------------------------------------------------------

    def _take(self, key: Any, kind: str, name: str | None, piece: str | None) -> str | None:
        """One contribution of the new answer to its output ``key``: its opening (``piece``
        ``None``) or content. Returns what reaches the caller (``None``: nothing; an opening
        the caller has, or content it has), raises :class:`Diverged` when it differs."""
        position = self._order.get(key)
        if position is None:
            if self.verified:
                return "" if piece is None else piece  # an output the caller never had
            position = len(self._order)
            if position >= len(self.expected) or self._left:
                raise Diverged("the new answer has an output the delivered one had not")
            want_kind, want_name, want_text = self.expected[position]
            if kind != want_kind or (want_name and name and want_name != name):
                raise Diverged("the new answer's outputs differ from the delivered ones")
            self._order[key] = position
            self._left = want_text
            if position == len(self.expected) - 1 and not want_text:
                self.verified = True
        elif not self.verified and position != len(self._order) - 1:
            raise Diverged("the new answer went back to an earlier output")
        if piece is None:
            return None  # the caller has this output's opening
        if self.verified:
            return piece
        return self._verify(piece, last=position == len(self.expected) - 1)

    def _verify(self, piece: str, *, last: bool) -> str | None:
        left = self._left
        if len(piece) <= len(left):
            if not left.startswith(piece):
                raise Diverged("the new answer differs from the delivered text")
            self._left = left[len(piece):]
            self.regenerated += 1
            if last and not self._left:
                self.verified = True
            return None
        if not last or not piece.startswith(left):
            raise Diverged("the new answer differs from the delivered text")
        if left:
            self.regenerated += 1
        self._left = ""
        self.verified = True
        return piece[len(left):]

    def _require(self, what: str) -> None:
        """The new answer ends an output or the stream: it must have reproduced everything."""
        if self.verified:
            return
        if self._order or any(text for _, _, text in self.expected):
            raise Diverged(f"{what} before reproducing the delivered text")
        self.verified = True  # a prefill with nothing left to check

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
        was = self.verified
        kept: dict[str, Any] = {}
        content = delta.get("content")
        if isinstance(content, str) and content:
            tail = self._take(("text", 0), "text", None, content)
            if tail:
                kept["content"] = tail
        calls = delta.get("tool_calls")
        if isinstance(calls, list):
            passed = [call for call in map(self._tool_call, calls) if call is not None]
            if passed:
                kept["tool_calls"] = passed
        if any(delta.get(key) for key in ("function_call", "refusal", "reasoning_content",
                                          "audio")):
            self._take(("other", 0), "other", None, None)
        if choice.get("finish_reason"):
            self._require("the answer finished")
        if was:
            return obj
        if not kept and not choice.get("finish_reason"):
            return None
        return {**obj, "choices": [{**choice, "delta": kept}]}

    def _tool_call(self, call: Any) -> dict[str, Any] | None:
        """A chat tool-call delta, as the caller may see it (``None``: nothing of it)."""
        if not isinstance(call, dict):
            return None
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        key = ("tool", 0, call.get("index", 0))
        name = function.get("name") if isinstance(function.get("name"), str) else None
        arguments = function.get("arguments")
        piece = arguments if isinstance(arguments, str) else ""
        if call.get("id") or name:
            self._take(key, "tool", name, None)
        tail = self._take(key, "tool", name, piece) if piece else None
        if key not in self._order:
            return call  # an output the caller never had: as it came
        if not tail:
            return None
        # the caller has this call's id and name: only the rest of its arguments
        return {"index": call.get("index", 0), "function": {"arguments": tail}}

    def _messages(self, kind: str, obj: dict[str, Any]) -> dict[str, Any] | None:
        index = obj.get("index")
        if kind in ("message_start", "ping"):
            return obj if kind == "ping" and self.verified else None
        if kind == "content_block_start":
            block = obj.get("content_block")
            block = block if isinstance(block, dict) else {}
            btype = block.get("type")
            name = block.get("name") if isinstance(block.get("name"), str) else None
            kind_of = "text" if btype == "text" else "tool" if btype == "tool_use" else "other"
            self._take(index, kind_of, name, None)
            return None if index in self._order else self._index(obj)
        if kind == "content_block_delta":
            delta = obj.get("delta")
            delta = delta if isinstance(delta, dict) else {}
            field = {"text_delta": "text", "input_json_delta": "partial_json"}.get(
                str(delta.get("type")))
            piece = delta.get(field) if field else None
            if field is None or not isinstance(piece, str):
                self._take(("other", index), "other", None, None)
                return self._index(obj)
            tail = self._take(index, "text" if field == "text" else "tool", None, piece)
            if not tail:
                return None
            if tail == piece:
                return self._index(obj)
            return self._index({**obj, "delta": {**delta, field: tail}})
        if kind == "content_block_stop":
            position = self._order.get(index)
            if not self.verified and position is not None \
                    and position < len(self.expected) - 1:
                return None  # the caller has this block's end
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
        if kind in ("response.created", "response.in_progress", "response.queued"):
            return None
        index = obj.get("output_index")
        if kind in ("response.output_item.added", "response.content_part.added"):
            item = obj.get("item")
            other = isinstance(item, dict) and item.get("type") != "message"
            self._take(index, "other" if other else "text", None, None)
            return None if index in self._order else self._sequenced(obj)
        if kind == "response.output_text.delta" and isinstance(obj.get("delta"), str):
            tail = self._take(index, "text", None, obj["delta"])
            if not tail:
                return None
            return self._sequenced(obj if tail == obj["delta"] else {**obj, "delta": tail})
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
