"""Side effects that happen once: ``@side_effect``, the ``run`` scope and idempotency keys.

Agents retry: a model call times out and the step is replayed, a crashed job restarts, two
workers pick up the same job. ``@side_effect`` makes the tool's effect happen once per key, and
the key comes from durable identities only, never from the clock or a fresh UUID (a key minted
at execution time is new on every replay, so it protects nothing)::

    key         = HMAC-SHA256(secret, frame("resilient-llm/idempotency/v1", "run", run…,
                                            "tool", name, kind, identity))
    identity    = the tool-call id                       (kind "call": when one is supplied)
                | key(*args, **kwargs)                   (kind "key": explicit override)
                | SHA-256(canonical arguments)           (kind "args": otherwise)
    fingerprint = HMAC-SHA256(secret, frame(…, "fingerprint", name, SHA-256(canonical args)))

``frame`` length-prefixes every part, so no two different inputs share a message. The run is
the path of enclosing :func:`run` scopes (or ``with_options(run_id=...)``). When the identity is
a tool-call id or a custom key, the same key with other arguments raises
:class:`IdempotencyConflict`, as Stripe and the IETF draft do; when it is the arguments
themselves, other arguments are simply another action.

``secret`` is ``Policy.idempotency_secret`` (``RESILIENT_LLM_IDEMPOTENCY_SECRET``) or, when
unset, a random 256-bit secret the store creates once and keeps (per process for ``memory``, in
the file for SQLite, in Redis for Redis), so every worker sharing a store derives the same keys
and a key forwarded downstream reveals nothing about the arguments.

Canonical arguments and key derivation: :mod:`resilient_llm.idempotency.keys`; stored
outcomes: :mod:`resilient_llm.idempotency.outcomes`.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import inspect
import logging
import sys
import time
import typing
import unicodedata
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal, ParamSpec, Protocol, TypeVar, cast, overload

from pydantic import TypeAdapter, ValidationError

from .._errors import (
    DeadlineExceeded,
    IdempotencyConflict,
    IdempotencyOutcomeUnknown,
    IdempotencyStoreUnavailable,
    SideEffectFailed,
)
from .._policy import Policy
from ..context.scoping import VarScope
from ..context.tools import _TOOL_KEY, Budget, current_policy
from ..stores import Begin, Ledger, open_store
from ..stores.ledger import within
from .handoff import Handoff
from .keys import (
    _fingerprint,
    arguments_digest,
    canonical_arguments,
    canonical_json,
    derive_key,
)
from .options import ExpiredLeasePolicy, Options, SideEffectOptions
from .outcomes import decode_error, encode_error

if sys.version_info >= (3, 11):
    from typing import Unpack
else:  # (pydantic's own dependency; imported at run time so the hints resolve)
    from typing_extensions import Unpack

__all__ = [
    "DEFAULT_LEASE",
    "ExpiredLeasePolicy",
    "IdempotencyOutcomeUnknown",
    "Run",
    "SideEffect",
    "SideEffectFailed",
    "arguments_digest",
    "canonical_arguments",
    "canonical_json",
    "current_idempotency_key",
    "current_run",
    "derive_key",
    "run",
    "side_effect",
]

P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)

logger = logging.getLogger("resilient_llm.idempotency")

#: Longest lease of an execution with no deadline in force (seconds): the lease is then
#: ``Policy.deadline`` capped at this. Inside a deadline the lease is the tool's limit plus
#: ``LEASE_GRACE``, so a crashed worker's key frees up when its call would have ended anyway.
DEFAULT_LEASE = 300.0
LEASE_GRACE = 10.0
#: Time granted to record an outcome (or release a lease) once the deadline has run out.
_RECORD_FLOOR = 0.25
_FIRST_POLL = 0.005
_MAX_POLL = 0.25



# --- the run scope -------------------------------------------------------------------------------

_RUN: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar(
    "resilient_llm_run", default=()
)


def _check_id(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    value = unicodedata.normalize("NFC", value)
    if not value.strip():
        raise ValueError(f"{what} must not be empty")
    if len(value) > 1024:
        raise ValueError(f"{what} must be at most 1024 characters")
    return value


class Run(VarScope[tuple[str, ...]]):
    """A durable run scope: ``with run("order-1234"):`` (also ``async with``).

    Idempotency keys of side effects inside derive from the run id, so a replay of the same
    run (a retried step, a restarted job, a second worker) reuses them. Use an id that
    survives restarts: a job id, an order id, a workflow run id, never ``uuid4()``. Nested
    scopes extend the identity: ``run("order-1234")`` then ``run("refund")`` is the run
    ``("order-1234", "refund")``.
    """

    __slots__ = ("_run_id",)

    def __init__(self, run_id: str) -> None:
        super().__init__(_RUN)
        self._run_id = _check_id(run_id, "run_id")

    @property
    def run_id(self) -> str:
        """This scope's own id (normalised to NFC)."""
        return self._run_id

    def _value(self) -> tuple[str, ...]:
        return (*_RUN.get(), self._run_id)

    def __repr__(self) -> str:
        return f"run({self._run_id!r})"


def run(run_id: str) -> Run:
    """Scope idempotency keys to a durable run: ``with resilient_llm.run("order-1234"):``."""
    return Run(run_id)


def current_run() -> tuple[str, ...]:
    """The ids of the enclosing run scopes, outermost first (empty outside any)."""
    return _RUN.get()


def current_idempotency_key() -> str | None:
    """The idempotency key of the side effect executing here, to pass to an API that takes one."""
    return _TOOL_KEY.get()


# --- the decorator -------------------------------------------------------------------------------

@dataclasses.dataclass(slots=True)
class _Plan:
    """One invocation's settings, resolved before any I/O."""

    ledger: Ledger
    budget: Budget
    secret: bytes | None
    run: tuple[str, ...]
    kind: Literal["call", "key", "args"]
    identity: str | None
    digest: str
    lease: float
    takeover: bool
    fail_open: bool
    store_name: str
    key: str = ""
    fingerprint: str = ""

    def identify(self, secret: bytes, tool: str) -> None:
        identity = self.identity if self.identity is not None else self.digest
        self.key = derive_key(secret, run=self.run, tool=tool, kind=self.kind, identity=identity)
        self.fingerprint = _fingerprint(secret, tool, self.digest)


class SideEffect(Protocol[P, R_co]):
    """What :func:`side_effect` returns: the function itself (sync stays sync, async stays
    async, signature and docstring kept), plus the methods below."""

    #: The tool name folded into every key.
    name: str
    __name__: str
    __qualname__: str

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...

    @overload
    def __get__(self, instance: None, owner: type, /) -> SideEffect[P, R_co]: ...
    @overload
    def __get__(self, instance: object, owner: type | None = None, /) -> Callable[..., R_co]: ...
    def __get__(self, instance: object, owner: type | None = None, /) -> Any:
        """Decorated methods bind like functions (pass ``ignore=("self",)``)."""
        ...

    def with_options(
        self, *, run_id: str | None = None, tool_call_id: str | None = None
    ) -> Callable[P, R_co]:
        """This side effect with explicit ids: ``send.with_options(tool_call_id=c.id)(...)``.

        ``run_id`` replaces the enclosing :func:`run` scopes; ``tool_call_id`` (the id the model
        gave this tool call) makes the key independent of the arguments, so the same call id
        with other arguments raises :class:`IdempotencyConflict`.
        """
        ...

    def key_for(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """The idempotency key a call with these arguments would use here (may touch the store)."""
        ...

    def forget(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """Delete the ledger entry of these arguments, so the next call executes again."""
        ...


class _Engine:
    """Everything behind one ``@side_effect`` function: planning, the ledger protocol, drivers."""

    def __init__(self, func: Callable[..., Any], options: Options) -> None:
        if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
            # Its body runs only as the caller iterates, after the ledger recorded "done":
            # the first caller got an empty generator and the effect ran outside the limit.
            raise TypeError(
                f"@side_effect cannot wrap the generator function {func.__qualname__}: its "
                "body runs only while the caller iterates, so it cannot be run once and "
                "recorded; return a list (or another value) instead"
            )
        self._func = func
        self._is_async = inspect.iscoroutinefunction(func)
        self._signature = inspect.signature(func)
        unknown = options.ignore - set(self._signature.parameters)
        if unknown:
            raise ValueError(
                f"ignore= names no parameter of {func.__qualname__}: {sorted(unknown)}"
            )
        self.name = options.name or f"{func.__module__}.{func.__qualname__}"
        self._options = options
        self._adapter: TypeAdapter[Any] | None = None

    # --- the public surface --------------------------------------------------------------------

    def function(self, run_id: str | None, call_id: str | None) -> Callable[..., Any]:
        """The wrapped function: ``async def`` for coroutine functions, so introspection holds."""
        if self._is_async:

            @functools.wraps(self._func)
            async def async_call(*args: Any, **kwargs: Any) -> Any:
                return await self._acall(run_id, call_id, args, kwargs)

            return async_call

        @functools.wraps(self._func)
        def call(*args: Any, **kwargs: Any) -> Any:
            return self._call(run_id, call_id, args, kwargs)

        return call

    def with_options(
        self, *, run_id: str | None = None, tool_call_id: str | None = None
    ) -> Callable[..., Any]:
        """See :meth:`SideEffect.with_options`."""
        rid = None if run_id is None else _check_id(run_id, "run_id")
        cid = None if tool_call_id is None else _check_id(tool_call_id, "tool_call_id")
        return self.function(rid, cid)

    def key_for(self, *args: Any, **kwargs: Any) -> str:
        """See :meth:`SideEffect.key_for`."""
        plan = self._plan(None, None, args, kwargs, budget=False)
        plan.identify(plan.secret or plan.ledger.secret(), self.name)
        return plan.key

    def forget(self, *args: Any, **kwargs: Any) -> None:
        """See :meth:`SideEffect.forget`."""
        plan = self._plan(None, None, args, kwargs, budget=False)
        plan.identify(plan.secret or plan.ledger.secret(), self.name)
        plan.ledger.forget(plan.key)

    # --- planning (pure) -----------------------------------------------------------------------

    def _adapter_for_result(self) -> TypeAdapter[Any]:
        if self._adapter is None:
            try:
                hints = typing.get_type_hints(self._func)
            except Exception as exc:
                raise TypeError(
                    f"cannot resolve the return annotation of side effect {self.name!r} "
                    f"({type(exc).__name__}); its result could not be stored"
                ) from exc
            self._adapter = TypeAdapter(hints.get("return", Any))
        return self._adapter

    def _plan(self, run_id: str | None, call_id: str | None, args: Sequence[Any],
              kwargs: Mapping[str, Any], *, budget: bool = True) -> _Plan:
        policy: Policy = current_policy()
        options = self._options
        reserve = options.reserve if options.reserve is not None else policy.tool_reserve
        tool_budget = Budget(self.name, reserve=reserve if budget else 0.0,
                             timeout=options.timeout if budget else None, clock=options.clock)
        if isinstance(options.store, str) or options.store is None:
            url = options.store if options.store is not None else policy.idempotency_store
            ledger = open_store(url)
            store_name = url.split("://", 1)[0] if "://" in url else url
        else:
            ledger = options.store
            store_name = type(ledger).__name__
        self._adapter_for_result()
        digest = arguments_digest(self._signature, args, kwargs, ignore=options.ignore)
        kind: Literal["call", "key", "args"]
        identity: str | None
        if call_id is not None:
            kind, identity = "call", call_id
        elif options.key is not None:
            custom = options.key(*args, **kwargs)
            if not isinstance(custom, str) or not custom:
                raise TypeError(f"key= of side effect {self.name!r} must return a non-empty str")
            kind, identity = "key", custom
        else:
            kind, identity = "args", None
        if options.lease is not None:
            lease = options.lease
        elif tool_budget.limit is not None:
            lease = tool_budget.limit + LEASE_GRACE
        else:
            lease = min(policy.deadline, DEFAULT_LEASE)
        secret = policy.idempotency_secret.get_secret_value() \
            if policy.idempotency_secret else None
        on_expired = options.on_expired_lease or policy.idempotency_on_expired_lease
        return _Plan(
            ledger=ledger, budget=tool_budget,
            secret=secret.encode("utf-8") if secret else None,
            run=(run_id,) if run_id is not None else _RUN.get(),
            kind=kind, identity=identity, digest=digest, lease=lease,
            takeover=on_expired == "at_least_once",
            fail_open=(options.fail_open if options.fail_open is not None
                       else policy.idempotency_fail_open),
            store_name=store_name,
        )

    def _next_poll(self, plan: _Plan, delay: float) -> float:
        """How long to sleep before asking again, or raise once the budget is spent."""
        left = self._still_waiting(plan)
        return delay if left is None else min(delay, left)

    def _still_waiting(self, plan: _Plan) -> float | None:
        """The time left to wait for a concurrent execution (``None``: unbounded); once it is
        spent, the caller's ``DeadlineExceeded`` (not a store that looks unavailable, which
        the next ``begin`` with no time left would report)."""
        left = plan.budget.left_now()
        if left is not None and left <= 0:
            raise DeadlineExceeded(
                f"side effect {self.name!r} gave up waiting for a concurrent execution under the "
                f"same idempotency key: its limit of {plan.budget.limit or 0.0:.3f} s ran out",
                budget=plan.budget.limit,
            )
        return left

    def _settle(self, plan: _Plan, begun: Begin) -> Any:
        """Turn a non-run answer into the replayed result, or raise."""
        short = plan.key[:12]
        if begun.action == "replay":
            if not begun.succeeded:
                raise decode_error(begun.payload, self.name)
            try:
                return self._adapter_for_result().validate_json(begun.payload or "null")
            except ValidationError as exc:
                raise TypeError(
                    f"the stored result of side effect {self.name!r} (key {short}…) no longer "
                    f"matches its return annotation ({exc.error_count()} errors)"
                ) from exc
        if begun.action == "lost":
            raise IdempotencyStoreUnavailable(
                f"side effect {self.name!r} did not run: its idempotency store {plan.store_name} "
                f"lost its history ({begun.detail}), so whether it already ran is unknown. "
                "at_most_once fails closed; see the security page of the docs to recover"
            )
        if begun.action == "conflict":
            raise IdempotencyConflict(
                f"side effect {self.name!r} was called again under idempotency key {short}… "
                "with different arguments; the first call stands. Use a new run or tool-call id "
                "for a new action"
            )
        if begun.action == "expired":
            raise IdempotencyOutcomeUnknown(
                f"side effect {self.name!r} (key {short}…, attempt {begun.attempt}) lost its "
                "owner before an outcome was recorded: it may or may not have happened. "
                "Policy at_most_once does not run it again; check the effect, then call "
                ".forget(...) with the same arguments, or use "
                "idempotency_on_expired_lease='at_least_once'",
                key=plan.key, attempt=begun.attempt,
            )
        raise AssertionError(f"unexpected ledger action {begun.action!r}")  # pragma: no cover

    def _encode_result(self, result: Any) -> tuple[str | None, TypeError | None]:
        try:
            return self._adapter_for_result().dump_json(result, warnings="error").decode(), None
        except Exception as exc:
            error = TypeError(
                f"the result of side effect {self.name!r} cannot be stored as JSON "
                f"({type(exc).__name__}); annotate the return type with one pydantic can serialise"
            )
            error.__cause__ = exc
            return None, error

    def _is_retryable(self, exc: BaseException) -> bool:
        if isinstance(self._options.retryable, tuple):
            return isinstance(exc, self._options.retryable)
        return bool(self._options.retryable(exc))

    def _unavailable(self, plan: _Plan, exc: IdempotencyStoreUnavailable) -> None:
        if not plan.fail_open:
            raise IdempotencyStoreUnavailable(
                f"{exc}; side effect {self.name!r} did not run (fail closed: set "
                "idempotency_fail_open=true to run it without a ledger)"
            ) from exc
        logger.warning(
            "idempotency store %s unavailable; running side effect %r without a ledger "
            "(idempotency_fail_open)", plan.store_name, self.name,
        )

    def _store_failed(self, plan: _Plan, what: str, exc: IdempotencyStoreUnavailable) -> None:
        logger.warning(
            "side effect %r ran but its %s could not be recorded (key %s…, store %s): %s",
            self.name, what, plan.key[:12], plan.store_name, type(exc).__name__,
        )

    # --- drivers -------------------------------------------------------------------------------

    def _call(self, run_id: str | None, call_id: str | None, args: Sequence[Any],
              kwargs: Mapping[str, Any]) -> Any:
        plan = self._plan(run_id, call_id, args, kwargs)
        clock = plan.budget.clock
        ledger = plan.ledger
        try:
            plan.identify(plan.secret or within(_io_end(plan), ledger.secret), self.name)
            delay = _FIRST_POLL
            while True:
                begun = within(_io_end(plan), ledger.begin, plan.key, plan.fingerprint,
                               lease=plan.lease, takeover=plan.takeover)
                if begun.action != "wait":
                    break
                clock.sleep(self._next_poll(plan, delay))
                self._still_waiting(plan)
                delay = min(delay * 2, _MAX_POLL)
        except IdempotencyStoreUnavailable as exc:
            self._unavailable(plan, exc)
            return plan.budget.call(self._func, *args, **kwargs)
        if begun.action != "run":
            return self._settle(plan, begun)
        token = cast(str, begun.token)
        left = plan.budget.left_now()
        if left is not None and left <= 0:
            self._quietly(plan, "release", ledger.fail, plan.key, token, "", retryable=True)
            raise plan.budget.exceeded()
        key_token = _TOOL_KEY.set(plan.key)
        try:
            result = plan.budget.call(self._func, *args, **kwargs)
        except DeadlineExceeded:
            self._quietly(plan, "lease", ledger.abandon, plan.key, token)
            raise
        except Exception as exc:
            self._quietly(plan, "failure", ledger.fail, plan.key, token, encode_error(exc),
                          retryable=self._is_retryable(exc))
            raise
        except BaseException:
            self._quietly(plan, "lease", ledger.abandon, plan.key, token)
            raise
        finally:
            _TOOL_KEY.reset(key_token)
        payload, error = self._encode_result(result)
        if error is not None:
            self._quietly(plan, "failure", ledger.fail, plan.key, token, encode_error(error),
                          retryable=False)
            raise error
        self._quietly(plan, "result", ledger.complete, plan.key, token, cast(str, payload))
        return result

    def _quietly(self, plan: _Plan, what: str, op: Callable[..., Any], *args: Any,
                 **kwargs: Any) -> None:
        try:
            within(_io_end(plan, _RECORD_FLOOR), op, *args, **kwargs)
        except IdempotencyStoreUnavailable as exc:
            self._store_failed(plan, what, exc)

    async def _io(self, plan: _Plan, op: Callable[..., Any], *args: Any,
                  floor: float = 0.0, **kwargs: Any) -> Any:
        end = _io_end(plan, floor)
        if plan.ledger.blocking:
            import anyio.to_thread

            return await anyio.to_thread.run_sync(
                functools.partial(within, end, op, *args, **kwargs)
            )
        return within(end, op, *args, **kwargs)

    async def _aquietly(self, plan: _Plan, what: str, op: Callable[..., Any], *args: Any,
                        **kwargs: Any) -> None:
        import anyio

        with anyio.CancelScope(shield=True):
            try:
                await self._io(plan, op, *args, floor=_RECORD_FLOOR, **kwargs)
            except IdempotencyStoreUnavailable as exc:
                self._store_failed(plan, what, exc)

    async def _abegin(self, plan: _Plan) -> Begin:
        """``ledger.begin`` for an async caller, whose claim is never lost to a cancellation.

        A cancelled caller stops waiting, but the store's I/O (on a worker thread) runs to
        its end: a claim it made is then freed (the effect did not run). Before, the claim
        held the key for its whole lease, and the retry read "outcome unknown"."""
        import anyio.lowlevel
        import anyio.to_thread

        ledger = plan.ledger
        begin = functools.partial(within, _io_end(plan), ledger.begin, plan.key,
                                  plan.fingerprint, lease=plan.lease, takeover=plan.takeover)
        if not ledger.blocking:
            begun: Begin = begin()
            try:
                await anyio.lowlevel.checkpoint()  # a cancellation that is already due
            except BaseException:
                if begun.action == "run":
                    await self._release(plan, begun)
                raise
            return begun
        handoff: Handoff[Begin] = Handoff()

        def work() -> Begin:
            answer: Begin = begin()
            if not handoff.deliver(answer) and answer.action == "run":  # the caller left
                with contextlib.suppress(IdempotencyStoreUnavailable):
                    within(_io_end(plan, _RECORD_FLOOR), ledger.fail, plan.key,
                           cast(str, answer.token), "", retryable=True)
            return answer

        try:
            return await anyio.to_thread.run_sync(work)
        except BaseException:
            answer = handoff.leave()  # (delivered before the caller left, or never)
            if answer is not None and answer.action == "run":
                await self._release(plan, answer)
            raise

    async def _release(self, plan: _Plan, begun: Begin) -> None:
        """Free a claim whose effect did not run (the next call may run it)."""
        await self._aquietly(plan, "release", plan.ledger.fail, plan.key,
                             cast(str, begun.token), "", retryable=True)

    async def _acall(self, run_id: str | None, call_id: str | None, args: Sequence[Any],
                     kwargs: Mapping[str, Any]) -> Any:
        plan = self._plan(run_id, call_id, args, kwargs)
        clock = plan.budget.clock
        ledger = plan.ledger
        import anyio.lowlevel

        func = cast(Callable[..., Awaitable[Any]], self._func)
        try:
            secret = plan.secret or await self._io(plan, ledger.secret)
            plan.identify(secret, self.name)
            delay = _FIRST_POLL
            while True:
                begun = await self._abegin(plan)
                if begun.action != "wait":
                    break
                await clock.asleep(self._next_poll(plan, delay))
                await anyio.lowlevel.checkpoint()
                self._still_waiting(plan)
                delay = min(delay * 2, _MAX_POLL)
        except IdempotencyStoreUnavailable as exc:
            self._unavailable(plan, exc)
            return await plan.budget.acall(func, *args, **kwargs)
        if begun.action != "run":
            return self._settle(plan, begun)
        token = cast(str, begun.token)
        left = plan.budget.left_now()
        if left is not None and left <= 0:
            await self._aquietly(plan, "release", ledger.fail, plan.key, token, "",
                                 retryable=True)
            raise plan.budget.exceeded()
        key_token = _TOOL_KEY.set(plan.key)
        try:
            result = await plan.budget.acall(func, *args, **kwargs)
        except DeadlineExceeded:
            await self._aquietly(plan, "lease", ledger.abandon, plan.key, token)
            raise
        except Exception as exc:
            await self._aquietly(plan, "failure", ledger.fail, plan.key, token,
                                 encode_error(exc), retryable=self._is_retryable(exc))
            raise
        except BaseException:
            await self._aquietly(plan, "lease", ledger.abandon, plan.key, token)
            raise
        finally:
            _TOOL_KEY.reset(key_token)
        payload, error = self._encode_result(result)
        if error is not None:
            await self._aquietly(plan, "failure", ledger.fail, plan.key, token,
                                 encode_error(error), retryable=False)
            raise error
        await self._aquietly(plan, "result", ledger.complete, plan.key, token,
                             cast(str, payload))
        return result


def _io_end(plan: _Plan, floor: float = 0.0) -> float | None:
    """When the ledger I/O of ``plan`` must end (``time.monotonic()``): at the tool's limit, or
    ``floor`` seconds from now when that is later (to record an outcome after the limit).

    With ``fail_open``, the I/O before the function runs (``floor`` 0) gets half the time
    left: a store that does not answer must leave the function time to run without it (it
    took the whole limit, and the function, promised to run, never did)."""
    left = plan.budget.left_now()
    if left is None:
        return None
    if plan.fail_open and floor == 0.0:
        left /= 2
    return time.monotonic() + max(left, floor)


@overload
def side_effect(func: Callable[P, R], /) -> SideEffect[P, R]: ...
@overload
def side_effect(
    **options: Unpack[SideEffectOptions],
) -> Callable[[Callable[P, R]], SideEffect[P, R]]: ...


def side_effect(
    func: Callable[P, R] | None = None, /, **options: Unpack[SideEffectOptions],
) -> SideEffect[P, R] | Callable[[Callable[P, R]], SideEffect[P, R]]:
    """Run a sync or async function at most once per idempotency key: ``@side_effect``.

    Concurrent duplicates wait for the first execution and get its result; later calls replay
    the stored result (validated back into the return annotation's type) or re-raise the
    recorded error. The function runs under the caller's deadline minus ``reserve`` like a
    :func:`~resilient_llm.tool`. Options (typed by :class:`~resilient_llm.SideEffectOptions`;
    ``None`` = the policy's value):

    - ``key``: ``key(*args, **kwargs) -> str`` replaces the arguments (or tool-call id) as the
      action's identity; arguments still form the fingerprint checked for conflicts.
    - ``store``: ``memory``, ``sqlite:///PATH``, ``redis://...`` or a ledger instance
      (``RESILIENT_LLM_IDEMPOTENCY_STORE``).
    - ``name``: the tool name in the key; pin it so keys survive renaming the function.
    - ``on_expired_lease``: ``at_most_once`` raises :class:`IdempotencyOutcomeUnknown` when a
      crashed owner's lease expired; ``at_least_once`` runs again.
    - ``fail_open``: run without a ledger when the store is down (default: refuse).
    - ``retryable``: errors that free the key instead of being replayed; by default only
      ``ConnectionRefusedError`` (the request never reached the server).
    - ``lease``: how long an execution holds the key (default: its limit + 10 s, or 300 s).
    - ``ignore``: parameter names left out of the arguments (clients, loggers, ``self``).
    - ``clock``: for tests.
    """
    checked = Options(options)

    def decorate(fn: Callable[P, R]) -> SideEffect[P, R]:
        engine = _Engine(fn, checked)
        wrapper: Any = engine.function(None, None)
        wrapper.name = engine.name
        wrapper.with_options = engine.with_options
        wrapper.key_for = engine.key_for
        wrapper.forget = engine.forget
        wrapper.__side_effect__ = engine
        return cast(SideEffect[P, R], wrapper)

    if func is not None:
        return decorate(func)
    return decorate

