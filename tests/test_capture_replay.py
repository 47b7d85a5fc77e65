"""Opt-in capture of the exact requests sent, and ``replay`` against another model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from resilient_llm import Policy, outcome
from resilient_llm.__main__ import main
from resilient_llm.openai import OpenAI
from resilient_llm.telemetry.replay import read_capture, replay
from resilient_llm.testing import FakeClock, FakeRandom, Fault, FaultProvider, Usage

KEY = "sk-capture-test-key-000111222333"
MESSAGES: Any = [{"role": "user", "content": "hi"}]
FALLBACKS = {"gpt-4.1": ["gpt-4.1-mini"]}


def make_client(provider: FaultProvider, **policy: Any) -> OpenAI:
    client = OpenAI(api_key=KEY, base_url="http://capture.test/v1", policy=Policy(**policy),
                    http_client=httpx2.Client(transport=provider.transport()))
    client._resilient_clock = FakeClock()
    client._resilient_rng = FakeRandom(fixed=0.5)
    return client


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(text) for text in path.read_text("utf-8").splitlines()]


def record_twenty(provider: FaultProvider, path: Path) -> list[str]:
    """20 calls of every kind: plain, retried, degraded, streamed, failed. Returns outcomes."""
    provider.script(Fault.status(500), Fault.ok(), model="gpt-4.1")  # call 3: retried
    kinds: list[str] = []
    with make_client(provider, capture_file=str(path), fallbacks=FALLBACKS) as client:
        for i in range(20):
            if i == 7:  # degraded: gpt-4.1 overloaded, gpt-4.1-mini answers
                provider.script(Fault.status(503), model="gpt-4.1")
            if i == 11:
                stream = client.chat.completions.create(
                    model="gpt-4.1", messages=[{"role": "user", "content": f"q{i}"}],
                    stream=True, stream_options={"include_usage": True})
                kinds.append("stream:" + "".join(
                    c.choices[0].delta.content or "" for c in stream if c.choices))
                continue
            if i == 15:
                provider.script(Fault.status(400, message="bad request"), model="gpt-4.1")
                with pytest.raises(openai.BadRequestError):
                    client.chat.completions.create(
                        model="gpt-4.1", messages=[{"role": "user", "content": f"q{i}"}])
                kinds.append("failed")
                continue
            answer = client.chat.completions.create(
                model="gpt-4.1", messages=[{"role": "user", "content": f"q{i}"}])
            report = outcome(answer)
            kinds.append("degraded" if report.degraded else
                         "retried" if report.retries else "ok")
    return kinds


def test_nothing_is_captured_unless_asked(tmp_path: Path) -> None:
    provider = FaultProvider()
    with make_client(provider) as client:
        client.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
    assert list(tmp_path.iterdir()) == []


def test_one_line_per_call_with_the_request_exactly_as_sent(tmp_path: Path) -> None:
    path = tmp_path / "calls.jsonl"
    provider = FaultProvider()
    kinds = record_twenty(provider, path)
    assert kinds.count("retried") == 1 and kinds.count("degraded") == 1
    captured = lines(path)
    assert len(captured) == 20
    assert all(line["schema"] == "resilient_llm.capture/1" for line in captured)

    # The last request each call sent, as the provider saw it (after the fallback rewrite).
    last_sent: dict[str, Any] = {}
    for seen in provider.requests:
        last_sent[seen.headers["idempotency-key"]] = seen
    for line in captured:
        request = line["request"]
        key = request["headers"]["idempotency-key"]
        seen = last_sent[key]
        assert request["body"] == seen.json
        assert request["url"].endswith("/v1/chat/completions")
        expected = {k.lower(): v for k, v in seen.headers.items()
                    if k.lower() not in ("authorization",)}
        assert request["headers"] == expected
        assert "authorization" not in request["headers"]

    degraded = captured[kinds.index("degraded")]
    assert degraded["request"]["body"]["model"] == "gpt-4.1-mini"
    assert degraded["call"]["served_by"] == "gpt-4.1-mini" and degraded["call"]["degraded"]
    assert [a["failure"] for a in degraded["call"]["attempts"]] == ["overloaded", None]
    assert degraded["response"]["status"] == 200
    assert degraded["response"]["body"]["model"] == "gpt-4.1-mini"

    retried = captured[kinds.index("retried")]
    assert [a["status"] for a in retried["call"]["attempts"]] == [500, 200]

    failed = captured[kinds.index("failed")]
    assert failed["call"]["error"] == "invalid_request"
    assert failed["response"]["status"] == 400
    assert failed["response"]["body"]["error"]["message"] == "bad request"

    streamed = captured[11]
    assert streamed["request"]["body"]["stream"] is True
    assert "data: [DONE]" in streamed["response"]["stream"]
    assert streamed["call"]["usage"]["output_tokens"] > 0

    assert KEY not in path.read_text("utf-8")


def test_replay_pairs_every_original_with_its_replay(tmp_path: Path) -> None:
    path = tmp_path / "calls.jsonl"
    kinds = record_twenty(FaultProvider(), path)
    target = FaultProvider()
    target.set_default(Fault.ok(text="nano says hi", usage=Usage(input_tokens=9,
                                                                 output_tokens=3)))
    summary = replay(str(path), model="gpt-4.1-nano", api_key="sk-replay",
                     transport=target.transport(),
                     policy=Policy(prices={"gpt-4.1-nano": {"input": 0.1, "output": 0.4}}))
    assert (summary.replayed, summary.skipped, summary.failed) == (20, 0, 0)
    pairs = lines(Path(summary.out))
    assert summary.out == f"{path}.replay-gpt-4.1-nano.jsonl"
    assert [p["index"] for p in pairs] == list(range(20))
    originals = lines(path)
    for pair, original, kind in zip(pairs, originals, kinds, strict=True):
        assert pair["original"]["model"] == original["request"]["body"]["model"]
        assert pair["original"]["served_by"] == original["call"]["served_by"]
        assert pair["replay"]["model"] == pair["replay"]["served_by"] == "gpt-4.1-nano"
        assert pair["replay"]["status"] == 200 and pair["replay"]["error"] is None
        assert pair["replay"]["text"] == "nano says hi"
        assert pair["replay"]["usage"]["input_tokens"] == 9
        assert pair["replay"]["cost"] == pytest.approx((9 * 0.1 + 3 * 0.4) / 1e6)
        if kind == "failed":
            assert pair["original"]["error"] == "invalid_request"
        elif kind.startswith("stream:"):
            assert pair["original"]["text"] == kind.removeprefix("stream:")
        else:
            assert pair["original"]["text"]
    sent = target.requests
    assert len(sent) == 20 and {r.model for r in sent} == {"gpt-4.1-nano"}
    assert all(r.headers["authorization"] == "Bearer sk-replay" for r in sent)
    original_keys = {line["request"]["headers"]["idempotency-key"] for line in originals}
    assert not original_keys & {r.headers["idempotency-key"] for r in sent}
    assert [r.json["messages"] for r in sent] == [
        line["request"]["body"]["messages"] for line in originals]
    assert sent[11].stream


def test_replay_command_over_loopback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "calls.jsonl"
    with make_client(FaultProvider(), capture_file=str(path)) as client:
        for i in range(3):
            client.chat.completions.create(model="gpt-4.1",
                                           messages=[{"role": "user", "content": f"q{i}"}])
    path.write_text(path.read_text("utf-8") + "not json\n", "utf-8")
    out = tmp_path / "pairs.jsonl"
    target = FaultProvider()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    with target.serve() as server:
        code = main(["replay", str(path), "--model", "gpt-4.1-nano", "--out", str(out),
                     "--base-url", server.url])
    assert code == 0
    printed = capsys.readouterr().out
    assert "replayed 3 call(s) against gpt-4.1-nano: 3 answered, 0 failed, 1 line(s) skipped" \
        in printed
    assert "line 4: not a JSON line" in printed
    assert len(lines(out)) == 3
    assert [r.model for r in target.requests] == ["gpt-4.1-nano"] * 3
    assert target.requests[0].headers["authorization"] == "Bearer sk-from-env"


def test_replay_refuses_what_it_cannot_replay(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join([
        json.dumps({"schema": "something/else"}),
        json.dumps({"schema": "resilient_llm.capture/1", "request": {"body_text": "x"}}),
    ]) + "\n", "utf-8")
    problems = [problem for _, _, problem in read_capture(str(path))]
    assert problems == ["not a resilient_llm capture line",
                        "no replayable JSON request body was recorded"]
    with pytest.raises(ValueError, match="model"):
        replay(str(path), model=" ")


def test_a_capture_failure_is_logged_and_the_stream_still_reaches_the_caller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    from resilient_llm.telemetry import capture as _capture

    def broken(*args: Any) -> Any:
        raise RuntimeError("a bug in the capture tee")

    monkeypatch.setattr(_capture, "_SyncTee", broken)
    provider = FaultProvider()
    with make_client(provider, capture_file=str(tmp_path / "c.jsonl")) as client:
        stream = client.chat.completions.create(model="gpt-4.1", messages=MESSAGES, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text  # the call went on, unretried, with its answer
    assert len(provider.requests) == 1
    assert "capture of a streamed response failed" in caplog.text
