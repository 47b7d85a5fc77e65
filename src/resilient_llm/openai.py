"""Drop-in ``OpenAI`` / ``AsyncOpenAI``: the official classes with resilience built in.

``from resilient_llm.openai import OpenAI`` instead of ``from openai import OpenAI``. Same
constructor (plus keyword-only ``policy=``), same methods, same return and error types. Every
request runs under one wall-clock deadline with jittered backoff, one ``Idempotency-Key`` per
call, guarded streams and ``outcome()``. With ``RESILIENT_LLM_ENABLED=false`` (or
``policy=Policy(enabled=False)``) the classes behave exactly like the official ones.

An explicit ``max_retries=N`` (constructor or per request) is honoured as ``N + 1`` attempts
under the deadline; otherwise ``RESILIENT_LLM_MAX_ATTEMPTS`` applies. The SDK's own retry loop
is always off, so attempts never multiply.
"""

from __future__ import annotations

try:
    import openai as _openai
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "resilient_llm.openai needs the official openai package: "
        "pip install 'resilient-llm[openai]'"
    ) from exc

from ._sdk_versions import check_sdk_version
from .dropin.base import AsyncDropIn, SyncDropIn, finish_class

check_sdk_version("openai", _openai.__version__)

__all__ = ["AsyncOpenAI", "OpenAI"]


class OpenAI(SyncDropIn, _openai.OpenAI):
    """The official ``openai.OpenAI`` with a deadline, jittered retries and ``outcome()``."""

    _resilient_provider = "openai"
    _resilient_timeout_error = _openai.APITimeoutError
    _resilient_connection_error = _openai.APIConnectionError
    _resilient_auth_error = _openai.AuthenticationError


class AsyncOpenAI(AsyncDropIn, _openai.AsyncOpenAI):
    """The official ``openai.AsyncOpenAI`` with a deadline, jittered retries and ``outcome()``."""

    _resilient_provider = "openai"
    _resilient_timeout_error = _openai.APITimeoutError
    _resilient_connection_error = _openai.APIConnectionError
    _resilient_auth_error = _openai.AuthenticationError


finish_class(OpenAI, _openai.OpenAI)
finish_class(AsyncOpenAI, _openai.AsyncOpenAI)
