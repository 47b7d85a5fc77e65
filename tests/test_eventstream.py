"""Amazon's binary event-stream framing (Bedrock streams): the sans-IO decoder and the scanner
the drivers guard such a stream with, fed in pieces of every size.

The frames are checked against botocore's own decoder (what the anthropic SDK parses Bedrock
streams with), so the framing here is the one on the wire, not one of our own invention.
"""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import pytest

from resilient_llm.engine.classify import FailureClass
from resilient_llm.providers import ANTHROPIC
from resilient_llm.providers._eventstream import (
    EventStreamDecoder,
    EventStreamScanner,
    FramingError,
    encode_message,
    is_aws_event_stream,
)

MESSAGES: list[dict[str, Any]] = [
    {"type": "message_start", "message": {
        "id": "m1", "type": "message", "role": "assistant", "model": "claude", "content": [],
        "stop_reason": None, "usage": {"input_tokens": 7, "output_tokens": 1}}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "lo"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}},
    {"type": "message_stop"},
]


def chunk(event: dict[str, Any]) -> bytes:
    payload = json.dumps({"bytes": base64.b64encode(json.dumps(event).encode()).decode()})
    return encode_message({":event-type": "chunk", ":content-type": "application/json",
                           ":message-type": "event"}, payload.encode())


def exception(name: str, message: str) -> bytes:
    return encode_message({":message-type": "exception", ":exception-type": name,
                           ":content-type": "application/json"},
                          json.dumps({"message": message}).encode())


def splits(data: bytes) -> list[list[bytes]]:
    """``data`` whole, byte by byte, and cut in two at every position."""
    return [[data], [data[i:i + 1] for i in range(len(data))],
            *([data[:i], data[i:]] for i in range(1, len(data)))]


def test_frames_decode_however_the_bytes_are_split() -> None:
    frames = chunk(MESSAGES[2]) + exception("throttlingException", "slow down")
    for pieces in splits(frames):
        decoder = EventStreamDecoder()
        messages = [m for piece in pieces for m in decoder.feed(piece)]
        assert decoder.pending == 0
        assert [m.header(":message-type") for m in messages] == ["event", "exception"]
        assert messages[1].header(":exception-type") == "throttlingException"
        outer = json.loads(messages[0].payload)
        assert json.loads(base64.b64decode(outer["bytes"])) == MESSAGES[2]


def test_our_frames_are_the_ones_botocore_reads() -> None:
    from botocore.eventstream import EventStreamBuffer

    buffer = EventStreamBuffer()
    buffer.add_data(chunk(MESSAGES[0]) + exception("modelStreamErrorException", "boom"))
    first, second = list(buffer)
    assert first.headers[":event-type"] == "chunk"
    assert json.loads(base64.b64decode(json.loads(first.payload)["bytes"])) == MESSAGES[0]
    assert second.to_response_dict()["status_code"] == 400
    assert second.headers[":exception-type"] == "modelStreamErrorException"


def test_every_header_value_type_is_read() -> None:
    block = bytearray()
    values: list[tuple[str, int, bytes]] = [
        ("t", 0, b""), ("f", 1, b""), ("b", 2, struct.pack(">b", -3)),
        ("s", 3, struct.pack(">h", 300)), ("i", 4, struct.pack(">i", -70000)),
        ("l", 5, struct.pack(">q", 2**40)), ("y", 6, struct.pack(">H", 2) + b"\x00\x01"),
        ("str", 7, struct.pack(">H", 2) + b"ok"), ("ts", 8, struct.pack(">q", 1700000000000)),
        ("u", 9, bytes(range(16))),
    ]
    for name, kind, raw in values:
        block += bytes([len(name)]) + name.encode() + bytes([kind]) + raw
    frame = _frame(bytes(block), b"{}")
    (message,) = EventStreamDecoder().feed(frame)
    assert dict(message.headers) == {
        "t": True, "f": False, "b": -3, "s": 300, "i": -70000, "l": 2**40, "y": b"\x00\x01",
        "str": "ok", "ts": 1700000000000, "u": bytes(range(16))}
    assert message.payload == b"{}"


def _frame(headers: bytes, payload: bytes) -> bytes:
    import binascii

    prelude = struct.pack(">II", 16 + len(headers) + len(payload), len(headers))
    body = prelude + struct.pack(">I", binascii.crc32(prelude)) + headers + payload
    return body + struct.pack(">I", binascii.crc32(body))


@pytest.mark.parametrize("where,reason", [(-1, "message CRC mismatch"),
                                          (9, "prelude CRC mismatch")])
def test_a_crc_mismatch_is_a_framing_error_and_stays_one(where: int, reason: str) -> None:
    frame = bytearray(chunk(MESSAGES[2]))
    frame[where] ^= 0x01
    decoder = EventStreamDecoder()
    with pytest.raises(FramingError, match=reason):
        decoder.feed(bytes(frame))
    with pytest.raises(FramingError):
        decoder.feed(chunk(MESSAGES[3]))  # nothing after a broken frame is trusted


def test_impossible_lengths_are_refused_before_waiting_for_them() -> None:
    import binascii

    prelude = struct.pack(">II", 64 * 1024 * 1024, 0)
    with pytest.raises(FramingError, match="impossible frame lengths"):
        EventStreamDecoder().feed(prelude + struct.pack(">I", binascii.crc32(prelude)))


def test_the_content_type_is_recognised() -> None:
    assert is_aws_event_stream("application/vnd.amazon.eventstream")
    assert is_aws_event_stream("Application/VND.Amazon.EventStream; charset=binary")
    assert not is_aws_event_stream("text/event-stream")


# --- the scanner: the same answers as for server-sent events ---------------------------------


def scan(pieces: list[bytes]) -> EventStreamScanner:
    scanner = EventStreamScanner(ANTHROPIC)
    for piece in pieces:
        scanner.feed(piece)
    return scanner


def test_a_complete_stream_is_output_text_usage_and_end_in_any_split() -> None:
    stream = b"".join(chunk(event) for event in MESSAGES)
    for pieces in splits(stream)[:40]:
        scanner = scan(pieces)
        scanner.finish()
        assert scanner.failure is None and scanner.committed and scanner.complete
        assert scanner.text == "Hello" and scanner.events == len(MESSAGES)
        assert scanner.usage == {"input_tokens": 7, "output_tokens": 2}


def test_output_commits_at_the_first_content_frame_only() -> None:
    scanner = scan([chunk(event) for event in MESSAGES[:2]])
    assert (scanner.committed, scanner.events) == (False, 2)
    scanner.feed(chunk(MESSAGES[2]))
    assert (scanner.committed, scanner.complete) == (True, False)


@pytest.mark.parametrize("name,message,kind", [
    ("throttlingException", "Too many tokens, please wait", FailureClass.RATE_LIMITED),
    ("serviceUnavailableException", "try later", FailureClass.OVERLOADED),
    ("modelStreamErrorException", "the model stream failed", FailureClass.SERVER_ERROR),
    ("internalServerException", "oops", FailureClass.SERVER_ERROR),
    ("modelTimeoutException", "took too long", FailureClass.TIMEOUT),
    ("validationException", "Input is too long for requested model.",
     FailureClass.CONTEXT_LENGTH),
    ("validationException", "bad field", FailureClass.INVALID_REQUEST),
    ("somethingNewException", "?", FailureClass.SERVER_ERROR),
])
def test_an_exception_frame_is_its_http_twins_failure(name: str, message: str,
                                                      kind: FailureClass) -> None:
    scanner = scan([chunk(MESSAGES[0]), exception(name, message), chunk(MESSAGES[2])])
    failure = scanner.failure
    assert failure is not None and failure.kind is kind
    assert failure.status is None, "nothing but 200 was on the wire"
    assert failure.code == name[0].upper() + name[1:]
    assert not scanner.committed, "nothing after the exception is read"


def test_an_error_frame_names_its_code_in_headers() -> None:
    frame = encode_message({":message-type": "error", ":error-code": "ThrottlingException",
                            ":error-message": "slow down"}, b"")
    failure = scan([frame]).failure
    assert failure is not None and failure.kind is FailureClass.RATE_LIMITED


def test_a_crc_mismatch_is_a_malformed_stream() -> None:
    frame = bytearray(chunk(MESSAGES[2]))
    frame[-2] ^= 0x10
    scanner = scan([chunk(MESSAGES[0]), bytes(frame)])
    assert scanner.failure is not None
    assert scanner.failure.kind is FailureClass.STREAM_MALFORMED
    assert "CRC" in scanner.failure.message
    assert scanner.failure.retryable


def test_a_chunk_that_is_not_base64_json_is_malformed() -> None:
    frame = encode_message({":message-type": "event", ":event-type": "chunk"},
                           b'{"bytes": "not base64!"}')
    failure = scan([frame]).failure
    assert failure is not None and failure.kind is FailureClass.STREAM_MALFORMED


def test_a_body_that_ends_inside_a_frame_is_a_cut() -> None:
    whole = chunk(MESSAGES[0]) + chunk(MESSAGES[2])
    scanner = scan([whole[:-5]])
    assert (scanner.committed, scanner.failure) == (False, None)
    scanner.finish()
    failure = scanner.failure
    assert failure is not None and failure.kind is FailureClass.STREAM_CUT


def test_a_clean_end_without_the_stop_reason_is_not_complete() -> None:
    scanner = scan([chunk(event) for event in MESSAGES[:4]])
    scanner.finish()
    assert scanner.failure is None and scanner.committed and not scanner.complete


def test_a_binary_stream_is_never_spliced() -> None:
    with pytest.raises(TypeError, match="not recovered"):
        EventStreamScanner(ANTHROPIC).events_of(chunk(MESSAGES[0]))
