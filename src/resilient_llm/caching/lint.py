"""``lint_prompt``: volatile content in the cacheable prefix, found before the request is sent.

A timestamp, UUID, request id or random nonce in the system prompt (or tools) changes the
prefix on every request, so the provider's prompt cache never hits and the prompt-cache key
changes every call. Per-user fields placed before shared instructions make the prefix per
user. This module finds them in the stable prefix (see :mod:`resilient_llm.caching.keys`), with
a location and a fix hint, and never repeats the prompt beyond a short masked excerpt.

Scanning is done on UTF-8 bytes with literal-anchored searches (``:``, ``id``, runs of token
characters), which are an order of magnitude faster in ``re`` than character-class scans, and
results are memoised per text: a prompt string reused across calls is scanned once.
"""

from __future__ import annotations

import itertools
import logging
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from .._errors import PromptLintError
from .keys import Provider, _head, _Segment, _shape

__all__ = ["Finding", "FindingKind", "LintMode", "PromptLintError", "check_prompt", "lint_prompt"]

FindingKind = Literal[
    "timestamp", "epoch", "uuid", "request_id", "nonce", "per_user_data", "volatile_cache_key"
]
LintMode = Literal["off", "warn", "strict"]

_log = logging.getLogger("resilient_llm")

_HINTS: Mapping[str, str] = {
    "timestamp": "a date-time changes the prefix on every request: move it after the cached "
                 "prefix (after the last breakpoint, or into the latest user message), or round "
                 "it to the day",
    "epoch": "an epoch time changes the prefix on every request: move it after the cached "
             "prefix (into the latest user message) or drop it",
    "uuid": "a per-request UUID makes every request a cache miss: send it in headers or "
            "metadata, or after the cached prefix",
    "request_id": "request/trace/session ids belong in headers or metadata, not in the prompt "
                  "prefix",
    "nonce": "a random token changes the prefix on every request: move it after the cached "
             "prefix or drop it (ignore if the value never changes)",
    "per_user_data": "per-user fields before shared instructions make the prefix per user: put "
                     "shared instructions first and user data last (end of the system prompt "
                     "or the first user message)",
    "volatile_cache_key": "the prompt_cache_key holds a per-request value, so requests never "
                          "share it: derive it from the prompt template, or leave it unset and "
                          "let resilient-llm set a deterministic one",
}
_PRIORITY: Mapping[str, int] = {
    "timestamp": 0, "epoch": 1, "uuid": 2, "request_id": 3, "per_user_data": 4, "nonce": 5,
}


@dataclass(frozen=True, slots=True)
class Finding:
    """Volatile content in the cacheable prefix.

    ``location`` names the field and the character offset in it (``system[0].text@123``,
    ``messages[0].content@7``, ``tools[2].function.description@40``). ``excerpt`` shows at
    most 20 characters either side with the volatile value replaced by ``‹kind›``: prompt
    text is sensitive, so no finding, log line or exception carries more of it.
    """

    kind: FindingKind
    location: str
    excerpt: str
    hint: str


# --- scanning one text ----------------------------------------------------------------------------

class _Hit(NamedTuple):
    kind: FindingKind
    start: int  # character offsets into the text
    end: int
    epoch: float  # seconds since 1970 for "epoch" hits, else 0.0


_DIGITS = frozenset(b"0123456789")
_ISO = re.compile(
    rb"(?<![0-9A-Za-z])[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}"
    rb"(?::[0-9]{2}(?:[.,][0-9]{1,9})?)?(?:Z|[+-][0-9]{2}:?[0-9]{2}| ?UTC)?(?![0-9])"
)
_ZONE = rb"(?:[+-][0-9]{4}|GMT|UTC|UT|Z|[ECMP][SD]T)"
_RFC2822 = re.compile(
    rb"(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)[a-z]*,? +)?[0-9]{1,2} +"
    rb"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]* +[0-9]{4},? +"
    rb"[0-9]{2}:[0-9]{2}(?::[0-9]{2} *" + _ZONE + rb"?| *" + _ZONE + rb")(?![0-9A-Za-z])"
)
_CLOCK = re.compile(rb"(?<![0-9:])[0-2][0-9]:[0-5][0-9]:[0-5][0-9](?:[.,][0-9]{1,9})?(?![0-9:])")
# A clock time with seconds counts as a timestamp only in the company of a date, a clock label
# or a trailing year (ctime); alone it may be a duration or a video position.
_CLOCK_BEFORE = re.compile(
    rb"(?i)(?:[0-9]{1,4}[-/.][0-9]{1,2}[-/.][0-9]{1,4}|\b(?:jan|feb|mar|apr|may|jun|jul|aug|sep"
    rb"|oct|nov|dec)[a-z]*\.? +[0-9]{1,2}\b|\b(?:time|now|timestamp|generated|as of|updated"
    rb"|current|sent|received)\b)[^\n]{0,12}\Z"
)
_CLOCK_AFTER = re.compile(rb" {1,2}[0-9]{4}(?![0-9])")

_TOKEN_MAP = bytes(
    ord("a") if (chr(c).isascii() and (chr(c).isalnum() or chr(c) in "_-")) else ord(" ")
    for c in range(256)
)
_TOKEN_RUN = re.compile(rb"aaaaaaaaaa+")  # spelled out: re only fast-scans literal prefixes
_UUID = re.compile(
    rb"(?<![0-9A-Fa-f])[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
    rb"(?![0-9A-Fa-f])"
)
_ISO_BASIC = re.compile(rb"[0-9]{8}T[0-9]{4,6}Z?")
_PREFIXED_ID = re.compile(
    rb"(?i)(?:req|request|trace|span|corr|correlation|msg|chatcmpl|resp|run|sess|session|evt"
    rb"|event|txn|call|toolu|job|batch|trc)[-_]([A-Za-z0-9]{6,})"
)
_HEX = re.compile(rb"[0-9a-fA-F]{16,}")
_ID_WORD = re.compile(rb"id(?![a-z0-9])")
_ID_LABEL = re.compile(
    rb"(?:request|req|trace|correlation|session|span|run|job|transaction|conversation|thread"
    rb"|invocation)[ _-]?$"
)
_SEP_LABEL = re.compile(
    rb"(?:(?P<user>(?<![a-z])(?:user|customer|client|account|member|patient|employee|student"
    rb"|player|caller|subscriber|buyer|recipient)[ _-]?(?:id|name|e-?mail|number|phone))"
    rb"|(?P<nonce>(?<![a-z])(?:nonce|salt)))[ \t]*\Z"
)
_ID_VALUE = re.compile(rb"[ \t]*(?:is[ \t]+|[:=#][ \t]*)?[\"'`]?([A-Za-z0-9][A-Za-z0-9._:/-]{5,})")
_USER_VALUE = re.compile(
    rb"[:=][ \t]*[\"']?([^\s{<\[\"'][^\s,;\"']{0,40}(?: [A-Z][a-z]+)?)"
)
_DIGIT_BYTES = b"0123456789"
_SEP_LABEL_ENDS = frozenset((b"id", b"me", b"il", b"er", b"ne", b"ce", b"lt"))  # _SEP_LABEL words
_ID_LABEL_ENDS = b"tqenbd"  # last letters of the _ID_LABEL words

_MAX_HITS = 20
_MIN_SCAN = 8  # shorter strings hold nothing flagged (a labelled id needs "id: 123456")


def _random_looking(tok: bytes) -> bool:
    """A long token that alternates letters and digits like random base64 does."""
    core = tok.replace(b"-", b"").replace(b"_", b"")
    if len(core) < 16 or len(tok) - len(core) > 2:
        return False
    digits = sum(c in _DIGITS for c in core)
    if digits < 3 or len(core) - digits < 3:
        return False
    classes = [0 if c in _DIGITS else 1 if 65 <= c <= 90 else 2 for c in core]
    changes = sum(a != b for a, b in itertools.pairwise(classes))
    return changes >= 0.4 * len(core)


def _is_hex_nonce(tok: bytes) -> bool:
    return _HEX.fullmatch(tok) is not None and 2 <= sum(c in _DIGITS for c in tok) <= len(tok) - 2


def _scan_tokens(b: bytes, hits: list[tuple[FindingKind, int, int, float]]) -> None:
    mapped = b.translate(_TOKEN_MAP)
    n = len(b)
    for m in _TOKEN_RUN.finditer(mapped):
        s, e = m.span()
        tok = b[s:e]
        digits = len(tok) - len(tok.translate(None, _DIGIT_BYTES))
        if digits == 0:  # every rule below needs a digit
            continue
        if digits == len(tok):
            if len(tok) in (10, 13, 16, 19) and (s == 0 or b[s - 1] not in b"+.,"):
                end = e
                if e + 1 < n and b[e] == 0x2E and b[e + 1] in _DIGITS:  # a fraction: 1700000000.5
                    end = e + 1
                    while end < n and b[end] in _DIGITS:
                        end += 1
                hits.append(("epoch", s, end, int(tok) / 10 ** (len(tok) - 10)))
            continue
        found = _UUID.search(tok)
        if found:
            hits.append(("uuid", s + found.start(), s + found.end(), 0.0))
        elif _ISO_BASIC.fullmatch(tok):
            hits.append(("timestamp", s, e, 0.0))
        elif (pm := _PREFIXED_ID.fullmatch(tok)) and any(c in _DIGITS for c in pm.group(1)):
            hits.append(("request_id", s, e, 0.0))
        elif _is_hex_nonce(tok) or _random_looking(tok):
            hits.append(("nonce", s, e, 0.0))


def _digit_at(b: bytes, i: int) -> bool:
    return 0 <= i < len(b) and b[i] in _DIGITS


def _scan_times(b: bytes, hits: list[tuple[FindingKind, int, int, float]]) -> None:
    """Date-times, anchored on the ``:`` of an ``HH:MM`` (colons are rare in prose)."""
    n = len(b)
    i = b.find(b":")
    while i != -1:
        found = None
        if 2 <= i < n - 2 and b[i - 1] in _DIGITS and b[i + 1] in _DIGITS \
                and b[i - 2] in _DIGITS and b[i + 2] in _DIGITS:
            # Cheap structural checks pick the one pattern that can match here.
            if i >= 13 and b[i - 3] in b"T " and b[i - 6] == 0x2D and b[i - 9] == 0x2D:
                found = _ISO.match(b, i - 13)
            if found is None and b[i - 3] == 0x20 and _digit_at(b, i - 4):
                for m in _RFC2822.finditer(b, max(0, i - 40), min(n, i + 20)):
                    if m.start() <= i < m.end():
                        found = m
                        break
            if found is None and i + 5 < n and b[i + 3] == 0x3A:
                clock = _CLOCK.match(b, i - 2)
                if clock and (_CLOCK_BEFORE.search(b, max(0, i - 34), i - 2)
                              or _CLOCK_AFTER.match(b, clock.end())):
                    found = clock
        if found is not None:
            hits.append(("timestamp", found.start(), found.end(), 0.0))
            i = b.find(b":", found.end())
        else:
            i = b.find(b":", i + 1)


def _scan_labels(b: bytes, hits: list[tuple[FindingKind, int, int, float]]) -> None:
    """Labelled values: ``request id: ...``, ``customer name: ...``, ``nonce=...``."""
    lower = b.lower()
    for m in _ID_WORD.finditer(lower):
        start, end = m.span()
        j = start - 1 if start and lower[start - 1] in b" _-" else start
        if j and lower[j - 1] in _ID_LABEL_ENDS and _ID_LABEL.search(lower, max(0, j - 15), j):
            value = _ID_VALUE.match(b, end)
            if value and any(c in _DIGITS for c in value.group(1)):
                hits.append(("request_id", value.start(1), value.end(1), 0.0))
    # Per-user fields and nonces are "label: value" or "label=value": anchor on the separator.
    for sep in (b":", b"="):
        i = b.find(sep)
        while i != -1:
            j = i
            while j and lower[j - 1] in b" \t":
                j -= 1
            label = (_SEP_LABEL.search(lower, max(0, i - 32), i)
                     if lower[max(0, j - 2):j] in _SEP_LABEL_ENDS else None)
            if label is not None:
                value = (_USER_VALUE if label.lastgroup == "user" else _ID_VALUE).match(b, i)
                if value and (label.lastgroup == "user"
                              or any(c in _DIGITS for c in value.group(1))):
                    kind: FindingKind = "per_user_data" if label.lastgroup == "user" else "nonce"
                    hits.append((kind, value.start(1), value.end(1), 0.0))
            i = b.find(sep, i + 1)


def _scan_uncached(text: str) -> tuple[_Hit, ...]:
    if len(text) < 6:
        return ()
    b = text.encode("utf-8", "surrogatepass")
    raw: list[tuple[FindingKind, int, int, float]] = []
    _scan_times(b, raw)
    _scan_tokens(b, raw)
    _scan_labels(b, raw)
    if not raw:
        return ()
    raw.sort(key=lambda h: (h[1], _PRIORITY[h[0]]))
    kept: list[tuple[FindingKind, int, int, float]] = []
    for hit in raw:
        if kept and hit[1] < kept[-1][2]:  # overlaps the previous one: keep the more specific
            if _PRIORITY[hit[0]] < _PRIORITY[kept[-1][0]]:
                kept[-1] = hit
            continue
        kept.append(hit)
        if len(kept) >= _MAX_HITS:
            break
    ascii_only = len(b) == len(text)

    def char(offset: int) -> int:
        return offset if ascii_only else len(b[:offset].decode("utf-8", "surrogatepass"))

    return tuple(_Hit(k, char(s), char(e), v) for k, s, e, v in kept)


_memo: dict[str, tuple[_Hit, ...]] = {}
_memo_chars = 0
_memo_lock = threading.Lock()
_MEMO_MAX_CHARS = 8_000_000


def _scan(text: str) -> tuple[_Hit, ...]:
    """Volatile spans of ``text``, memoised (a reused prompt string is scanned once)."""
    global _memo_chars
    hits = _memo.get(text)
    if hits is None:
        hits = _scan_uncached(text)
        with _memo_lock:
            if _memo_chars + len(text) > _MEMO_MAX_CHARS or len(_memo) >= 4096:
                _memo.clear()
                _memo_chars = 0
            _memo[text] = hits
            _memo_chars += len(text)
    return hits


def _volatile_spans(text: str, kinds: frozenset[str]) -> list[tuple[int, int]]:
    """Where ``text`` holds values of ``kinds`` (any epoch-like number counts): for masking."""
    return [(h.start, h.end) for h in _scan(text) if h.kind in kinds]


# --- findings -------------------------------------------------------------------------------------

_EPOCH_WINDOW = 5 * 365.25 * 86400  # an epoch counts as "now-ish" within ± 5 years
_SHARED_AFTER = 512  # characters of prefix after per-user data that make it "before shared"


def _masked(text: str, start: int, end: int, hits: Sequence[_Hit]) -> str:
    """``text[start:end]`` with every volatile value in it replaced by ``‹kind›``."""
    out: list[str] = []
    pos = start
    for h in hits:
        if h.end <= pos or h.start >= end:
            continue
        out.append(text[pos:max(pos, h.start)])
        out.append(f"‹{h.kind}›")
        pos = max(pos, h.end)
    out.append(text[pos:end] if pos < end else "")
    return " ".join("".join(out).split())


def _excerpt(text: str, hit: _Hit, hits: Sequence[_Hit] = ()) -> str:
    before = _masked(text, max(0, hit.start - 20), hit.start, hits)
    after = _masked(text, hit.end, min(len(text), hit.end + 20), hits)
    if hit.start > 0 and text[hit.start - 1].isspace():
        before += " "
    if hit.end < len(text) and text[hit.end].isspace():
        after = " " + after
    lead = "…" if hit.start > 20 else ""
    tail = "…" if hit.end + 20 < len(text) else ""
    return f"{lead}{before}‹{hit.kind}›{after}{tail}"


def _collect(value: Any, out: list[str]) -> None:
    if isinstance(value, str):
        if len(value) >= _MIN_SCAN:
            out.append(value)
    elif isinstance(value, Mapping):
        for v in value.values():
            _collect(v, out)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _collect(v, out)


def _path_of(value: Any, target: str, path: list[Any]) -> bool:
    """Fill ``path`` with the keys leading to the string object ``target``."""
    if value is target:
        return True
    items: Any = (value.items() if isinstance(value, Mapping)
                  else enumerate(value) if isinstance(value, (list, tuple)) else ())
    for k, v in items:
        path.append(k)
        if _path_of(v, target, path):
            return True
        path.pop()
    return False


class _Where(NamedTuple):
    """Where a scanned text sits: a segment, and the string inside its JSON object if any."""

    seg: _Segment
    text: str

    def __str__(self) -> str:
        if self.seg.text is not None:
            return self.seg.loc
        path: list[Any] = []
        _path_of(self.seg.obj, self.text, path)
        return self.seg.loc + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


def _texts(seg: _Segment, out: list[tuple[Any, str]]) -> None:
    """The texts of a segment to scan: its text, or the string values inside a JSON object.

    Walking the caller's own objects (rather than serialising them) means a tools list reused
    across calls hands over the same string objects, whose scans are memoised. The path to a
    string is only worked out for a finding.
    """
    if seg.text is not None:
        out.append((seg.loc, seg.text))
        return
    strings: list[str] = []
    _collect(seg.obj, strings)
    out.extend((_Where(seg, t), t) for t in strings)


def _findings_in(
    texts: Sequence[tuple[Any, str]], now: float, out: list[Finding]
) -> None:
    remaining = sum(len(t) for _, t in texts)
    for loc, text in texts:
        remaining -= len(text)
        hits = _scan(text)
        for hit in hits:
            if hit.kind == "epoch" and abs(hit.epoch - now) > _EPOCH_WINDOW:
                continue
            if hit.kind == "per_user_data" and (len(text) - hit.end) + remaining < _SHARED_AFTER:
                continue
            out.append(Finding(hit.kind, f"{loc}@{hit.start}", _excerpt(text, hit, hits),
                               _HINTS[hit.kind]))


def lint_prompt(
    request: Mapping[str, Any], *, provider: Provider | None = None, now: float | None = None
) -> list[Finding]:
    """Volatile content in the request's cacheable prefix, each with a location and fix hint.

    Looks at the stable prefix (tools, system prompt or instructions, structured-output schema,
    up to the caller's last breakpoint in it) and at a caller-set ``prompt_cache_key``. Flags
    ISO-8601 / RFC 2822 date-times, epoch times within five years of ``now``, UUIDs, request
    and trace ids, random nonces, and per-user fields followed by shared content. Dates written
    as words, bare dates, versions, prices, short ids and ordinary numbers are not flagged.
    """
    when = time.time() if now is None else now
    _, shape = _shape(request, provider)
    texts: list[tuple[Any, str]] = []
    for seg in _head(request, shape):
        _texts(seg, texts)
    findings: list[Finding] = []
    _findings_in(texts, when, findings)
    key = request.get("prompt_cache_key")
    if isinstance(key, str) and key:
        for hit in _scan(key):
            if hit.kind == "epoch" and abs(hit.epoch - when) > _EPOCH_WINDOW:
                continue
            findings.append(Finding("volatile_cache_key", "prompt_cache_key",
                                    _excerpt(key, hit, _scan(key)), _HINTS["volatile_cache_key"]))
            break
    return findings


_logged: set[tuple[str, str]] = set()


def check_prompt(
    request: Mapping[str, Any], mode: LintMode, *, provider: Provider | None = None
) -> list[Finding]:
    """Run :func:`lint_prompt` as ``Policy.lint_prompts`` says, before the request is sent.

    ``off``: nothing. ``warn`` (default): return the findings (for ``outcome()``) and log each
    distinct kind and location once per process at WARNING on the ``resilient_llm`` logger,
    without prompt text. ``strict``: raise :class:`PromptLintError` when there are findings.
    """
    if mode == "off":
        return []
    if mode not in ("warn", "strict"):
        raise ValueError(f"lint mode must be off, warn or strict, not {mode!r}")
    findings = lint_prompt(request, provider=provider)
    if not findings:
        return findings
    if mode == "strict":
        raise PromptLintError(findings)
    for f in findings:
        seen = (f.kind, f.location.split("@", 1)[0])
        if seen in _logged:
            continue
        if len(_logged) >= 1024:
            _logged.clear()
        _logged.add(seen)
        _log.warning("prompt cache: %s in the cacheable prefix at %s: %s",
                     f.kind, f.location, f.hint)
    return findings
