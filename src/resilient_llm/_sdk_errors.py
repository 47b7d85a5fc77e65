"""resilient-llm's errors as the official SDK's errors too.

Code written for the official clients catches their errors: ``except openai.APIError``,
``except anthropic.RateLimitError``. An error resilient-llm raises in their place (a deadline
that ran out, an open circuit, a stream that broke after its first output) is therefore also
an instance of the error the official client would have raised there: the provider's last
answer (``RateLimitError`` for a 429 whose ``Retry-After`` passes the deadline), or with none
the SDK's timeout or connection error. It carries that error's attributes (``response``,
``status_code``, ``body``, ``request``); ``except DeadlineExceeded``, ``except TimeoutError``
and every attribute of resilient-llm's own error work as before.

The drop-in modules register their SDK here (``register_sdk``); nothing here imports one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from ._errors import ResilientLLMError, rebuild_error

__all__ = ["SdkErrors", "as_sdk_error", "register_sdk", "request_of", "sdk_errors",
           "stream_error_of"]

E = TypeVar("E", bound=ResilientLLMError)


@dataclass(frozen=True, slots=True)
class SdkErrors:
    """An SDK's errors for a failure without a provider answer to mirror."""

    #: The request did not complete (``APIConnectionError``).
    connection: type[Exception]
    #: It did not complete in time (``APITimeoutError``).
    timeout: type[Exception]
    #: The error the SDK raises for an error event in a stream (its data, the response).
    stream_error: Callable[[Any, Any], BaseException] | None = None


_SDKS: dict[str, SdkErrors] = {}
_TYPED: dict[tuple[type[BaseException], type[BaseException]], type[BaseException]] = {}
_lock = threading.Lock()


def register_sdk(provider: str, errors: SdkErrors) -> None:
    """The errors of ``provider``'s SDK (``"openai"``, ``"anthropic"``): its drop-in module
    registers them when it is imported."""
    _SDKS[provider] = errors


def sdk_errors(provider: str | None) -> SdkErrors | None:
    """The registered errors of ``provider``'s SDK, if its drop-in module was imported."""
    return _SDKS.get(provider) if provider is not None else None


def as_sdk_error(error: E, like: BaseException | None = None, *, provider: str | None = None,
                 timed_out: bool = False, request: Any = None) -> E:
    """``error``, made an instance of the SDK error the official client would have raised.

    ``like`` is that error when there is one (the provider's answer, translated by the SDK);
    otherwise ``provider``'s timeout error (``timed_out``) or connection error. ``error`` is
    changed in place and returned; without an SDK to mirror it is returned as it is.
    """
    own = _own_class(type(error))
    if like is not None:
        sdk: type[BaseException] = type(like)
        copied = {name: value for name, value in vars(like).items() if not name.startswith("__")}
    else:
        errors = sdk_errors(provider)
        if errors is None:
            return error
        sdk = errors.timeout if timed_out or isinstance(error, TimeoutError) \
            else errors.connection
        copied = _attributes_of(sdk, request)
    state = error.__dict__
    for name, value in copied.items():
        state.setdefault(name, value)
    state["message"] = str(error)  # the SDK's ``.message``: what happened, as ``str()`` says
    error.__class__ = _typed_class(own, sdk)
    return error


def _attributes_of(sdk: type[BaseException], request: Any) -> dict[str, Any]:
    """The attributes the SDK's own ``sdk(request=request)`` has: its ``body``, ``code``,
    ``type`` (``None`` without an answer), and its ``request`` as the SDK keeps it (newer
    SDKs drop the credentials' headers from it). Built by the SDK when there is a request."""
    if request is not None:
        try:
            model = cast(Any, sdk)(request=request)
        except Exception:  # (an SDK whose constructor differs: the defaults below)
            pass
        else:
            return {name: value for name, value in vars(model).items()
                    if not name.startswith("__")}
    declared = {name for cls in sdk.__mro__ for name in getattr(cls, "__annotations__", {})}
    return {"request": request, **dict.fromkeys(declared & _ANSWER_FIELDS)}


#: What an SDK error says of the provider's answer: nothing, when there was none.
_ANSWER_FIELDS = frozenset({"body", "code", "param", "type"})


def stream_error_of(provider: str | None, event: Any, response: Any) -> BaseException | None:
    """The error ``provider``'s SDK raises for the error event ``event`` of a stream."""
    errors = sdk_errors(provider)
    if errors is None or errors.stream_error is None:
        return None
    return errors.stream_error(event, response)


def request_of(error: BaseException | None) -> Any:
    """The request of an httpx2 error, or ``None`` (its ``request`` raises when unset)."""
    try:
        return getattr(error, "request", None)
    except RuntimeError:
        return None


def _own_class(cls: type[BaseException]) -> type[BaseException]:
    """resilient-llm's own class of an error, typed already or not."""
    return getattr(cls, "_resilient_own", cls)


def _sdk_class(cls: type[BaseException]) -> type[BaseException]:
    """The SDK's class of an error that may itself be one of ours, typed."""
    return getattr(cls, "_resilient_sdk", cls)


def _typed_class(own: type[BaseException], sdk: type[BaseException]) -> type[Any]:
    """The class that is both ``own`` and ``sdk`` (one per pair, made once)."""
    key = (own, sdk)
    typed = _TYPED.get(key)
    if typed is None:
        with _lock:
            typed = _TYPED.get(key)
            if typed is None:
                typed = type(own.__name__, (own, sdk), {
                    "__module__": own.__module__,
                    "__qualname__": own.__qualname__,
                    "__doc__": own.__doc__,
                    "__reduce__": _reduce,
                    "_resilient_own": own,
                    "_resilient_sdk": sdk,
                })
                _TYPED[key] = typed
    return typed


def _reduce(self: BaseException) -> tuple[Any, ...]:
    """Pickle as resilient-llm's class and the SDK's, both importable; the pair is rebuilt."""
    cls = type(self)
    return (_restore, (_own_class(cls), _sdk_class(cls), self.args, dict(vars(self))))


def _restore(own: type[BaseException], sdk: type[BaseException], args: tuple[Any, ...],
             state: dict[str, Any]) -> BaseException:
    error = rebuild_error(own, args, state)
    error.__class__ = _typed_class(own, sdk)
    return error
