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
:data:`PRIVATE_HOOKS`; releases outside :data:`SUPPORTED_VERSIONS` (oldest supported, newest
tested, from ``resilient_llm._sdk_versions``) fail at import (older) or warn once (newer), and
``tests/test_anthropic.py`` fails loudly if a tested release drops a hook.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from ._sdk_versions import SDK_VERSIONS, check_sdk_version, missing_sdk

try:
    import anthropic as _anthropic
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise missing_sdk("anthropic") from exc

from ._errors import ResilientLLMError
from ._sdk_errors import SdkErrors, register_sdk
from .dropin.base import AsyncDropIn, SyncDropIn, finish_class
from .dropin.clouds import export_cloud_classes, missing_class
from .dropin.seams import SEAMS
from .transport import ForeignTransportError

check_sdk_version("anthropic", _anthropic.__version__)


def _stream_error(event: Any, response: Any) -> BaseException:
    """What the SDK raises for ``event: error`` in a stream: its status error for the
    response (a 200: ``APIStatusError``), with the event as the body."""
    return _anthropic.APIStatusError(f"{event}", response=response, body=event)


register_sdk("anthropic", SdkErrors(connection=_anthropic.APIConnectionError,
                                    timeout=_anthropic.APITimeoutError,
                                    stream_error=_stream_error))

#: The cloud client classes, each with the first anthropic release that ships it (every one is
#: in the oldest supported release, so all are exported there and since).
_CLOUD_CLASSES = dict.fromkeys((
    "AnthropicAWS", "AsyncAnthropicAWS", "AnthropicBedrock", "AsyncAnthropicBedrock",
    "AnthropicBedrockMantle", "AsyncAnthropicBedrockMantle", "AnthropicFoundry",
    "AsyncAnthropicFoundry", "AnthropicGoogleCloud", "AsyncAnthropicGoogleCloud",
    "AnthropicVertex", "AsyncAnthropicVertex",
), "2.10.0")

#: The oldest anthropic release supported and the newest tested (``resilient_llm._sdk_versions``).
SUPPORTED_VERSIONS = SDK_VERSIONS["anthropic"]

#: Private attributes of the SDK client this module relies on (listed with the reasons in
#: ``dropin/seams.py``, where every private dependency is), and why (no public seam exists):
#: ``_client`` is the httpx2 client whose transport is wrapped; ``_make_status_error_from_response``
#: builds the SDK's own status error (``_make_status_error`` is ``@final``) for a DeadlineExceeded
#: cause; ``_token_cache`` is the credentials cache the SDK invalidates and retries once on a 401.
PRIVATE_HOOKS = tuple(seam.name for seam in SEAMS if seam.owner == "anthropic.Anthropic")


class _OwnErrorsPassThrough:
    """Keeps resilient-llm's own errors what they are inside the SDK's stream reader.

    From anthropic 2.17 the SDK turns any exception raised while a response body is read into
    ``APIConnectionError`` through ``_make_connection_error(request, cause)``; for
    ``StreamInterrupted`` (with its partial text) and ``DeadlineExceeded`` that would hide
    exactly what the caller must see. A copy is returned so that the SDK's ``raise ... from``
    chains it to the original instead of making the error its own cause. The SDK's message
    names the failure (``Connection to example.com failed: TooManyRedirects``, or ``Connection
    error.`` for a request body that cannot be read): it is built from the exception the
    transport wrapped in ``ForeignTransportError``, as the official client would see it.
    Earlier releases never call this method.
    """

    def _make_connection_error(self, request: Any, cause: Any = None, *args: Any,
                               **kwargs: Any) -> Any:
        if isinstance(cause, ResilientLLMError):
            clone = type(cause).__new__(type(cause), *cause.args)  # no __init__: same state
            # ``OSError.__new__`` (``DeadlineExceeded`` is a ``TimeoutError``) leaves ``args``
            # to ``__init__`` when a subclass defines one: without this the message is lost.
            clone.args = cause.args
            clone.__dict__.update(cause.__dict__)
            return clone
        if isinstance(cause, ForeignTransportError):
            cause = cause.original
        return super()._make_connection_error(  # type: ignore[misc]
            request, cause, *args, **kwargs)


class _KeepsCredentials:
    """A copy of ``Anthropic(credentials=...)`` keeps the credentials provider and its token cache.

    The official ``copy`` passes them on only when ``type(self)`` is exactly ``Anthropic`` /
    ``AsyncAnthropic`` (its cloud subclasses authenticate otherwise), so for the drop-in, a
    subclass, the same hand-over is made here, under the same conditions: no credential
    argument given, and the parent sends neither an API key nor an auth token.
    """

    def _resilient_inherited(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        given = any(kwargs.get(name) is not None for name in (
            "api_key", "auth_token", "credentials", "config", "profile"))
        client: Any = self
        credentials = getattr(client, "credentials", None)
        if given or client.api_key is not None or client.auth_token is not None \
                or credentials is None:
            return {}
        inherited: dict[str, Any] = {"credentials": credentials}
        base_url = kwargs.get("base_url")
        if base_url is None or str(base_url).rstrip("/") == str(client.base_url).rstrip("/"):
            inherited["_token_cache"] = client._token_cache
        return inherited


class _AnthropicErrors:
    """What the drop-in base needs to know of the anthropic SDK: its name and its error classes."""

    _resilient_provider: Literal["openai", "anthropic"] = "anthropic"
    _resilient_timeout_error: type[Exception] = _anthropic.APITimeoutError
    _resilient_connection_error: type[Exception] = _anthropic.APIConnectionError
    _resilient_auth_error: type[Exception] = _anthropic.AuthenticationError
    _resilient_default_timeout = _anthropic.DEFAULT_TIMEOUT


class Anthropic(_AnthropicErrors, _KeepsCredentials, _OwnErrorsPassThrough, SyncDropIn,
                _anthropic.Anthropic):
    """The official ``anthropic.Anthropic`` with a deadline, jittered retries and ``outcome()``."""


class AsyncAnthropic(_AnthropicErrors, _KeepsCredentials, _OwnErrorsPassThrough, AsyncDropIn,
                     _anthropic.AsyncAnthropic):
    """The official ``anthropic.AsyncAnthropic`` with a deadline, jittered retries and
    ``outcome()``."""


finish_class(Anthropic, _anthropic.Anthropic)
finish_class(AsyncAnthropic, _anthropic.AsyncAnthropic)

#: The official aliases (``anthropic.Client`` is ``anthropic.Anthropic``), so code that uses
#: them swaps its import too.
Client = Anthropic
AsyncClient = AsyncAnthropic

_SYNC = (_AnthropicErrors, _OwnErrorsPassThrough, SyncDropIn)
_ASYNC = (_AnthropicErrors, _OwnErrorsPassThrough, AsyncDropIn)

if TYPE_CHECKING:  # what type checkers see; at run time the table above defines them
    class AnthropicAWS(_AnthropicErrors, _OwnErrorsPassThrough, SyncDropIn,
            _anthropic.AnthropicAWS): ...
    class AsyncAnthropicAWS(_AnthropicErrors, _OwnErrorsPassThrough, AsyncDropIn,
            _anthropic.AsyncAnthropicAWS): ...
    class AnthropicBedrock(_AnthropicErrors, _OwnErrorsPassThrough, SyncDropIn,
            _anthropic.AnthropicBedrock): ...
    class AsyncAnthropicBedrock(_AnthropicErrors, _OwnErrorsPassThrough, AsyncDropIn,
            _anthropic.AsyncAnthropicBedrock): ...
    class AnthropicBedrockMantle(_AnthropicErrors, _OwnErrorsPassThrough, SyncDropIn,
            _anthropic.AnthropicBedrockMantle): ...
    class AsyncAnthropicBedrockMantle(_AnthropicErrors, _OwnErrorsPassThrough, AsyncDropIn,
            _anthropic.AsyncAnthropicBedrockMantle): ...
    class AnthropicFoundry(_AnthropicErrors, _OwnErrorsPassThrough, SyncDropIn,
            _anthropic.AnthropicFoundry): ...
    class AsyncAnthropicFoundry(_AnthropicErrors, _OwnErrorsPassThrough, AsyncDropIn,
            _anthropic.AsyncAnthropicFoundry): ...
    class AnthropicGoogleCloud(_AnthropicErrors, _OwnErrorsPassThrough, SyncDropIn,
            _anthropic.AnthropicGoogleCloud): ...
    class AsyncAnthropicGoogleCloud(_AnthropicErrors, _OwnErrorsPassThrough, AsyncDropIn,
            _anthropic.AsyncAnthropicGoogleCloud): ...
    class AnthropicVertex(_AnthropicErrors, _OwnErrorsPassThrough, SyncDropIn,
            _anthropic.AnthropicVertex): ...
    class AsyncAnthropicVertex(_AnthropicErrors, _OwnErrorsPassThrough, AsyncDropIn,
            _anthropic.AsyncAnthropicVertex): ...

__all__ = sorted(["PRIVATE_HOOKS", "SUPPORTED_VERSIONS", "Anthropic", "AsyncAnthropic",
                  "AsyncClient", "Client",
                  *export_cloud_classes(globals(), _anthropic, _CLOUD_CLASSES,
                                        sync_bases=_SYNC, async_bases=_ASYNC)])


def __getattr__(name: str) -> object:
    """A cloud class the installed anthropic release lacks: a clear error naming the release."""
    raise missing_class(__name__, _anthropic, _CLOUD_CLASSES, name)
