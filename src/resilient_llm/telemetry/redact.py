"""Credentials out of everything telemetry writes.

Credential headers are dropped wherever headers are recorded, and every value seen in one is
remembered (bounded) so it can be masked anywhere else it turns up: a captured body, a content
attribute, an error message. Strings shaped like common API keys and bearer tokens are masked
too, whatever header they came in.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping

import httpx2

__all__ = ["REDACTED", "redact_text", "safe_headers"]

REDACTED = "[REDACTED]"

_CREDENTIAL_HEADERS = frozenset({
    "authorization", "proxy-authorization", "x-api-key", "api-key", "cookie", "set-cookie",
    "x-goog-api-key", "ocp-apim-subscription-key",
})
_CREDENTIAL_WORDS = ("secret", "token", "password", "passwd", "apikey", "api-key", "api_key",
                     "credential", "session", "auth")
# Common credential shapes, masked in captured content (the exact values seen in credential
# headers are masked too, whatever their shape).
_CREDENTIAL_TEXT = re.compile(
    r"(?:sk-(?:ant-|proj-)?[A-Za-z0-9_\-]{16,})"
    r"|(?:(?i:bearer)\s+[A-Za-z0-9._~+/\-]{16,}=*)"
    r"|(?:AKIA[0-9A-Z]{16})"
    r"|(?:AIza[0-9A-Za-z_\-]{30,})"
    r"|(?:gh[pousr]_[A-Za-z0-9]{30,})"
)
_MIN_SECRET = 8
_MAX_SECRETS = 256
_secrets: dict[str, None] = {}  # insertion-ordered set of credential values seen
_secrets_lock = threading.Lock()
_secret_pattern: re.Pattern[str] | None = None


def _is_credential_header(name: str) -> bool:
    lowered = name.lower()
    if lowered in _CREDENTIAL_HEADERS:
        return True
    if lowered == "idempotency-key":  # an identifier, not a credential
        return False
    return any(word in lowered for word in _CREDENTIAL_WORDS)


def _remember_secret(value: str) -> None:
    global _secret_pattern
    token = value.split(None, 1)[-1].strip() if value.lower().startswith("bearer") else value
    token = token.strip()
    if len(token) < _MIN_SECRET or token in _secrets:
        return
    with _secrets_lock:
        _secrets[token] = None
        while len(_secrets) > _MAX_SECRETS:
            del _secrets[next(iter(_secrets))]
        ordered = sorted(_secrets, key=len, reverse=True)
        _secret_pattern = re.compile("|".join(re.escape(s) for s in ordered))


def safe_headers(headers: httpx2.Headers | Mapping[str, str]) -> dict[str, str]:
    """Headers without credentials (their values are remembered so they can be masked)."""
    kept: dict[str, str] = {}
    for name, value in headers.items():
        if _is_credential_header(name):
            _remember_secret(value)
            continue
        kept[name.lower()] = value
    return kept


def redact_text(text: str, *, patterns: bool = True) -> str:
    """``text`` with every credential value seen so far masked (and, with ``patterns``, any
    string shaped like a common API key or bearer token)."""
    pattern = _secret_pattern
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    if patterns:
        text = _CREDENTIAL_TEXT.sub(REDACTED, text)
    return text
