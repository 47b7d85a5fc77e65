"""What every scope object shares: ``with`` / ``async with`` entry and the decorator form."""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Callable
from typing import Any, Generic, TypeVar, cast

__all__ = ["ContextScope", "VarScope", "decorate"]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
_S = TypeVar("_S", bound="ContextScope")


class ContextScope:
    """A block that sets context variables on entry and restores them on exit.

    Why one base: ``with`` and ``async with`` must mean the same for every scope (attributes,
    deadline, run); a subclass says only what entering and exiting do, and overrides the async
    methods only when the async form does more (a deadline also opens a cancel scope).
    """

    __slots__ = ()

    def _enter(self) -> object:
        raise NotImplementedError

    def _exit(self) -> None:
        raise NotImplementedError

    def __enter__(self: _S) -> _S:
        self._enter()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._exit()

    async def __aenter__(self: _S) -> _S:
        return self.__enter__()

    async def __aexit__(self, *exc_info: Any) -> None:
        self.__exit__(*exc_info)


class VarScope(ContextScope, Generic[T]):
    """A scope that sets one context variable to ``_value()`` on entry, entered at most once.

    Why at most once: exit restores the variable from the token of the entry, so a second
    entry of the same object would lose the first token and leave the variable set after
    both exits. A subclass passes its variable and says what the value becomes inside.
    """

    __slots__ = ("_token", "_var")

    def __init__(self, var: contextvars.ContextVar[T]) -> None:
        self._var = var
        self._token: contextvars.Token[T] | None = None

    def _value(self) -> T:
        """What the variable holds inside the scope (read at entry)."""
        raise NotImplementedError

    def _enter(self) -> T:
        if self._token is not None:
            kind = type(self).__name__.lstrip("_").lower()  # deadline, run, resilient
            raise RuntimeError(f"a {kind} scope cannot be entered twice; create a new one")
        value = self._value()
        self._token = self._var.set(value)
        return value

    def _exit(self) -> None:
        if self._token is not None:
            self._var.reset(self._token)
            self._token = None


def decorate(func: F, fresh: Callable[[], ContextScope]) -> F:
    """``func`` (sync or async) run inside a new scope from ``fresh()`` on every call.

    Why a new scope per call: a scope object holds the tokens of its own entry, so one object
    shared by concurrent calls (threads, tasks) would restore another call's context.
    """
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            async with fresh():
                return await func(*args, **kwargs)

        return cast(F, async_wrapper)

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with fresh():
            return func(*args, **kwargs)

    return cast(F, wrapper)
