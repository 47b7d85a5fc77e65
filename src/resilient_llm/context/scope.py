"""``@resilient(...)``: override the policy for every call made inside a function or block."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from types import TracebackType
from typing import Any, TypeVar, cast

from .._errors import ConfigError
from .._policy import Policy, Priority
from .deadline import Deadline
from .overrides import OVERRIDES, Overrides, effective_policy, freeze, merged
from .scoping import VarScope, decorate

__all__ = ["effective_policy", "resilient"]

F = TypeVar("F", bound=Callable[..., Any])

class _Resilient(VarScope[Overrides]):
    """The scope behind :func:`resilient` (its changes already validated)."""

    __slots__ = ("_block", "_deadline", "_frozen", "_scope", "_tool", "_tool_reserve")

    def __init__(self, frozen: Overrides, seconds: float | None,
                 tool: bool = False, tool_reserve: float | None = None) -> None:
        super().__init__(OVERRIDES)
        self._frozen = frozen
        self._deadline = seconds
        self._tool = tool
        self._tool_reserve = tool_reserve
        #: In a ``with`` block there is no function to make a tool: ``tool_reserve`` is the
        #: reserve of the tools called inside (``Policy.tool_reserve``).
        self._block = frozen if tool_reserve is None else tuple(sorted(
            (*frozen, ("tool_reserve", tool_reserve, tool_reserve))))
        self._scope: Deadline | None = None

    def _value(self) -> Overrides:
        return merged(self._block)

    def _enter(self) -> Overrides:
        if self._tool:
            raise TypeError("resilient(tool=True) makes the function it decorates a tool; a "
                            "with block has no function: decorate it, or use "
                            "resilient_llm.tool")
        overrides = super()._enter()
        if self._deadline is not None:
            self._scope = Deadline(self._deadline).__enter__()
        return overrides

    def _exit(self) -> None:
        scope, self._scope = self._scope, None
        try:
            if scope is not None:
                scope.__exit__(None, None, None)
        finally:
            super()._exit()

    async def __aenter__(self) -> _Resilient:
        if self._tool:
            self._enter()  # raises: a with block has no function to make a tool
        super()._enter()
        if self._deadline is not None:
            self._scope = await Deadline(self._deadline).__aenter__()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        scope, self._scope = self._scope, None
        try:
            if scope is not None:
                await scope.__aexit__(et, e, tb)
        finally:
            super()._exit()

    def __call__(self, func: F) -> F:
        frozen, seconds = self._frozen, self._deadline
        if self._tool or self._tool_reserve is not None:
            from .tools import tool

            func = cast(F, tool(reserve=self._tool_reserve)(func))
        return decorate(func, lambda: _Resilient(frozen, seconds))


def resilient(
    *,
    deadline: float | timedelta | None = None,
    fallbacks: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
    priority: Priority | None = None,
    max_attempts: int | None = None,
    tool: bool = False,
    tool_reserve: float | None = None,
    **policy_changes: Any,
) -> _Resilient:
    """Override the policy for every drop-in client call inside (decorator or ``with`` block).

    ``deadline`` opens a deadline scope (nested scopes take the earlier deadline);
    ``fallbacks`` is a model or a list of them (for any model the calls ask for) or a model →
    chain map;
    ``priority`` is ``interactive`` or ``batch``; any other :class:`Policy` field may be passed
    by name. ``tool=True`` (or a ``tool_reserve``) runs the decorated function as a
    deadline-aware tool: it gets the caller's remaining time minus ``tool_reserve`` (default
    ``Policy.tool_reserve``), see :func:`resilient_llm.tool`; in a ``with`` block, which has no
    function, ``tool_reserve`` is the reserve of the tools called inside and ``tool=True`` a
    ``TypeError``. Invalid values raise :class:`ConfigError` at decoration time.
    """
    changes = dict(policy_changes)
    if priority is not None:
        changes["priority"] = priority
    if max_attempts is not None:
        changes["max_attempts"] = max_attempts
    if fallbacks is not None:
        changes["fallbacks"] = _chains(fallbacks)
    seconds = None
    if deadline is not None:
        from .deadline import to_seconds

        try:
            seconds = to_seconds(deadline, name="deadline")
        except (TypeError, ValueError):
            raise ConfigError("resilient(deadline=...)", deadline,
                              "expected a positive, finite number of seconds or a timedelta"
                              ) from None
    if changes:
        Policy(**changes)  # validate now, at decoration time, not on the first call
    frozen: Overrides = tuple((k, freeze(v), v) for k, v in sorted(changes.items()))
    if tool_reserve is not None:
        Policy(tool_reserve=tool_reserve)  # as a tool's reserve or the block's, the same range
    return _Resilient(frozen, seconds, tool, tool_reserve)


def _chains(fallbacks: object) -> dict[str, Any]:
    """``resilient(fallbacks=...)`` as the policy's model → chain map. One name is a chain of
    one (a string is not split into its characters)."""
    if isinstance(fallbacks, str):
        return {"*": [fallbacks]}
    if isinstance(fallbacks, Mapping):
        return dict(fallbacks)
    if isinstance(fallbacks, (list, tuple)):
        return {"*": list(fallbacks)}
    raise ConfigError("resilient(fallbacks=...)", fallbacks,
                      "expected a model name, a list of model names, or a mapping of model "
                      "name to such a list")
