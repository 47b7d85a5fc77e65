"""Drop-in ``Anthropic`` / ``AsyncAnthropic``: the official classes with resilience built in.

``from resilient_llm.anthropic import Anthropic`` instead of ``from anthropic import Anthropic``.
Same constructor (plus keyword-only ``policy=``), same methods, same return and error types.
Every request (``messages.create``, ``messages.create(stream=True)``, the ``messages.stream()``
helper, raw and streaming responses, the low-level ``client.post``) runs under one wall-clock
deadline with jittered backoff, one ``Idempotency-Key`` per call, guarded streams and
``outcome()``. With ``RESILIENT_LLM_ENABLED=false`` (or ``policy=Policy(enabled=False)``) the
classes behave exactly like the official ones, SDK retries included.

How it sits on the SDK (design principle 6: public seams first):

* the ``http_client`` transport (public seam): the SDK's own httpx2 client, default or the
  caller's, gets :class:`~resilient_llm.transport.ResilientTransport` under every transport,
  so its limits, proxies and TCP keep-alive options stay as the SDK set them;
* ``request()`` (the SDK's documented low-level method): opens the logical call (deadline
  clock, policy, attempt cap) and turns the SDK's retry loop off for it, so attempts never
  multiply and one layer decides every retry;
* user ``middleware=`` keeps working: it wraps the one SDK attempt, and the transport retries
  under it. Middleware is not needed by resilient-llm itself.

The SDK's timeout is left untouched unless the caller sets one, so its "streaming is required
for operations that may take longer than 10 minutes" guard (which compares ``client.timeout``
with ``DEFAULT_TIMEOUT``) still fires exactly as in the official client.

Private SDK hooks, used only where no public seam exists, are listed in
:data:`PRIVATE_HOOKS` and pinned to :data:`SUPPORTED_VERSIONS`; ``tests/test_anthropic.py``
fails loudly if a supported release drops one.
"""

from __future__ import annotations

try:
    import anthropic as _anthropic
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "resilient_llm.anthropic needs the official anthropic package: "
        "pip install 'resilient-llm[anthropic]'"
    ) from exc

from .dropin.base import AsyncDropIn, SyncDropIn, finish_class

__all__ = ["PRIVATE_HOOKS", "SUPPORTED_VERSIONS", "Anthropic", "AsyncAnthropic"]

#: The anthropic releases this module is written and tested against (``>=`` low, ``<`` high),
#: the same range as the ``anthropic`` extra in pyproject.
SUPPORTED_VERSIONS = ("2.10", "2.13")

#: Private attributes of the SDK client this module relies on, and why (no public seam exists):
#: ``_client`` is the httpx2 client whose transport is wrapped; ``_make_status_error_from_response``
#: builds the SDK's own status error (``_make_status_error`` is ``@final``) for a DeadlineExceeded
#: cause; ``_token_cache`` is the credentials cache the SDK invalidates and retries once on a 401.
PRIVATE_HOOKS = ("_client", "_make_status_error_from_response", "_token_cache")


class Anthropic(SyncDropIn, _anthropic.Anthropic):
    """The official ``anthropic.Anthropic`` with a deadline, jittered retries and ``outcome()``."""

    _resilient_provider = "anthropic"
    _resilient_timeout_error = _anthropic.APITimeoutError
    _resilient_connection_error = _anthropic.APIConnectionError
    _resilient_auth_error = _anthropic.AuthenticationError


class AsyncAnthropic(AsyncDropIn, _anthropic.AsyncAnthropic):
    """The official ``anthropic.AsyncAnthropic`` with a deadline, jittered retries and
    ``outcome()``."""

    _resilient_provider = "anthropic"
    _resilient_timeout_error = _anthropic.APITimeoutError
    _resilient_connection_error = _anthropic.APIConnectionError
    _resilient_auth_error = _anthropic.AuthenticationError


finish_class(Anthropic, _anthropic.Anthropic)
finish_class(AsyncAnthropic, _anthropic.AsyncAnthropic)
