"""Routing: which target serves the next attempt of a call, decided without I/O.

A call's chain is the model it asked for followed by its fallbacks (``Policy.fallbacks``,
keyed by model, or ``"*"`` for any model). A target is ``model`` or ``model@region``;
``Policy.region_endpoints`` maps a region to the base URL that serves it, so a chain can fail
over across regions too. When to move on, and when not:

* never for auth, content-policy or invalid-request failures: a fallback cannot fix them;
* ``context_length`` goes to the next model of ``Policy.context_fallbacks`` (a larger window;
  keyed like ``fallbacks``, ``"*"`` for any model), never to the same model again;
* overload, timeouts and first-token timeouts move on at once; server errors, resets, stream
  faults and short rate limits get one retry on the same target first, unless the target
  failed the attempt before too (a target failing in a row is down, not blipping);
* a target whose circuit is open, whose expected latency exceeds the time left, or which is
  saturated while the call is ``batch`` is skipped without an attempt (the last target of a
  chain is never skipped for latency or saturation: it is the last chance);
* while a fallback is ready, one attempt may use at most half of the time left, so a target
  that never answers cannot take the fallback's budget with it;
* a fallback is somewhere to go only while it could take the call (its circuit is not open,
  it has not asked to be left alone): otherwise the call stays where it is, as the official
  client would, and a move after a failure becomes a retry (so with ``[a, b, c]`` and ``c``
  down, a failing ``b`` is retried);
* when the last target fails as one that would be left, the call's remaining retries (after
  their backoff) go to the first target if it could take them: a fallback that is down must
  not take attempts the official client would have spent on the model asked for.

With ``RESILIENT_LLM_ALLOWED_REGIONS`` set, a target whose region is outside the set (or
unknown) is never used: if the chain has nothing else left, the call fails closed with
:class:`ResidencyViolation` naming it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from .._errors import ResidencyViolation, StreamInterrupted
from .._fastinit import fast_frozen_init
from .._policy import Policy
from .failure import NEVER_FALL_BACK, Failure, FailureClass

__all__ = ["BUDGET_SHARE", "FALLBACK_PATIENCE", "Router", "Step", "Target", "drop_tracebacks"]

#: Share of the remaining time one attempt may use while a fallback is ready.
BUDGET_SHARE = 0.5
#: With a fallback ready, the longest a call waits on a target's pacer before moving on (s).
FALLBACK_PATIENCE = 0.05

_MOVE_AT_ONCE = frozenset({
    FailureClass.OVERLOADED, FailureClass.TIMEOUT, FailureClass.FIRST_TOKEN_TIMEOUT,
})
#: A rate limit whose Retry-After is at most this is worth waiting for on the same target.
_SHORT_RETRY_AFTER = 2.0

Step = Literal["retry", "move", "stop"]


@dataclass(frozen=True, slots=True)
class Target:
    """A model, optionally pinned to a region (``gpt-4.1@eu``)."""

    model: str
    region: str | None = None

    @classmethod
    def parse(cls, spec: str, *, default_region: str | None = None) -> Target:
        """``model@region``; an ``@`` followed by digits only is part of the model's name
        (Vertex versions models so: ``claude-sonnet-4-5@20250929``), not a region."""
        model, sep, region = spec.rpartition("@")
        if not sep or not any(c.isalpha() for c in region):
            return cls(spec.strip(), default_region)
        return cls(model.strip(), region.strip().lower())

    def __str__(self) -> str:
        return self.model if self.region is None else f"{self.model}@{self.region}"


fast_frozen_init(Target)


@dataclass(slots=True)
class Router:
    """The chain of one call and where it stands."""

    chain: list[Target]
    context_chain: Sequence[Target]
    blocked: Sequence[Target]
    index: int = 0
    tries_here: int = 0
    reason: str | None = None
    causes: dict[str, BaseException] = field(default_factory=dict)
    on_context_chain: bool = False

    @classmethod
    def for_call(cls, policy: Policy, model: str | None) -> Router:
        """Build the chain for ``model``; raises ResidencyViolation if it cannot start."""
        if model is None:
            return cls([Target("", policy.region)], (), ())
        if not policy.fallbacks and not policy.context_fallbacks \
                and policy.allowed_regions is None and "@" not in model:
            return cls([Target(model, policy.region)], (), ())  # the common case, cheaply
        primary = Target.parse(model, default_region=policy.region)
        chain = [primary, *_targets(_chain_of(policy.fallbacks, primary.model), policy)]
        context = _targets(_chain_of(policy.context_fallbacks, primary.model), policy)
        allowed = policy.allowed_regions
        blocked: list[Target] = []
        if allowed is not None:
            blocked = [t for t in chain + context if t.region not in allowed]
            if primary in blocked:
                raise ResidencyViolation(
                    f"target {primary} is outside RESILIENT_LLM_ALLOWED_REGIONS "
                    f"({', '.join(sorted(allowed))}); set RESILIENT_LLM_REGION or pin the "
                    "model to an allowed region (model@region)",
                    target=str(primary), region=primary.region,
                )
            chain = [t for t in chain if t not in blocked]
            context = [t for t in context if t not in blocked]
        return cls(chain, context, blocked)

    @property
    def current(self) -> Target:
        return self.chain[self.index]

    @property
    def has_fallback(self) -> bool:
        return self.index + 1 < len(self.chain)

    def attempt_share(self) -> float:
        """Share of the remaining time the next attempt may use."""
        return BUDGET_SHARE if self.has_fallback else 1.0

    def skip_reason(
        self,
        *,
        circuit_open: bool,
        expected_latency: float | None,
        remaining: float | None,
        saturated: bool,
        batch: bool,
        paced: bool = False,
    ) -> str | None:
        """Why the current target should be skipped without an attempt, or ``None``.

        ``paced``: the target's pacer would hold this call longer than moving on would take.
        """
        if circuit_open:
            return "circuit_open"
        if not self.has_fallback:
            return None
        if paced:
            return "paced"
        if expected_latency is not None and remaining is not None \
                and expected_latency > remaining * self.attempt_share():
            return "too_slow_for_deadline"
        if batch and saturated:
            return "saturated"
        return None

    def after_failure(self, failure: Failure, *, failing: bool = False) -> Step:
        """Retry the same target, move to the next, or stop (the caller decides what stop means).

        ``failing``: the target failed the attempts before this one too (of any call): the
        retry on the same target is for a blip, and a target failing in a row is not one, so
        with a fallback ready the call moves on at once instead of backing off for it."""
        kind = failure.kind
        if kind is FailureClass.CONTEXT_LENGTH:
            return "move" if self.context_chain else "stop"
        if not failure.retryable:
            return "stop"  # includes quota exhaustion: the account, not the model, is out
        if kind in NEVER_FALL_BACK:
            return "retry"  # retryable only as the server asked (x-should-retry): here only
        if not self.has_fallback:
            return "retry"
        if kind in _MOVE_AT_ONCE:
            return "move"
        if kind is FailureClass.RATE_LIMITED and (failure.retry_after or 0) > _SHORT_RETRY_AFTER:
            return "move"
        return "retry" if self.tries_here < 2 and not failing else "move"

    def would_return(self, failure: Failure, *, failing: bool = False) -> bool:
        """After the chain's last target failed: should the call's remaining attempts go to
        its first target rather than to the last one (see :meth:`back_to_first`)?

        Only when the last target failed as one that would be left if there were somewhere to
        go (see :meth:`after_failure`): a fallback that is down or throttled for seconds must
        not take the rest of the call's attempts, when the official client would have spent
        them on the model asked for, which may only have been busy. Never after a
        context-length move: the earlier targets' windows were too small. (Whether the first
        target could take the call now is the plan's question: its circuit, its Retry-After.)
        """
        if self.index == 0 or self.has_fallback or self.on_context_chain:
            return False
        kind = failure.kind
        if kind in NEVER_FALL_BACK or kind is FailureClass.CONTEXT_LENGTH or not failure.retryable:
            return False
        return kind in _MOVE_AT_ONCE or failing or self.tries_here >= 2 or (
            kind is FailureClass.RATE_LIMITED
            and (failure.retry_after or 0) > _SHORT_RETRY_AFTER)

    def back_to_first(self) -> None:
        """Spend the call's remaining attempts on the first target. The later targets, tried
        or skipped, are not gone to again in this call: bouncing between a busy primary and
        a down fallback gave the primary half the attempts the official client gives it."""
        self.chain = self.chain[:1]
        self.index = 0
        self.tries_here = 0

    def failed_here(self, error: BaseException) -> None:
        """An attempt on the current target failed with ``error`` (kept as its cause; the one
        it replaces will never be raised, and lets go of its traceback)."""
        key = str(self.current)
        replaced = self.causes.get(key)
        self.causes[key] = error
        self.tries_here += 1
        if replaced is not None and replaced is not error:
            drop_tracebacks(replaced)

    def served(self) -> None:
        """The call was served: the errors of the attempts before will not be raised (a
        stream that breaks later ends with its own). Each lets go of its traceback, whose
        frames hold the call's state in their locals: a cycle only the garbage collector
        would free, on every call that was retried."""
        for error in self.causes.values():
            drop_tracebacks(error)

    def move(self, reason: str, failure: Failure | None = None) -> bool:
        """Advance to the next target; ``False`` when the chain is exhausted."""
        if failure is not None and failure.kind is FailureClass.CONTEXT_LENGTH:
            if not self.context_chain:
                return False
            nxt, *rest = self.context_chain
            self.context_chain = rest
            self.chain = [*self.chain[: self.index + 1], nxt]
            self.on_context_chain = True
        if not self.has_fallback:
            return False
        self.index += 1
        self.tries_here = 0
        if self.reason is None:
            self.reason = reason
        return True

    def residency_error(self) -> ResidencyViolation | None:
        """When every allowed target failed and only blocked ones remain, fail closed."""
        if not self.blocked:
            return None
        target = self.blocked[0]
        return ResidencyViolation(
            f"every allowed target failed; the next target {target} is outside "
            "RESILIENT_LLM_ALLOWED_REGIONS, so it was not used",
            target=str(target), region=target.region,
        )


def _chain_of(fallbacks: object, model: str) -> Sequence[str]:
    from collections.abc import Mapping

    if not isinstance(fallbacks, Mapping):
        return ()
    chain = fallbacks.get(model)
    if chain is None:
        chain = fallbacks.get("*", ())
    return [m for m in chain if m != model]


def _targets(specs: Sequence[str], policy: Policy) -> list[Target]:
    return [Target.parse(spec, default_region=policy.region) for spec in specs]


def drop_tracebacks(error: BaseException, *, breaks: bool = False) -> None:
    """Forget the tracebacks of ``error`` and of the errors it was raised from or during (the
    transport's own). Never those of the exception being handled where the call was made
    (the caller's own, in an ``except`` block: the chain ends there) or beyond it; a stream's
    break (``StreamInterrupted``) only with ``breaks``: its recovery may raise it as a cause
    until the stream ends."""
    handling = sys.exc_info()[1]
    pending: list[BaseException] = [error]
    seen: set[int] = set()
    while pending and len(seen) < 32:
        current = pending.pop()
        if id(current) in seen or current is handling \
                or (not breaks and isinstance(current, StreamInterrupted)):
            continue
        seen.add(id(current))
        current.__traceback__ = None
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
