"""Streams the inspector does not judge, and bytes it must not misread: each drop-in delivers
what the official client delivers, from one request.

Other endpoints stream events of their own (transcriptions, speech, images, Assistants runs,
legacy completions); a server may end lines with CRLF and a read may end between its CR and
its LF; a JSON Lines download is no JSON document. Official client and drop-in side by side
on the same scripted bytes (``httpx2.MockTransport``), sync and async.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anthropic
import anyio
import httpx2
import openai
import pytest

from resilient_llm import Policy
from resilient_llm.anthropic import Anthropic, AsyncAnthropic
from resilient_llm.openai import AsyncOpenAI, OpenAI
from resilient_llm.providers import ANTHROPIC, OPENAI, StreamScanner
from resilient_llm.testing import Fault, FaultProvider
from resilient_llm.transport.shared import is_json

POLICY = Policy(deadline=10, first_token_timeout=5)
KEY = "sk-test-secret-key"


def sse(*events: dict[str, Any], name: Callable[[dict[str, Any]], str | None] = lambda e: None,
        end: str = "\n") -> list[bytes]:
    """One chunk per event (``name`` gives its ``event:`` line), lines ended by ``end``."""
    chunks = []
    for event in events:
        head = f"event: {name(event)}{end}" if name(event) else ""
        chunks.append(f"{head}data: {json.dumps(event)}{end}{end}".encode())
    return chunks


TRANSCRIPT = sse({"type": "transcript.text.delta", "delta": "Hello"},
                 {"type": "transcript.text.delta", "delta": " world"},
                 {"type": "transcript.text.done", "text": "Hello world"})
RUN = sse({"object": "thread.run", "id": "run_1", "status": "queued"},
          {"object": "thread.message.delta", "id": "msg_1",
           "delta": {"content": [{"index": 0, "type": "text", "text": {"value": "Hi"}}]}},
          {"object": "thread.run", "id": "run_1", "status": "completed"},
          name=lambda e: {"queued": "thread.run.created", "completed": "thread.run.completed"}
          .get(e.get("status", ""), e["object"]))
LEGACY = sse(*({"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m",
                "choices": [{"index": 0, "text": piece, "logprobs": None,
                             "finish_reason": "stop" if last else None}]}
               for piece, last in (("Hello", False), (" there", False), (" friend", True))))


class Server:
    """Scripted answers, each a list of chunks; counts requests. With ``gate``, the chunks
    after the first wait until the test has seen the first (a client that buffers the stream
    to its end would wait here: ``gate`` times out, and ``held`` says so)."""

    def __init__(self, chunks: list[bytes], *, content_type: str = "text/event-stream",
                 gate: bool = False) -> None:
        self.chunks = chunks
        self.content_type = content_type
        self.requests = 0
        self.gate = threading.Event() if gate else None
        self.held = False

    def _wait(self) -> None:
        if self.gate is not None and not self.gate.wait(5):
            self.held = True

    def _sync(self) -> Iterator[bytes]:
        for n, chunk in enumerate(self.chunks):
            if n == 1:
                self._wait()
            yield chunk

    async def _async(self) -> AsyncIterator[bytes]:
        for n, chunk in enumerate(self.chunks):
            if n == 1:
                await anyio.to_thread.run_sync(self._wait)
            yield chunk

    def handler(self, asynchronous: bool) -> Callable[[httpx2.Request], httpx2.Response]:
        def handle(request: httpx2.Request) -> httpx2.Response:
            self.requests += 1
            content: Any = self._async() if asynchronous else self._sync()
            return httpx2.Response(200, headers={"content-type": self.content_type},
                                   content=content)
        return handle


def client_for(flavor: str, server: Server, *, official: bool,
               asynchronous: bool = False) -> Any:
    """An official or drop-in client of ``flavor`` (``openai``, ``anthropic``) on ``server``."""
    transport = httpx2.MockTransport(server.handler(asynchronous))
    http: Any = httpx2.AsyncClient(transport=transport) if asynchronous \
        else httpx2.Client(transport=transport)
    options: dict[str, Any] = {"api_key": KEY, "http_client": http}
    if flavor == "openai":
        options["base_url"] = "http://llm.test/v1"
        kinds: Any = ((openai.OpenAI, openai.AsyncOpenAI), (OpenAI, AsyncOpenAI))
    else:
        options["base_url"] = "http://llm.test"
        kinds = ((anthropic.Anthropic, anthropic.AsyncAnthropic), (Anthropic, AsyncAnthropic))
    cls = kinds[0 if official else 1][1 if asynchronous else 0]
    return cls(max_retries=0, **options) if official else cls(policy=POLICY, **options)


def run_events(client: Any) -> list[str]:
    """An Assistants run's streamed events, by name (the SDK's deprecated helper)."""
    with pytest.warns(DeprecationWarning):
        stream = client.beta.threads.runs.create("thread_1", assistant_id="asst_1", stream=True)
        return [event.event for event in stream]


def transcript_events(client: Any) -> list[str]:
    stream = client.audio.transcriptions.create(
        model="gpt-4o-transcribe", file=("a.wav", b"RIFF0000WAVE"), stream=True)
    return [event.type for event in stream]


# --- another endpoint's stream is the SDK's to read --------------------------------------------


@pytest.mark.parametrize(("chunks", "read"), [(TRANSCRIPT, transcript_events), (RUN, run_events)],
                         ids=["transcription", "assistants-run"])
def test_a_stream_of_another_endpoints_events_is_delivered_from_one_request(
        chunks: list[bytes], read: Callable[[Any], list[str]]) -> None:
    """Events no wire knows (a transcription's, an Assistants run's) are neither output nor a
    finish: before, every such stream read as "ended before any output", was sent four
    times (four uploads, four runs) and failed."""
    results = []
    for official in (True, False):
        server = Server(chunks)
        results.append((read(client_for("openai", server, official=official)), server.requests))
    assert results[1] == results[0]
    assert results[0][1] == 1 and len(results[0][0]) == len(chunks)


def test_a_transcription_streams_from_one_request_async_too() -> None:
    async def consume(official: bool) -> tuple[list[str], int]:
        server = Server(TRANSCRIPT)
        client = client_for("openai", server, official=official, asynchronous=True)
        stream = await client.audio.transcriptions.create(
            model="gpt-4o-transcribe", file=("a.wav", b"RIFF0000WAVE"), stream=True)
        return [event.type async for event in stream], server.requests

    expected = (["transcript.text.delta"] * 2 + ["transcript.text.done"], 1)
    assert anyio.run(consume, True) == anyio.run(consume, False) == expected


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_a_legacy_completions_text_reaches_the_caller_as_it_arrives(asynchronous: bool) -> None:
    """A legacy completion's text is output (the stream commits at its first chunk): before,
    nothing reached the caller until the last chunk's finish reason."""
    server = Server(LEGACY, gate=True)
    client = client_for("openai", server, official=False, asynchronous=asynchronous)
    gate = server.gate
    assert gate is not None
    if not asynchronous:
        stream = client.completions.create(model="m", prompt="hi", stream=True)
        first = next(iter(stream)).choices[0].text
        gate.set()  # the rest comes only now
        rest = [chunk.choices[0].text for chunk in stream]
    else:
        async def consume() -> tuple[str, list[str]]:
            stream = await client.completions.create(model="m", prompt="hi", stream=True)
            chunks = stream.__aiter__()
            head = (await chunks.__anext__()).choices[0].text
            gate.set()
            return head, [chunk.choices[0].text async for chunk in chunks]
        first, rest = anyio.run(consume)
    assert not server.held
    assert (first, rest, server.requests) == ("Hello", [" there", " friend"], 1)


def test_an_assistants_run_reaches_the_caller_event_by_event() -> None:
    server = Server(RUN, gate=True)
    client = client_for("openai", server, official=False)
    assert server.gate is not None
    with pytest.warns(DeprecationWarning):
        stream = client.beta.threads.runs.create("thread_1", assistant_id="asst_1", stream=True)
        events = iter(stream)
        first = next(events).event
        server.gate.set()
        rest = [event.event for event in events]
    assert not server.held
    assert [first, *rest] == ["thread.run.created", "thread.message.delta",
                              "thread.run.completed"]


def test_a_legacy_completion_stream_keeps_its_text_and_completes() -> None:
    scanner = StreamScanner(OPENAI)
    scanner.feed(LEGACY[0])
    assert (scanner.committed, scanner.complete, scanner.opaque) == (True, False, False)
    for chunk in LEGACY[1:]:
        scanner.feed(chunk)
    assert (scanner.complete, scanner.failure, scanner.resumable) == (True, None, False)


def test_a_stream_whose_first_event_is_no_messages_event_is_another_kind() -> None:
    """Anthropic's wire judges Messages streams; another kind of stream (a legacy completion's
    events, a beta endpoint's) commits at its first event and is complete where it ends."""
    scanner = StreamScanner(ANTHROPIC)
    scanner.feed(b'event: ping\ndata: {"type": "ping"}\n\n')
    assert (scanner.committed, scanner.opaque) == (False, False)  # a keep-alive: nothing
    scanner.feed(b'event: completion\ndata: {"type": "completion", "completion": "Hi"}\n\n')
    assert (scanner.opaque, scanner.committed, scanner.complete) == (True, True, True)
    scanner.feed(b'event: error\ndata: {"type": "error", "error": {"type": "api_error"}}\n\n')
    assert scanner.failure is None  # the SDK reads it, and raises as the official client does


def test_an_unknown_event_inside_a_known_stream_changes_nothing() -> None:
    """Only a stream whose *first* event is unknown is another kind: a new event type in a
    Messages stream is ignored, and the stream is still judged by its stop reason."""
    scanner = StreamScanner(ANTHROPIC)
    scanner.feed(b'event: message_start\ndata: {"type": "message_start", "message": {}}\n\n')
    scanner.feed(b'event: brand_new\ndata: {"type": "brand_new"}\n\n')
    assert not scanner.opaque and not scanner.committed and not scanner.complete


# --- line ends: CRLF read in two pieces is one line end ----------------------------------------


def split_at_cr(chunks: list[bytes]) -> list[bytes]:
    """The same bytes, each read ending right after a CR (so its LF starts the next)."""
    data = b"".join(chunks)
    pieces, start = [], 0
    for at in range(len(data)):
        if data[at:at + 1] == b"\r":
            pieces.append(data[start:at + 1])
            start = at + 1
    return [*pieces, data[start:]] if start < len(data) else pieces


ANTHROPIC_CRLF = sse(
    {"type": "message_start", "message": {"id": "m1", "type": "message", "role": "assistant",
                                          "model": "claude-x", "content": [],
                                          "stop_reason": None, "stop_sequence": None,
                                          "usage": {"input_tokens": 1, "output_tokens": 0}}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    *({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}}
      for t in ("Hello", " brave", " new world")),
    {"type": "content_block_stop", "index": 0},
    {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
     "usage": {"output_tokens": 4}},
    {"type": "message_stop"},
    name=lambda e: e["type"], end="\r\n")


def test_the_scanner_reads_a_crlf_split_between_two_reads_as_one_line_end() -> None:
    whole, split = StreamScanner(ANTHROPIC), StreamScanner(ANTHROPIC)
    for chunk in ANTHROPIC_CRLF:
        whole.feed(chunk)
    out = b"".join(split.events_of(piece) for piece in split_at_cr(ANTHROPIC_CRLF))
    assert split.text == whole.text == "Hello brave new world"
    assert split.events == whole.events == len(ANTHROPIC_CRLF)
    assert split.complete and split.failure is None
    assert out == b"".join(ANTHROPIC_CRLF).replace(b"\r\n", b"\n")


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_a_crlf_stream_read_in_pieces_gives_the_official_clients_text(
        asynchronous: bool) -> None:
    """Before, a read ending between CR and LF made a blank line: the event was cut in two and
    a text delta was lost without a word (the stream still looked complete)."""
    def text(official: bool) -> tuple[str, int]:
        server = Server(split_at_cr(ANTHROPIC_CRLF))
        client = client_for("anthropic", server, official=official, asynchronous=asynchronous)
        params: Any = {"model": "claude-x", "max_tokens": 20,
                       "messages": [{"role": "user", "content": "hi"}]}
        if not asynchronous:
            with client.messages.stream(**params) as stream:
                return "".join(stream.text_stream), server.requests

        async def consume() -> str:
            async with client.messages.stream(**params) as stream:
                return "".join([piece async for piece in stream.text_stream])
        return anyio.run(consume), server.requests

    assert text(official=False) == text(official=True) == ("Hello brave new world", 1)


# --- JSON documents and JSON Lines -------------------------------------------------------------


def test_only_json_documents_are_read_whole() -> None:
    for media in ("application/json", "application/json; charset=utf-8", "text/json",
                  "application/problem+json", "Application/JSON"):
        assert is_json(media), media
    for media in ("application/jsonl", "application/x-jsonl", "application/x-ndjson",
                  "application/jsonlines", "application/octet-stream", "text/plain", ""):
        assert not is_json(media), media


def test_a_json_lines_download_larger_than_the_cap_streams_as_with_the_official_client() -> None:
    """Batch results and file downloads come as JSON Lines: the SDK reads them line by line,
    and the response-size cap (for JSON documents, which are parsed whole) is not theirs."""
    line = json.dumps({"custom_id": "x" * 100, "result": {"type": "succeeded"}}).encode() + b"\n"
    body = [line * 200] * 5  # 5 reads, over 100 KB in all
    server = Server(body, content_type="application/jsonl")
    transport = httpx2.MockTransport(server.handler(False))
    client = OpenAI(api_key=KEY, base_url="http://llm.test/v1",
                    http_client=httpx2.Client(transport=transport),
                    policy=Policy(deadline=10, max_response_bytes=65536))
    with client.files.with_streaming_response.content("file-1") as response:
        lines = list(response.iter_lines())
    assert len(lines) == 1000 and server.requests == 1


# --- the SDK's error attributes on errors raised in its place ----------------------------------


def test_a_broken_stream_raised_as_the_sdks_error_has_its_attributes() -> None:
    """``except openai.APIError as e: log(e.body, e.type)`` worked on the official client's
    error and raised ``AttributeError`` on ours."""
    chunks = sse({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                  "choices": [{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None}]})
    server = Server(chunks)  # ends without a finish reason: a truncation
    transport = httpx2.MockTransport(server.handler(False))
    client = OpenAI(api_key=KEY, base_url="http://llm.test/v1",
                    http_client=httpx2.Client(transport=transport),
                    policy=Policy(deadline=10, stream_recovery="off"))
    with pytest.raises(openai.APIConnectionError) as caught:
        for _ in client.chat.completions.create(model="m", messages=[], stream=True):
            pass
    error = caught.value
    assert (error.body, error.code, error.param, error.type) == (None, None, None, None)


@pytest.mark.parametrize("flavor", ["openai", "anthropic"])
def test_a_cut_stream_raised_as_the_sdks_error_keeps_its_request_as_the_sdk_does(
        flavor: str) -> None:
    """The SDK builds the error from the cut's request itself (newer SDKs drop credential
    headers from it): the request is there, the key is not, where the official client's own
    error has none either."""
    results = []
    for official in (True, False):
        provider = FaultProvider()
        provider.default = Fault.stream_cut(after_events=6)
        http = httpx2.Client(transport=provider.transport())
        options: dict[str, Any] = {"api_key": KEY, "http_client": http}
        if flavor == "openai":
            client: Any = openai.OpenAI(max_retries=0, base_url="http://f.test/v1", **options) \
                if official else OpenAI(base_url="http://f.test/v1", policy=Policy(
                    deadline=10, stream_recovery="off"), **options)
            stream = client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}], stream=True)
            base: Any = openai.APIConnectionError
        else:
            client = anthropic.Anthropic(max_retries=0, base_url="http://f.test", **options) \
                if official else Anthropic(base_url="http://f.test", policy=Policy(
                    deadline=10, stream_recovery="off"), **options)
            stream = client.messages.create(model="m", max_tokens=9, stream=True,
                                            messages=[{"role": "user", "content": "hi"}])
            base = anthropic.APIConnectionError
        with pytest.raises(base) as caught:
            for _ in stream:
                pass
        request = caught.value.request
        assert request is not None and request.url.path.endswith(("completions", "messages"))
        results.append(any(KEY in value for value in request.headers.values()))
    assert results[1] == results[0]  # a key kept by neither, or by both (older SDKs)


@pytest.mark.parametrize("official", [True, False], ids=["official", "drop-in"])
def test_a_last_event_without_its_blank_line_is_the_sdks_to_drop(official: bool) -> None:
    """A body that ends inside an event (no closing blank line): the SSE format drops it, and
    so do the official SDKs; the drop-in (stream recovery on) hands the bytes over as they
    came, where it used to close the event itself and deliver one chunk more."""
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]}
    last = {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    body = [*sse(chunk, chunk), f"data: {json.dumps(last)}\n".encode()]
    server = Server(body)
    client = client_for("openai", server, official=official)
    chunks = list(client.chat.completions.create(model="m", messages=[], stream=True))
    assert [c.choices[0].delta.content for c in chunks] == ["Hi", "Hi"]
