"""Tools that share the caller's deadline.

An agent whose budget runs out at 7.9 s must not declare a tool failed that was given 8 s. So a
tool never gets a limit of its own invention: inside a deadline it runs under

    limit = min(remaining() − reserve, timeout)

where ``reserve`` (``Policy.tool_reserve``, 1 s by default) is the time the caller keeps to use
the tool's answer or its failure, and ``timeout`` is an optional cap of the tool's own. The
tool's limit therefore always ends ``reserve`` seconds before the caller's deadline: the
caller's deadline never fires while a tool is still inside its limit. A tool with no time left
(``limit ≤ 0``) is not started.

Async tools are cancelled at their limit and raise :class:`DeadlineExceeded`. Sync tools are
cooperative: Python cannot interrupt a thread, so the limit is installed as the deadline in
force inside the tool (``remaining()``, resilient-llm calls and :func:`deadline_headers` all
honour it) and a sync tool that ignores it runs to completion.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import math
import os
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from typing import Any, ParamSpec, TypeVar, cast, overload

from .. import _clock
from .._clock import Clock
from .._errors import DeadlineExceeded
from .._policy import Policy
from .deadline import Deadline, remaining, to_seconds
from .overrides import effective_policy

__all__ = ["current_policy", "deadline_headers", "tool", "tool_limit"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

# The idempotency key of the side effect running in this context (set by ``@side_effect``).
_TOOL_KEY: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "resilient_llm_tool_key", default=None
)

_env_policy: tuple[tuple[tuple[str, str], ...], Policy] | None = None


def current_policy() -> Policy:
    """The policy in force: ``RESILIENT_LLM_*`` settings plus enclosing ``@resilient`` scopes."""
    global _env_policy
    env = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(Policy.ENV_PREFIX)))
    cached = _env_policy
    if cached is None or cached[0] != env:
        cached = (env, Policy.from_env())
        _env_policy = cached
    return effective_policy(cached[1])


def tool_limit(
    left: float | None, *, reserve: float, timeout: float | None = None
) -> float | None:
    """The seconds a tool may take when ``left`` seconds remain: ``min(left − reserve, timeout)``.

    ``None`` means unbounded (no deadline and no timeout). The result may be ≤ 0: then the tool
    must not start. A pure function, so the rule is tested without any clock.
    """
    limit = None if left is None else left - reserve
    if timeout is not None:
        limit = timeout if limit is None else min(limit, timeout)
    return limit


def _seconds_or_none(value: float | timedelta | None, name: str, *, zero_ok: bool) -> float | None:
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if zero_ok and not isinstance(seconds, bool) and seconds == 0:
        return 0.0
    return to_seconds(seconds, name=name)


class Budget:
    """The limit one tool call runs under, decided when the call starts."""

    __slots__ = ("clock", "end", "left", "limit", "name", "reserve")

    def __init__(self, name: str, *, reserve: float, timeout: float | None,
                 clock: Clock | None) -> None:
        self.name = name
        self.reserve = reserve
        self.clock = clock if clock is not None else _clock.SYSTEM_CLOCK
        self.left = remaining(clock=self.clock)
        self.limit = tool_limit(self.left, reserve=reserve, timeout=timeout)
        self.end = None if self.limit is None else self.clock.now() + self.limit
        if self.limit is not None and self.limit <= 0:
            raise DeadlineExceeded(
                f"tool {name!r} was not started: {max(self.left or 0.0, 0.0):.3f} s left on "
                f"the deadline and {reserve:g} s reserved for the caller",
                budget=0.0,
            )

    def left_now(self) -> float | None:
        """Seconds left of this tool's limit, or ``None`` when unbounded."""
        return None if self.end is None else max(0.0, self.end - self.clock.now())

    def exceeded(self) -> DeadlineExceeded:
        """The error raised when the tool hits its limit."""
        limit = self.limit if self.limit is not None else 0.0
        how = (f"the caller's remaining {self.left:.3f} s minus a {self.reserve:g} s reserve"
               if self.left is not None and self.left - self.reserve <= limit
               else "its own timeout")
        return DeadlineExceeded(
            f"tool {self.name!r} exceeded its limit of {limit:.3f} s ({how})", budget=limit
        )

    def call(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run sync ``func`` with this limit as the deadline in force (cooperative)."""
        left = self.left_now()
        if left is None:
            return func(*args, **kwargs)
        if left <= 0:
            raise self.exceeded()
        with Deadline(left):
            return func(*args, **kwargs)

    async def acall(self, func: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Run async ``func``, cancelled when this limit runs out."""
        import anyio

        left = self.left_now()
        if left is None:
            return await func(*args, **kwargs)
        if left <= 0:
            raise self.exceeded()
        with Deadline(left), anyio.CancelScope(deadline=anyio.current_time() + left) as scope:
            return await func(*args, **kwargs)
        # Reached only when the scope cancelled the tool and swallowed the cancellation.
        assert scope.cancelled_caught
        raise self.exceeded()


def _resolve_reserve(reserve: float | None) -> float:
    if reserve is not None:
        return reserve
    return current_policy().tool_reserve


@overload
def tool(func: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def tool(
    *,
    reserve: float | timedelta | None = None,
    timeout: float | timedelta | None = None,
    name: str | None = None,
    clock: Clock | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def tool(
    func: Callable[P, R] | None = None,
    /,
    *,
    reserve: float | timedelta | None = None,
    timeout: float | timedelta | None = None,
    name: str | None = None,
    clock: Clock | None = None,
) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
    """Run a sync or async function as a deadline-aware tool: ``@tool`` or ``@tool(reserve=1)``.

    Inside a deadline the function gets ``remaining() − reserve`` seconds (``reserve``
    defaults to ``Policy.tool_reserve``), capped by ``timeout`` when given, so the caller
    never gives up on a tool that is still inside its limit. Async tools are cancelled at the
    limit with :class:`DeadlineExceeded`; sync tools see the limit as their deadline
    (cooperative). A tool with no time left is not started. ``clock`` is for tests.
    """
    reserve_s = _seconds_or_none(reserve, "reserve", zero_ok=True)
    timeout_s = _seconds_or_none(timeout, "timeout", zero_ok=False)

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        tool_name: str = name or getattr(fn, "__qualname__", None) or repr(fn)
        if inspect.iscoroutinefunction(fn):
            afn = cast(Callable[..., Coroutine[Any, Any, Any]], fn)

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                budget = Budget(tool_name, reserve=_resolve_reserve(reserve_s),
                                timeout=timeout_s, clock=clock)
                return await budget.acall(afn, *args, **kwargs)

            return cast(Callable[P, R], async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            budget = Budget(tool_name, reserve=_resolve_reserve(reserve_s),
                            timeout=timeout_s, clock=clock)
            return budget.call(fn, *args, **kwargs)

        return wrapper

    if func is not None:
        return decorate(func)
    return decorate


def deadline_headers(*, reserve: float = 0.0) -> dict[str, str]:
    """HTTP headers that hand this call's budget and idempotency key to a downstream service.

    ``Request-Timeout`` is the seconds left on the deadline in force (inside a tool: the
    tool's limit) minus ``reserve``, rounded down to milliseconds, so the server can stop work
    nobody will wait for. ``Idempotency-Key`` (a structured-field string, as in the IETF
    draft) is present inside ``@side_effect``, so a retried request is deduplicated by a
    server that honours it. Empty when there is neither a deadline nor a key.
    """
    headers: dict[str, str] = {}
    left = remaining(clock=_clock.SYSTEM_CLOCK)
    if left is not None:
        seconds = math.floor(max(0.0, left - reserve) * 1000) / 1000
        headers["Request-Timeout"] = f"{seconds:.3f}"
    key = _TOOL_KEY.get()
    if key is not None:
        headers["Idempotency-Key"] = f'"{key}"'
    return headers
