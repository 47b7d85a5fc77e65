"""Response bodies measured as they are decoded, within ``Policy.max_response_bytes``.

A body of a few kilobytes can inflate to gigabytes (a gzip bomb) and a ``Content-Length`` can
announce 100 GB: both must fail fast, with memory bounded by the cap, rather than exhaust the
process. The drivers read JSON and error bodies through :func:`read_capped` /
:func:`aread_capped`, and hand a stream's chunks to the inspector through :class:`EventView`,
which also decodes a compressed stream (the inspector must see events, not gzip). Decoding for
the caller stays httpx2's: these only measure, in pieces of at most 1 MiB, and keep nothing.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence

import httpx2

from .._errors import ResponseTooLarge

__all__ = ["EventView", "aread_capped", "check_declared", "read_capped"]

_PIECE = 1024 * 1024  # the most one decompression step produces


class Inflater:
    """Decodes one ``Content-Encoding`` (identity, gzip, deflate) incrementally, in pieces.

    Other encodings (br, zstd) pass through undecoded; a corrupt body stops decoding here
    (``broken``) and is left for httpx2's decoder to report as the official client would.
    """

    __slots__ = ("_deflate", "_started", "_z", "broken", "transparent")

    def __init__(self, encoding: str) -> None:
        coding = encoding.strip().lower()
        self.transparent = coding not in ("gzip", "x-gzip", "deflate")
        self._deflate = coding == "deflate"
        self._z = None if self.transparent else zlib.decompressobj(
            zlib.MAX_WBITS if self._deflate else zlib.MAX_WBITS | 16)
        self._started = False
        self.broken = False

    def pieces(self, data: bytes) -> Iterator[bytes]:
        """The decoded bytes of ``data``, at most 1 MiB per piece."""
        z = self._z
        if z is None or self.broken:
            if z is None:
                yield data
            return
        try:
            out = z.decompress(data, _PIECE)
        except zlib.error:
            if self._deflate and not self._started:  # deflate without its zlib header
                self._z = zlib.decompressobj(-zlib.MAX_WBITS)
                self._started = True
                yield from self.pieces(data)
                return
            self.broken = True
            return
        self._started = True
        while True:
            if out:
                yield out
            if not z.unconsumed_tail:
                return
            try:
                out = z.decompress(z.unconsumed_tail, _PIECE)
            except zlib.error:
                self.broken = True
                return


def _too_large(limit: int, what: str) -> ResponseTooLarge:
    return ResponseTooLarge(
        f"the response {what} exceeds max_response_bytes ({limit} bytes); if such answers are "
        "expected, raise RESILIENT_LLM_MAX_RESPONSE_BYTES or Policy(max_response_bytes=...)",
        limit=limit,
    )


def _framing(response: httpx2.Response) -> tuple[str, str]:
    """The ``Content-Length`` and ``Content-Encoding`` of ``response`` ("" when absent; a
    repeated header's values joined by ", ", as ``Headers.get`` gives them), read in one pass
    over the raw headers: a ``Headers.get`` scans them all, and raises inside for a miss."""
    length: list[str] = []
    coding: list[str] = []
    for name, value in response.headers.raw:
        lowered = name.lower()
        if lowered == b"content-length":
            length.append(value.decode("latin-1"))
        elif lowered == b"content-encoding":
            coding.append(value.decode("latin-1"))
    return ", ".join(length), ", ".join(coding)


def check_declared(declared: str, limit: int) -> None:
    """Refuse at once a body whose ``Content-Length`` (``declared``) already exceeds the cap."""
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit, f"body (Content-Length {int(declared)})")


class _Meter:
    """Counts a body's bytes, raw and decoded, against the cap."""

    __slots__ = ("_inflater", "decoded", "limit", "raw")

    def __init__(self, response: httpx2.Response, limit: int) -> None:
        length, coding = _framing(response)
        check_declared(length, limit)
        self._inflater = Inflater(coding)
        self.limit = limit
        self.raw = 0
        self.decoded = 0

    def feed(self, chunk: bytes) -> None:
        self.raw += len(chunk)
        if self.raw > self.limit:
            raise _too_large(self.limit, "body")
        if self._inflater.transparent:
            return
        for piece in self._inflater.pieces(chunk):
            self.decoded += len(piece)
            if self.decoded > self.limit:
                raise _too_large(self.limit, "body, decoded,")


def _replaced(response: httpx2.Response, raw: Sequence[bytes]) -> None:
    response.stream = httpx2.ByteStream(b"".join(raw))


def read_capped(response: httpx2.Response, limit: int) -> bytes:
    """``response.read()``, refusing a body over ``limit`` bytes (raw or decoded) as it comes."""
    inner = response.stream
    assert isinstance(inner, httpx2.SyncByteStream)
    meter = _Meter(response, limit)
    raw: list[bytes] = []
    try:
        for chunk in inner:
            meter.feed(chunk)
            raw.append(chunk)
    finally:
        inner.close()
    _replaced(response, raw)
    return response.read()


async def aread_capped(response: httpx2.Response, limit: int) -> bytes:
    """The async twin of :func:`read_capped`."""
    inner = response.stream
    assert isinstance(inner, httpx2.AsyncByteStream)
    meter = _Meter(response, limit)
    raw: list[bytes] = []
    try:
        async for chunk in inner:
            meter.feed(chunk)
            raw.append(chunk)
    finally:
        await inner.aclose()
    _replaced(response, raw)
    return await response.aread()


class EventView:
    """What the stream inspector reads of each chunk: the decoded bytes, in bounded pieces,
    with every event (the bytes between two blank lines) at most ``limit`` bytes."""

    __slots__ = ("_inflater", "_pending", "limit")

    def __init__(self, response: httpx2.Response, limit: int) -> None:
        self._inflater = Inflater(_framing(response)[1])
        self.limit = limit
        self._pending = 0

    def __call__(self, chunk: bytes) -> Iterator[bytes]:
        for piece in self._inflater.pieces(chunk):
            end = max(piece.rfind(b"\n\n"), piece.rfind(b"\r\n\r\n"), piece.rfind(b"\r\r"))
            self._pending = len(piece) - end if end >= 0 else self._pending + len(piece)
            if self._pending > self.limit:
                raise _too_large(self.limit, "stream event")
            yield piece
