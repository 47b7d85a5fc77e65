"""Every wait of the transport ends by the deadline, against a hostile provider (issue 18:
items 1, 2, 6 and 14): dripped headers and bodies, non-JSON 200s, gzip-compressed streams,
and the errors a caller sees when first-token limits or malformed streams use every attempt."""

from __future__ import annotations

import contextlib
import gc
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import anyio
import httpx2
import openai
import pytest

from resilient_llm import DeadlineExceeded, Policy, ResilientTransport
from resilient_llm.anthropic import Anthropic, AsyncAnthropic
from resilient_llm.openai import AsyncOpenAI, OpenAI
from resilient_llm.testing import Fault, FaultProvider, Hostile, HostileProvider
from resilient_llm.transport.watchdog import (
    _WATCHDOG,
    KnownSockets,
    SendGuard,
    SyncGuard,
    _Watchdog,
    write_tag,
)

MESSAGES: Any = [{"role": "user", "content": "hi"}]
SLACK = 0.3


@pytest.fixture
def server() -> Iterator[HostileProvider]:
    with HostileProvider(max_seconds=15) as provider:
        yield provider


@contextlib.contextmanager
def ends_by(deadline: float) -> Iterator[None]:
    """The block (one call, without building or closing its client) ends by the deadline."""
    started = time.monotonic()
    try:
        yield
    finally:
        assert time.monotonic() - started < deadline + SLACK


def sync_call(server: HostileProvider, deadline: float, **policy: Any) -> Any:
    with OpenAI(base_url=server.base_url, api_key="k",
                policy=Policy(deadline=deadline, **policy)) as client, ends_by(deadline):
        return client.chat.completions.create(model="m", messages=MESSAGES)


def async_call(server: HostileProvider, deadline: float, **policy: Any) -> Any:
    async def main() -> Any:
        async with AsyncOpenAI(base_url=server.base_url, api_key="k",
                               policy=Policy(deadline=deadline, **policy)) as client:
            with ends_by(deadline):
                return await client.chat.completions.create(model="m", messages=MESSAGES)

    return anyio.run(main)


CALLS = {"sync": sync_call, "async": async_call}


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_dripped_headers_end_by_the_deadline(server: HostileProvider, mode: str) -> None:
    server.script(*[Hostile.drip_headers(0.2)] * 5)
    with pytest.raises(DeadlineExceeded):
        CALLS[mode](server, 1.5)


def reused_connection_call(server: HostileProvider, sdk: str, deadline: float) -> None:
    """A first call kept alive, then a second call on the same pooled connection."""
    if sdk == "openai":
        with OpenAI(base_url=server.base_url, api_key="k",
                    policy=Policy(deadline=deadline, max_attempts=2)) as openai_client:
            openai_client.chat.completions.create(model="m", messages=MESSAGES)
            with ends_by(deadline):
                openai_client.chat.completions.create(model="m", messages=MESSAGES)
        return
    with Anthropic(base_url=server.base_url.removesuffix("/v1"), api_key="k",
                   policy=Policy(deadline=deadline, max_attempts=2)) as anthropic_client:
        anthropic_client.messages.create(model="m", max_tokens=5, messages=MESSAGES)
        with ends_by(deadline):
            anthropic_client.messages.create(model="m", max_tokens=5, messages=MESSAGES)


def reused_connection_call_async(server: HostileProvider, sdk: str, deadline: float) -> None:
    async def main() -> None:
        policy = Policy(deadline=deadline, max_attempts=2)
        if sdk == "openai":
            async with AsyncOpenAI(base_url=server.base_url, api_key="k",
                                   policy=policy) as openai_client:
                await openai_client.chat.completions.create(model="m", messages=MESSAGES)
                with ends_by(deadline):
                    await openai_client.chat.completions.create(model="m", messages=MESSAGES)
            return
        async with AsyncAnthropic(base_url=server.base_url.removesuffix("/v1"), api_key="k",
                                  policy=policy) as anthropic_client:
            await anthropic_client.messages.create(model="m", max_tokens=5, messages=MESSAGES)
            with ends_by(deadline):
                await anthropic_client.messages.create(model="m", max_tokens=5,
                                                       messages=MESSAGES)

    anyio.run(main)


@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_dripped_headers_on_a_reused_connection_end_by_the_deadline(
        server: HostileProvider, mode: str, sdk: str) -> None:
    server.script(Hostile.ok(keep_alive=True), *[Hostile.drip_headers(0.2)] * 3)
    call = reused_connection_call if mode == "sync" else reused_connection_call_async
    with pytest.raises(DeadlineExceeded):
        call(server, sdk, 1.5)
    first, second = server.requests
    assert second.connection == first.connection  # the pool reused the kept-alive connection
    # ... and the deadline ended the call, not a retry on a new connection


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_dripped_headers_of_a_stream_on_a_reused_connection_end_by_the_deadline(
        server: HostileProvider, mode: str) -> None:
    server.script(Hostile.ok(keep_alive=True), *[Hostile.drip_headers(0.2)] * 3)
    policy = Policy(deadline=1.5, max_attempts=2)

    async def main() -> None:
        async with AsyncOpenAI(base_url=server.base_url, api_key="k", policy=policy) as client:
            await client.chat.completions.create(model="m", messages=MESSAGES)
            with pytest.raises(DeadlineExceeded), ends_by(1.5):
                stream = await client.chat.completions.create(model="m", messages=MESSAGES,
                                                              stream=True)
                async for _ in stream:
                    pass

    if mode == "async":
        anyio.run(main)
    else:
        with OpenAI(base_url=server.base_url, api_key="k", policy=policy) as client:
            client.chat.completions.create(model="m", messages=MESSAGES)
            with pytest.raises(DeadlineExceeded), ends_by(1.5):
                for _ in client.chat.completions.create(model="m", messages=MESSAGES,
                                                        stream=True):
                    pass
    first, second = server.requests
    assert second.connection == first.connection and second.json["stream"] is True


def test_the_deadline_shuts_down_only_the_reused_connection_of_its_own_call(
        server: HostileProvider) -> None:
    """Two clients each hold a kept-alive connection; the one whose reused connection drips
    ends by its deadline, the other's idle connection stays open and serves its next call."""
    server.script(Hostile.ok(keep_alive=True), Hostile.ok(keep_alive=True),
                  Hostile.drip_headers(0.2), Hostile.ok(keep_alive=True))
    with OpenAI(base_url=server.base_url, api_key="k",
                policy=Policy(deadline=1.5, max_attempts=1)) as dripped, \
            OpenAI(base_url=server.base_url, api_key="k",
                   policy=Policy(deadline=5, max_attempts=1)) as healthy:
        dripped.chat.completions.create(model="m", messages=MESSAGES)
        healthy.chat.completions.create(model="m", messages=MESSAGES)
        with pytest.raises(DeadlineExceeded), ends_by(1.5):
            dripped.chat.completions.create(model="m", messages=MESSAGES)
        answer = healthy.chat.completions.create(model="m", messages=MESSAGES)
    assert answer.choices[0].message.content == "hello"
    connections = [request.connection for request in server.requests]
    assert connections[2] == connections[0] and connections[3] == connections[1] \
        and connections[0] != connections[1]


@pytest.mark.parametrize("reused", [False, True])
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_read_timeout_longer_than_the_deadline_still_ends_by_it(
        server: HostileProvider, mode: str, reused: bool) -> None:
    """The SDK's read timeout (2.4 s) within a second of a 1.5 s deadline is sent unchanged;
    the deadline still ends a wait for a server that goes silent after its first byte."""
    server.script(*[Hostile.ok(keep_alive=True)] * reused, Hostile.drip_headers(10))
    policy = Policy(deadline=1.5, max_attempts=1)

    async def main() -> None:
        async with AsyncOpenAI(base_url=server.base_url, api_key="k", timeout=2.4,
                               policy=policy) as client:
            if reused:
                await client.chat.completions.create(model="m", messages=MESSAGES)
            with pytest.raises(DeadlineExceeded), ends_by(1.5):
                await client.chat.completions.create(model="m", messages=MESSAGES)

    if mode == "async":
        anyio.run(main)
    else:
        with OpenAI(base_url=server.base_url, api_key="k", timeout=2.4, policy=policy) as client:
            if reused:
                client.chat.completions.create(model="m", messages=MESSAGES)
            with pytest.raises(DeadlineExceeded), ends_by(1.5):
                client.chat.completions.create(model="m", messages=MESSAGES)
    assert len({request.connection for request in server.requests}) == 1


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_dripped_json_body_ends_by_the_deadline(server: HostileProvider, mode: str) -> None:
    server.script(*[Hostile.drip_body(0.2)] * 5)
    with pytest.raises(DeadlineExceeded) as info:
        CALLS[mode](server, 1.5)
    # both drivers: the wait that ran out, as the SDK's timeout (the sync watchdog ends it by
    # shutting the socket, and the "peer closed" that causes is not what happened)
    assert isinstance(info.value.cause, openai.APITimeoutError), repr(info.value.cause)


@pytest.mark.parametrize("content_type", ["text/html; charset=utf-8", ""])
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_dripped_non_json_200_ends_by_the_deadline(server: HostileProvider, mode: str,
                                                   content_type: str) -> None:
    server.script(*[Hostile.not_json(content_type=content_type, interval=0.2)] * 5)
    with pytest.raises(DeadlineExceeded):
        CALLS[mode](server, 1.5)


def stream_call(base_url: str, mode: str, **policy: Any) -> None:
    """Start a stream (the first attempt's failures surface here) and read it to its end."""
    if mode == "sync":
        with OpenAI(base_url=base_url, api_key="k", policy=Policy(**policy)) as client:
            for _ in client.chat.completions.create(model="m", messages=MESSAGES,
                                                    stream=True):
                pass
        return

    async def main() -> None:
        async with AsyncOpenAI(base_url=base_url, api_key="k", policy=Policy(**policy)) as client:
            stream = await client.chat.completions.create(model="m", messages=MESSAGES,
                                                          stream=True)
            async for _ in stream:
                pass

    anyio.run(main)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_first_token_timeouts_on_every_attempt_say_so(server: HostileProvider,
                                                      mode: str) -> None:
    server.script(*[Hostile.keepalive_stream(0.05)] * 2)
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError) as info:
        stream_call(server.base_url, mode, deadline=5, max_attempts=2, first_token_timeout=0.4)
    assert time.monotonic() - started < 0.8 + 2 + SLACK  # two limits and one backoff at most
    message = str(info.value)
    assert "timed out" in message.lower()
    assert "first-token limit" in message and "first_token_timeout" in message
    assert "peer closed" not in message


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_malformed_first_event_says_it_was_malformed(mode: str) -> None:
    provider = FaultProvider()
    provider.default = Fault.malformed_chunk(after_events=0)
    with provider.serve() as running:
        with pytest.raises(openai.APIConnectionError) as info:
            stream_call(running.openai_base_url, mode, deadline=5, max_attempts=2,
                        max_backoff=0.1)
    message = str(info.value)
    assert "malformed" in message and message != "Connection error."


def test_a_callers_trace_extension_still_runs_and_is_given_back(server: HostileProvider) -> None:
    seen: list[str] = []

    def trace(name: str, info: dict[str, Any]) -> None:
        seen.append(name)

    transport = ResilientTransport(policy=Policy(deadline=5))
    with httpx2.Client(transport=transport) as client:
        request = client.build_request("POST", server.base_url + "/chat/completions",
                                       json={"model": "m", "messages": MESSAGES},
                                       extensions={"trace": trace})
        response = client.send(request)
    assert response.json()["choices"][0]["message"]["content"] == "hello"
    assert "connection.connect_tcp.complete" in seen
    assert "http11.receive_response_headers.complete" in seen
    assert request.extensions["trace"] is trace


def test_the_send_guard_lets_go_once_a_reused_connections_head_is_written() -> None:
    """A kept-alive connection is found by its tagged write timeout as soon as the request's
    head is written; from the body on, httpcore calls the caller's own trace, not the guard."""
    hooks: dict[str, Any] = {}
    request: httpx2.Request | None = None

    def trace(name: str, info: dict[str, Any]) -> None:
        assert request is not None
        hooks[name] = request.extensions["trace"]

    transport = ResilientTransport(policy=Policy(deadline=5))
    with FaultProvider().serve() as running, httpx2.Client(transport=transport) as client:
        for _ in range(2):  # the second request reuses the first one's connection
            request = client.build_request("POST",
                                           running.openai_base_url + "/chat/completions",
                                           json={"model": "m", "messages": MESSAGES},
                                           extensions={"trace": trace})
            hooks.clear()
            assert client.send(request).status_code == 200
    assert "connection.connect_tcp.complete" not in hooks
    assert hooks["http11.send_request_headers.started"] is not trace  # the guard's
    assert hooks["http11.send_request_body.started"] is trace
    assert request is not None and request.extensions["trace"] is trace


def test_the_send_guard_leaves_no_trace_extension_behind(server: HostileProvider) -> None:
    transport = ResilientTransport(policy=Policy(deadline=5))
    with httpx2.Client(transport=transport) as client:
        request = client.build_request("POST", server.base_url + "/chat/completions",
                                       json={"model": "m", "messages": MESSAGES})
        assert client.send(request).status_code == 200
    assert "trace" not in request.extensions


def test_write_tags_are_distinct_and_within_a_millisecond_of_the_write_timeout() -> None:
    tags = [write_tag(2.5, 9.0) for _ in range(997)]
    assert len({round(tag * 1e6) for tag in tags}) == 997
    assert all(2.5 <= tag < 2.501 for tag in tags)
    assert 0 < write_tag(None, 0.0004) < 0.001  # no write timeout: what is left of the deadline
    assert 7.0 <= write_tag(None, 7.0) < 7.001


def test_a_tag_finds_the_one_socket_carrying_it_and_nothing_when_ambiguous() -> None:
    known = KnownSockets()
    pairs = [socket.socketpair() for _ in range(3)]
    try:
        mine, other, closed = (pair[0] for pair in pairs)
        for sock in (mine, other, closed):
            known.add(sock)
        tag = write_tag(1.0, 5.0)
        mine.settimeout(tag)
        other.settimeout(1.0)
        assert known.tagged(tag) is mine
        closed.settimeout(tag)
        closed.close()
        assert known.tagged(tag) is mine  # a closed socket is no candidate
        other.settimeout(tag)
        assert known.tagged(tag) is None  # two candidates: watch none rather than a stranger's
        assert known.tagged(write_tag(1.0, 5.0)) is None
    finally:
        for pair in pairs:
            for sock in pair:
                sock.close()


def test_each_transport_looks_up_only_its_own_pools_sockets() -> None:
    """The look-up of a reused connection scans what one pool holds: with many clients in a
    process (or many connections in another pool) a call does not pay for theirs."""
    transports = [ResilientTransport(policy=Policy(deadline=5)) for _ in range(2)]
    with FaultProvider().serve() as running:
        clients = [httpx2.Client(transport=transport) for transport in transports]
        for client in clients:
            for _ in range(3):  # one connection each, reused
                assert client.post(running.openai_base_url + "/chat/completions",
                                   json={"model": "m", "messages": MESSAGES}).status_code == 200
        known = [[ref() for ref in transport._sockets._known.values()]
                 for transport in transports]
        assert [len(sockets) for sockets in known] == [1, 1]
        assert known[0][0] is not known[1][0]
        for client in clients:
            client.close()


def test_a_socket_is_known_once_and_forgotten_when_it_goes() -> None:
    known = KnownSockets()
    first, second = socket.socketpair()
    try:
        known.add(first)
        known.add(first)  # seen again with a later response: still one entry
        first.settimeout(tag := write_tag(1.0, 5.0))
        assert known.tagged(tag) is first and len(known._known) == 1
    finally:
        first.close()
        second.close()
    del first
    gc.collect()
    assert known._known == {}  # dropped with its connection: no entry left behind


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX only")
def test_the_watchdog_bounds_reads_in_a_forked_child() -> None:
    reader, writer = socket.socketpair()
    guard_parent = SyncGuard.__new__(SyncGuard)  # start the parent's watchdog thread first
    guard_parent._watch = _WATCHDOG.watch(reader, time.monotonic() + 60, "deadline")
    pid = os.fork()
    if pid == 0:  # the child: the parent's thread is not here; a new watch must still fire
        code = 1
        try:
            child_reader, _child_writer = socket.socketpair()
            child_reader.settimeout(3)  # without a watchdog: a timeout, not a hang
            watch = _WATCHDOG.watch(child_reader, time.monotonic() + 0.05, "deadline")
            started = time.monotonic()
            data = child_reader.recv(1)  # no byte ever comes: only a shutdown ends this read
            code = 0 if data == b"" and watch.fired and time.monotonic() - started < 5 else 2
        finally:
            os._exit(code)
    try:
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        guard_parent.close()
        reader.close()
        writer.close()


def test_a_watchdog_thread_that_could_not_start_is_started_by_the_next_watch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    watchdog = _Watchdog()
    real_start = threading.Thread.start

    def refuse(thread: threading.Thread) -> None:
        monkeypatch.setattr(threading.Thread, "start", real_start)  # only this once
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    reader, writer = socket.socketpair()
    try:
        with pytest.raises(RuntimeError, match="can't start new thread"):
            watchdog.watch(reader, time.monotonic() + 60, "deadline")
        reader.settimeout(3)  # without a watchdog: a timeout, not a hang
        watch = watchdog.watch(reader, time.monotonic() + 0.05, "deadline")
        assert reader.recv(1) == b"" and watch.fired  # only a shutdown ends this read
    finally:
        reader.close()
        writer.close()


def test_a_finished_watch_lets_go_of_its_socket_and_its_instant_passes_quietly() -> None:
    """A finished watch stays in the heap until its instant (the default deadline is a minute
    away): it held its socket meanwhile, so the socket objects of every call of the last
    minute stayed alive. Now it lets go at once; the instant coming shuts nothing down, and
    the watchdog goes on serving the next watch."""
    import weakref

    watchdog = _Watchdog()
    reader, writer = socket.socketpair()
    watch = watchdog.watch(reader, time.monotonic() + 0.05, "deadline")
    watch.finish()
    assert watch.sock is None and watch.done
    gone = weakref.ref(reader)
    reader.close()
    del reader
    gc.collect()
    assert gone() is None  # nothing of the watchdog's holds the socket
    until = time.monotonic() + 5  # the thread drops the finished watch at its instant:
    while watchdog._heap and time.monotonic() < until:  # wait for that, not a guessed time
        time.sleep(0.005)
    assert not watchdog._heap
    assert not watch.fired
    other, other_writer = socket.socketpair()
    try:
        other.settimeout(3)  # without a watchdog: a timeout, not a hang
        live = watchdog.watch(other, time.monotonic() + 0.05, "deadline")
        assert other.recv(1) == b"" and live.fired  # only a shutdown ends this read
    finally:
        for sock in (other, other_writer, writer):
            sock.close()


def test_the_send_guard_gives_the_tagged_timeouts_back() -> None:
    timeouts = {"connect": 1.0, "read": 2.0, "write": 3.0, "pool": 4.0}
    request = httpx2.Request("POST", "http://127.0.0.1:9/v1/x", extensions={"timeout": timeouts})
    guard = SendGuard(request, time.monotonic() + 5, KnownSockets())
    request.extensions["trace"]("http11.send_request_headers.started", {"request": request})
    tagged = request.extensions["timeout"]
    assert tagged is not timeouts and tagged["write"] != 3.0 and 3.0 <= tagged["write"] < 3.001
    assert {**tagged, "write": 3.0} == timeouts and timeouts["write"] == 3.0
    guard.close()
    assert request.extensions["timeout"] is timeouts and "trace" not in request.extensions
