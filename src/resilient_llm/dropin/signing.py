"""Each attempt authorised afresh: the SDK's own credential and signing steps, run again.

The official clients authorise a request in two steps they run for every attempt of their
retry loop: ``_prepare_options`` (Azure's ``azure_ad_token_provider`` token) and
``_prepare_request`` (AWS SigV4, Google tokens refreshed when expired). resilient-llm's one
retry layer is the transport, below both, so the drop-ins note what those steps did for the
first attempt and the transport runs them again (:data:`~resilient_llm.transport.shared.SIGNER`)
for every later attempt and every target a request is rewritten for: no attempt goes out
with a token, date or signature made for another.
"""

from __future__ import annotations

import inspect
from contextvars import ContextVar
from typing import Any

import httpx2

from ..transport.shared import SIGNER

__all__ = ["Resign", "note_options"]

#: The headers by which an SDK's ``_prepare_options`` authorises a call (Azure's
#: ``azure_ad_token_provider`` token, an ``api_key`` provider's key).
_AUTH_HEADERS = ("authorization", "api-key")

#: The options the SDK's ``_prepare_options`` was given for the request being built, and the
#: authorisation headers it added to them (set there, read by the ``_prepare_request`` that
#: follows in the same SDK ``request()``).
_OPTIONS_AUTH: ContextVar[tuple[Any, tuple[str, ...]] | None] = ContextVar(
    "resilient_llm_options_auth", default=None)


def _auth_added(given: Any, prepared: Any) -> tuple[str, ...]:
    """The authorisation headers ``_prepare_options`` added or changed (``given`` to
    ``prepared``)."""
    given_headers, prepared_headers = _headers_of(given), _headers_of(prepared)
    if prepared_headers is given_headers or prepared_headers == given_headers:
        return ()  # the common case: the step added no header (a static API key)
    before = {str(k).lower(): v for k, v in given_headers.items()}
    return tuple(name for name, value in prepared_headers.items()
                 if str(name).lower() in _AUTH_HEADERS and isinstance(value, str)
                 and before.get(str(name).lower()) != value)


def _headers_of(options: Any) -> dict[Any, Any]:
    headers = getattr(options, "headers", None)
    return headers if isinstance(headers, dict) else {}


class Resign:
    """The SDK's per-attempt steps for a request it already prepared once: the credentials
    ``_prepare_options`` adds (Azure's ``azure_ad_token_provider`` is called again) and the
    signing step ``_prepare_request`` (AWS SigV4, Google tokens refreshed when expired). The
    headers that step set (``Authorization``, ``X-Amz-Date``, ``X-Amz-Security-Token``, ...)
    are removed first, so the step signs afresh (openai's Bedrock provider refuses a request
    that carries one already).

    For a target in another cloud region than the client's (``model@eu-west-1``), the steps of
    a copy of the client made for that region run, so the signature's scope names the region
    the request goes to.
    """

    __slots__ = ("_client", "_mixin", "_options", "_signed")

    def __init__(self, client: Any, mixin: type, before: list[tuple[bytes, bytes]],
                 request: httpx2.Request,
                 options: tuple[Any, tuple[str, ...]] | None = None) -> None:
        self._client = client
        self._mixin = mixin  # the drop-in class whose official parent runs the steps
        headers = request.headers
        previous = dict(httpx2.Headers(before, encoding=headers.encoding).items())
        self._signed = [name for name, value in headers.items() if previous.get(name) != value]
        self._options = options

    @classmethod
    def attach(cls, client: Any, mixin: type, before: list[tuple[bytes, bytes]],
               request: httpx2.Request) -> None:
        """Mark ``request`` for signing again when the SDK's steps authorised it.

        ``before``: the request's ``headers.raw`` before the step. Most steps set nothing (no
        cloud signing): the raw lists are then equal and nothing else is read."""
        options = _OPTIONS_AUTH.get()
        _OPTIONS_AUTH.set(None)
        if client._resilient_policy.enabled and (
                options is not None or request.headers.raw != before):
            resign = cls(client, mixin, before, request, options)
            if resign._signed or options is not None:
                request.extensions[SIGNER] = resign

    def __call__(self, request: httpx2.Request, region: str | None = None) -> Any:
        for name in self._signed:
            request.headers.pop(name, None)
        client = self._client.regional(region)
        official = super(self._mixin, client)  # the official class's steps, not the drop-in's
        if self._options is None:
            return official._prepare_request(request)  # type: ignore[attr-defined]
        given, names = self._options
        prepared = official._prepare_options(given)  # type: ignore[attr-defined]
        if inspect.isawaitable(prepared):
            return self._asigned(request, official, prepared, names)
        self._authorise(request, prepared, names)
        return official._prepare_request(request)  # type: ignore[attr-defined]

    async def _asigned(self, request: httpx2.Request, official: Any, prepared: Any,
                       names: tuple[str, ...]) -> None:
        self._authorise(request, await prepared, names)
        await official._prepare_request(request)

    @staticmethod
    def _authorise(request: httpx2.Request, prepared: Any, names: tuple[str, ...]) -> None:
        fresh = _headers_of(prepared)
        for name in names:
            value = fresh.get(name)
            if isinstance(value, str):
                request.headers[name] = value


def note_options(given: Any, prepared: Any) -> None:
    """After the SDK's ``_prepare_options`` (``given`` → ``prepared``): note the credentials
    it added, for the ``_prepare_request`` of the same request (see :class:`Resign`)."""
    added = _auth_added(given, prepared)
    _OPTIONS_AUTH.set((given, added) if added else None)
