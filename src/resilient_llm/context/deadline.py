"""One absolute deadline per call, carried in a contextvar.

A deadline is an instant on the monotonic clock, never a duration: nested scopes take the
earlier instant, and in async code anyio's effective deadline (an enclosing ``fail_after`` or
cancel scope) counts too. Every wait in resilient-llm is bounded by :func:`remaining`.

The clock starts when the scope is entered (``with deadline(2):``), or, for the decorator, each
time the decorated function is called.
"""

from __future__ import annotations

import contextvars
import importlib
import math
import sys
from asyncio import _get_running_loop as _asyncio_running_loop
from collections.abc import Callable
from datetime import timedelta
from types import TracebackType
from typing import Any, TypeVar, cast

from .._clock import SYSTEM_CLOCK, Clock
from .._errors import DeadlineExceeded
from .scoping import VarScope, decorate

__all__ = ["Deadline", "cancel_scope_deadline", "current_deadline", "deadline", "remaining",
           "to_seconds"]

F = TypeVar("F", bound=Callable[..., Any])

# The innermost effective deadline, as an absolute instant on SYSTEM_CLOCK (or None).
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "resilient_llm_deadline", default=None
)


def to_seconds(value: float | timedelta, *, name: str = "seconds") -> float:
    """Normalise seconds or a ``timedelta`` to a positive finite float, or raise ``ValueError``."""
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or a timedelta, not {value!r}")
    seconds = float(seconds)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{name} must be a positive, finite number of seconds, not {value!r}")
    return seconds


def on_asyncio() -> bool:
    """True inside a running asyncio loop (and not inside trio)."""
    if _asyncio_running_loop() is None:
        return False
    if "trio" not in sys.modules:
        return True
    import sniffio

    try:
        return bool(sniffio.current_async_library() == "asyncio")
    except sniffio.AsyncLibraryNotFoundError:
        return False


def _in_trio_run() -> bool:
    """Might this thread be inside a trio run? (``trio`` imported is not enough to say so:
    httpcore imports it whenever it is installed.) trio's public ``in_trio_run`` (trio 0.26+)
    says exactly; without it, any imported trio counts."""
    trio: Any = sys.modules.get("trio")
    if trio is None:
        return False
    in_run = getattr(getattr(trio, "lowlevel", None), "in_trio_run", None)
    return in_run is None or bool(in_run())


def _anyio_deadline(clock: Clock) -> float | None:
    """anyio's effective deadline translated onto ``clock``, when running inside an event loop."""
    if _asyncio_running_loop() is None and not _in_trio_run():
        return None  # plain sync code: the fast path, no exception raised and caught
    anyio: Any = sys.modules.get("anyio")
    if anyio is None:
        if "trio" not in sys.modules:
            return None  # asyncio without anyio ever imported: no anyio scope can be open
        anyio = importlib.import_module("anyio")  # trio's own scopes count; anyio reads them
    try:  # outside a task of a supported backend (sniffio finds none) this raises
        effective: float = anyio.current_effective_deadline()
        if effective == math.inf:
            return None
        now: float = anyio.current_time()
        return clock.now() + (effective - now)
    except Exception:  # not inside a task of a supported backend
        return None


def cancel_scope_deadline(clock: Clock = SYSTEM_CLOCK) -> float | None:
    """The effective deadline of the enclosing anyio cancel scopes, on ``clock`` (``None``
    outside async code, or without one)."""
    return _anyio_deadline(clock)


def current_deadline(*, clock: Clock = SYSTEM_CLOCK, include_anyio: bool = True) -> float | None:
    """The innermost effective deadline as an absolute instant on ``clock``, or ``None``."""
    own = _DEADLINE.get()
    if own is not None and clock is not SYSTEM_CLOCK:
        own = clock.now() + (own - SYSTEM_CLOCK.now())
    ambient = _anyio_deadline(clock) if include_anyio else None
    if own is None:
        return ambient
    if ambient is None:
        return own
    return min(own, ambient)


def remaining(*, clock: Clock = SYSTEM_CLOCK) -> float | None:
    """Seconds left on the innermost effective deadline (never negative), or ``None`` if unbounded.

    In async code an enclosing anyio deadline (``anyio.fail_after``, a cancel scope) counts too.
    """
    at = current_deadline(clock=clock)
    if at is None:
        return None
    return max(0.0, at - clock.now())


class Deadline(VarScope[float | None]):
    """A deadline scope: ``with deadline(2):``, ``async with deadline(2):`` or ``@deadline(2)``.

    Sync scopes are cooperative: every resilient-llm call inside checks and honours them. Async
    scopes also open an anyio cancel scope, so any ``await`` inside is cancelled when the time
    is up and the scope raises :class:`DeadlineExceeded`.
    """

    __slots__ = ("_async_scope", "_seconds")

    def __init__(self, seconds: float | timedelta) -> None:
        super().__init__(_DEADLINE)
        self._seconds = to_seconds(seconds, name="deadline")
        self._async_scope: Any = None

    @property
    def seconds(self) -> float:
        """The budget this scope grants, in seconds."""
        return self._seconds

    def _value(self) -> float:
        at = SYSTEM_CLOCK.now() + self._seconds
        outer = _DEADLINE.get()
        if outer is not None:
            at = min(at, outer)
        return at

    async def __aenter__(self) -> Deadline:
        import anyio

        at = cast(float, self._enter())  # the value of _value(): never None
        scope = anyio.CancelScope(deadline=anyio.current_time() + (at - SYSTEM_CLOCK.now()))
        scope.__enter__()
        self._async_scope = scope
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        scope, self._async_scope = self._async_scope, None
        try:
            swallowed = scope.__exit__(exc_type, exc, tb) if scope is not None else False
        finally:
            self._exit()
        if swallowed and scope.cancelled_caught:
            raise DeadlineExceeded(
                f"deadline of {self._seconds:g} s exceeded", budget=self._seconds
            ) from None

    def __call__(self, func: F) -> F:
        seconds = self._seconds
        return decorate(func, lambda: Deadline(seconds))

    def __repr__(self) -> str:
        return f"deadline({self._seconds:g})"


def deadline(seconds: float | timedelta) -> Deadline:
    """Bound everything inside by ``seconds`` of wall-clock time (a number or a ``timedelta``).

    Usable as ``with``, ``async with`` and as a decorator on sync or async functions. Nested
    scopes take the earlier deadline: an inner scope can shorten the budget, never extend it.
    """
    return Deadline(seconds)
