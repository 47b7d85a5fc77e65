"""URLs named in settings: parsed fully once, and shown only without their credentials.

The one place that knows how a URL hides a secret: the password of its userinfo
(``redis://user:secret@host``), a bare userinfo token (``https://TOKEN@host``) and query
parameters such as ``?password=``. Every message, log line, span and ``config`` row shows a
URL through :func:`redact_url`. Policy validation and the stores both import this module, so
it imports nothing of the package. Redis URLs are parsed in ``_redis.py``.
"""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit

__all__ = ["check_http_url", "redact_url"]

_MASK = "***"
#: Query parameters whose values are credentials (matched as substrings, case-insensitively).
_SECRET_PARAMS = ("password", "passwd", "secret", "token", "key", "auth", "credential")


def redact_url(url: str) -> str:
    """``url`` with every credential replaced by ``***``; the rest stays readable."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    # The userinfo ends at the last "@" that no query parameter holds. A password may hold
    # "/" or "?" that its writer did not percent-encode (a base64 one often does): cutting
    # the authority at the first of those first showed such a password whole.
    at = rest.rfind("@")
    while at >= 0 and "=" in rest[:at]:
        at = rest.rfind("@", 0, at)
    if at >= 0:
        user, colon, _password = rest[:at].partition(":")
        shown = _MASK if "/" in user or "?" in user else (f"{user}:{_MASK}" if colon else _MASK)
        rest = f"{shown}@{rest[at + 1:]}"
        at = len(shown)
    cut = min((i for i in (rest.find("/", at + 1), rest.find("?", at + 1)) if i >= 0),
              default=len(rest))
    authority, tail = rest[:cut], rest[cut:]
    path, qmark, query = tail.partition("?")
    if qmark:
        query = "&".join(_redact_param(item) for item in query.split("&"))
    return f"{scheme}{sep}{authority}{path}{qmark}{query}"


def _redact_param(item: str) -> str:
    name, eq, _value = item.partition("=")
    if eq and any(word in name.lower() for word in _SECRET_PARAMS):
        return f"{name}={_MASK}"
    return item


def _split(url: str, schemes: tuple[str, ...]) -> SplitResult:
    if not url.isascii() or any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise ValueError("the URL holds spaces, control or non-ASCII characters")
    parts = urlsplit(url)
    if parts.scheme not in schemes:
        raise ValueError(f"the scheme must be one of {', '.join(s + '://' for s in schemes)}")
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not 0-65535
    except ValueError:
        raise ValueError("the port is not a number from 1 to 65535") from None
    if parts.port == 0:
        raise ValueError("the port is not a number from 1 to 65535")
    return parts


def check_http_url(url: str) -> str:
    """``url`` if it is an ``http(s)://`` URL with a host; raises ``ValueError`` otherwise."""
    parts = _split(url, ("http", "https"))
    if not parts.hostname:
        raise ValueError("the URL has no host")
    return url
