"""The hostile provider does what it promises, on a real loopback socket."""

from __future__ import annotations

import gzip
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import openai
import pytest

from resilient_llm import Policy
from resilient_llm.openai import OpenAI
from resilient_llm.testing import Hostile, HostileProvider

MESSAGES: Any = [{"role": "user", "content": "hi"}]


@pytest.fixture
def server() -> Iterator[HostileProvider]:
    with HostileProvider(max_seconds=20) as provider:
        yield provider


def post(server: HostileProvider, path: str = "/chat/completions",
         **json: object) -> httpx2.Response:
    with httpx2.Client(timeout=10) as client:
        response: httpx2.Response = client.post(server.base_url + path,
                                                json={"model": "m", **json})
        return response


def test_ok_answers_parse_in_the_official_sdks(server: HostileProvider) -> None:
    with openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0) as client:
        answer = client.chat.completions.create(model="m", messages=MESSAGES)
        assert answer.choices[0].message.content == "hello"
        chunks = list(client.chat.completions.create(model="m", messages=MESSAGES,
                                                     stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "hello"
    assert server.requests[0].json["model"] == "m"


def test_dripped_headers_and_bodies_arrive_byte_by_byte(server: HostileProvider) -> None:
    server.script(Hostile.drip_headers(0.002), Hostile.drip_body(0.002))
    for _ in range(2):
        started = time.monotonic()
        response = post(server)
        assert response.json()["choices"][0]["message"]["content"] == "hello"
        assert time.monotonic() - started > 0.002 * 60  # dozens of single-byte sends


def test_non_json_200s(server: HostileProvider) -> None:
    server.script(Hostile.not_json(), Hostile.not_json(content_type=""))
    html = post(server)
    assert html.status_code == 200 and html.text.startswith("<html>")
    assert html.headers["content-type"].startswith("text/html")
    bare = post(server)
    assert bare.status_code == 200 and "content-type" not in bare.headers


def test_gzip_and_gzip_bombs(server: HostileProvider) -> None:
    size = 8 * 1024 * 1024
    server.script(Hostile.gzip(), Hostile.gzip_bomb(size=size))
    assert post(server).json()["choices"][0]["message"]["content"] == "hello"
    with httpx2.Client(timeout=10) as client, \
            client.stream("POST", server.base_url + "/chat/completions", json={}) as response:
        assert response.headers["content-encoding"] == "gzip"
        wire = int(response.headers["content-length"])
        inflated = sum(len(part) for part in response.iter_bytes())
    assert wire < size / 100 and inflated == size


def test_huge_content_length_streams_until_the_client_stops(server: HostileProvider) -> None:
    server.script(Hostile.huge_content_length())
    with httpx2.Client(timeout=10) as client, \
            client.stream("POST", server.base_url + "/chat/completions", json={}) as response:
        assert response.headers["content-length"] == str(100 * 1024**3)
        received = 0
        for part in response.iter_raw():
            received += len(part)
            if received > 4 * 1024 * 1024:
                break
    assert received > 4 * 1024 * 1024


def test_keepalive_only_streams(server: HostileProvider) -> None:
    server.script(Hostile.keepalive_stream(0.01))
    lines = []
    with httpx2.Client(timeout=10) as client, \
            client.stream("POST", server.base_url + "/chat/completions",
                          json={"stream": True}) as response:
        for line in response.iter_lines():
            if line:
                lines.append(line)
            if len(lines) == 5:
                break
    assert lines == [": keep-alive"] * 5


def test_gzip_compressed_sse_is_a_valid_stream(server: HostileProvider) -> None:
    server.script(Hostile.gzip_stream())
    with httpx2.Client(timeout=10) as client, \
            client.stream("POST", server.base_url + "/chat/completions",
                          json={"stream": True}) as response:
        raw = b"".join(response.iter_raw())
        assert response.headers["content-encoding"] == "gzip"
    assert gzip.decompress(raw).endswith(b"data: [DONE]\n\n")


def test_absurd_rate_limit_headers_do_not_break_a_call(server: HostileProvider) -> None:
    server.script(Hostile.absurd_rate_limits())
    with OpenAI(base_url=server.base_url, api_key="k", policy=Policy(deadline=5)) as client:
        answer = client.chat.completions.create(model="m", messages=MESSAGES)
    assert answer.choices[0].message.content == "hello"
    assert server.requests  # the headers really were sent


def test_max_seconds_ends_a_drip_without_sending_the_rest() -> None:
    """The bound cuts the answer where it is: the head dripped so far, never the body after it
    (a cut head followed by a whole JSON body), and a pause longer than the bound is cut too."""
    with HostileProvider(max_seconds=0.5) as server:
        server.script(Hostile.drip_headers(5.0))
        began = time.monotonic()
        with httpx2.Client(timeout=10) as client, pytest.raises(httpx2.TransportError):
            client.post(server.base_url + "/chat/completions", json={"model": "m"})
        assert time.monotonic() - began < 1.5  # not the 5 s pause


@pytest.mark.parametrize("build", [
    lambda: Hostile.drip_headers(-1), lambda: Hostile.drip_body(float("nan")),
    lambda: Hostile.keepalive_stream(float("inf")), lambda: Hostile.gzip_bomb(size=-1),
    lambda: Hostile.huge_content_length(size=-1), lambda: HostileProvider(max_seconds=0),
    lambda: HostileProvider(max_seconds=float("nan")),
])
def test_bad_hostile_arguments_are_refused(build: Any) -> None:
    with pytest.raises(ValueError, match="must be"):
        build()
