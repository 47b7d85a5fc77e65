"""Drop-in ``OpenAI`` / ``AsyncOpenAI``: the official classes with resilience built in.

``from resilient_llm.openai import OpenAI`` instead of ``from openai import OpenAI``; the cloud
classes (``AzureOpenAI``, ``BedrockOpenAI`` and their async twins) likewise. Same
constructor (plus keyword-only ``policy=``), same methods, same return and error types. Every
request runs under one wall-clock deadline with jittered backoff, one ``Idempotency-Key`` per
call, guarded streams and ``outcome()``. With ``RESILIENT_LLM_ENABLED=false`` (or
``policy=Policy(enabled=False)``) the classes behave exactly like the official ones.

An explicit ``max_retries=N`` (constructor or per request) is honoured as ``N + 1`` attempts
under the deadline; otherwise ``RESILIENT_LLM_MAX_ATTEMPTS`` applies. The SDK's own retry loop
is always off, so attempts never multiply.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from ._sdk_errors import SdkErrors, register_sdk
from ._sdk_versions import check_sdk_version, missing_sdk

try:
    import openai as _openai
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise missing_sdk("openai") from exc

from .dropin.base import AsyncDropIn, SyncDropIn, finish_class
from .dropin.clouds import export_cloud_classes, missing_class

check_sdk_version("openai", _openai.__version__)


def _stream_error(event: Any, response: Any) -> BaseException:
    """What the SDK raises for ``data: {"error": ...}`` in a stream (its ``Stream``'s rule)."""
    error = event.get("error")
    message = error.get("message") if isinstance(error, dict) else None
    if not isinstance(message, str) or not message:
        message = "An error occurred during streaming"
    return _openai.APIError(message=message, request=response.request, body=error)


register_sdk("openai", SdkErrors(connection=_openai.APIConnectionError,
                                 timeout=_openai.APITimeoutError, stream_error=_stream_error))

#: The cloud client classes, each with the first openai release that ships it (every one is
#: in the oldest supported release, so all are exported there and since).
_CLOUD_CLASSES = {
    "AzureOpenAI": "3.50.0", "AsyncAzureOpenAI": "3.50.0",
    "BedrockOpenAI": "3.50.0", "AsyncBedrockOpenAI": "3.50.0",
}


class _OpenAIErrors:
    """What the drop-in base needs to know of the openai SDK: its name and its error classes."""

    _resilient_provider: Literal["openai", "anthropic"] = "openai"
    _resilient_timeout_error: type[Exception] = _openai.APITimeoutError
    _resilient_connection_error: type[Exception] = _openai.APIConnectionError
    _resilient_auth_error: type[Exception] = _openai.AuthenticationError
    _resilient_default_timeout = _openai.DEFAULT_TIMEOUT


class OpenAI(_OpenAIErrors, SyncDropIn, _openai.OpenAI):
    """The official ``openai.OpenAI`` with a deadline, jittered retries and ``outcome()``."""


class AsyncOpenAI(_OpenAIErrors, AsyncDropIn, _openai.AsyncOpenAI):
    """The official ``openai.AsyncOpenAI`` with a deadline, jittered retries and ``outcome()``."""


finish_class(OpenAI, _openai.OpenAI)
finish_class(AsyncOpenAI, _openai.AsyncOpenAI)

#: The official aliases (``openai.Client`` is ``openai.OpenAI``), so code that uses them
#: swaps its import too.
Client = OpenAI
AsyncClient = AsyncOpenAI

if TYPE_CHECKING:  # what type checkers see; at run time the table below defines them
    class AzureOpenAI(_OpenAIErrors, SyncDropIn, _openai.AzureOpenAI): ...
    class AsyncAzureOpenAI(_OpenAIErrors, AsyncDropIn, _openai.AsyncAzureOpenAI): ...
    class BedrockOpenAI(_OpenAIErrors, SyncDropIn, _openai.BedrockOpenAI): ...
    class AsyncBedrockOpenAI(_OpenAIErrors, AsyncDropIn, _openai.AsyncBedrockOpenAI): ...

__all__ = sorted(["AsyncClient", "AsyncOpenAI", "Client", "OpenAI", *export_cloud_classes(
    globals(), _openai, _CLOUD_CLASSES,
    sync_bases=(_OpenAIErrors, SyncDropIn), async_bases=(_OpenAIErrors, AsyncDropIn))])


def __getattr__(name: str) -> object:
    """A cloud class the installed openai release lacks: a clear error naming the release."""
    raise missing_class(__name__, _openai, _CLOUD_CLASSES, name)
