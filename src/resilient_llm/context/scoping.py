"""What every scope object shares: ``with`` / ``async with`` entry and the decorator form."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar, cast

__all__ = ["ContextScope", "decorate"]

F = TypeVar("F", bound=Callable[..., Any])
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

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


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
