"""The options of ``@side_effect``: typed once for callers, checked once into one value.

Why a module of their own: the decorator has two forms (``@side_effect`` and
``@side_effect(...)``), each typed by an overload, and an engine that keeps the options for
every call. :class:`SideEffectOptions` is the one list callers see (both overloads unpack
it); :class:`Options` is what the engine keeps, with the defaults, durations in seconds and
every check done when the function is decorated.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Sequence
from typing import Literal, TypedDict

from .._clock import Clock
from .._errors import ConfigError
from ..context.tools import _seconds_or_none
from ..stores import Ledger, redact_url

__all__ = ["ExpiredLeasePolicy", "Options", "Retryable", "SideEffectOptions"]

ExpiredLeasePolicy = Literal["at_most_once", "at_least_once"]
Retryable = tuple[type[BaseException], ...] | Callable[[BaseException], bool]


class SideEffectOptions(TypedDict, total=False):
    """The keyword options of :func:`~resilient_llm.side_effect` (``None``: the policy's
    value); its docstring says what each one does. A type of its own so that both forms of
    the decorator, and a caller's own option sets, are checked against one list."""

    key: Callable[..., str] | None
    store: str | Ledger | None
    name: str | None
    on_expired_lease: ExpiredLeasePolicy | None
    fail_open: bool | None
    reserve: float | _dt.timedelta | None
    timeout: float | _dt.timedelta | None
    lease: float | _dt.timedelta | None
    retryable: Retryable
    ignore: Sequence[str]
    clock: Clock | None


class Options:
    """One decorated function's options, checked when it is decorated: defaults filled in,
    durations in seconds. Read from :class:`SideEffectOptions`, so their types are written
    once."""

    __slots__ = ("clock", "fail_open", "ignore", "key", "lease", "name", "on_expired_lease",
                 "reserve", "retryable", "store", "timeout")

    def __init__(self, given: SideEffectOptions) -> None:
        known = SideEffectOptions.__optional_keys__
        unknown = sorted(set(given) - known)
        if unknown:
            raise TypeError(f"side_effect() got unknown options {unknown}; it takes "
                            f"{', '.join(sorted(known))}")
        on_expired_lease = given.get("on_expired_lease")
        if on_expired_lease not in (None, "at_most_once", "at_least_once"):
            raise ValueError("on_expired_lease must be 'at_most_once' or 'at_least_once'")
        self.on_expired_lease = on_expired_lease
        self.key = given.get("key")
        self.store = _checked_store(given.get("store"))
        self.name = given.get("name")
        self.fail_open = given.get("fail_open")
        self.reserve = _seconds_or_none(given.get("reserve"), "reserve", zero_ok=True)
        self.timeout = _seconds_or_none(given.get("timeout"), "timeout", zero_ok=False)
        self.lease = _seconds_or_none(given.get("lease"), "lease", zero_ok=False)
        #: By default only a refused connection (the request never reached the server).
        self.retryable: Retryable = given.get("retryable", (ConnectionRefusedError,))
        self.ignore = frozenset(given.get("ignore", ()))
        self.clock = given.get("clock")


def _checked_store(store: object) -> str | Ledger | None:
    """``store=`` as given, once checked as the policy checks its idempotency store: a bad URL
    is an error where the function is decorated, not at its first call."""
    if store is None or isinstance(store, Ledger):
        return store
    if not isinstance(store, str):
        raise TypeError(f"side_effect(store=...) takes a store URL or a Ledger, got "
                        f"{type(store).__name__}")
    from .._policy import Policy

    try:
        Policy(idempotency_store=store)
    except ConfigError as exc:
        raise ConfigError("side_effect(store=...)", redact_url(store), exc.accepted) from None
    return store
