"""How long to wait before retry ``n``: full jitter, floored by what the provider asked for."""

from __future__ import annotations

from .._clock import RandomSource
from .classify import Failure

__all__ = ["FIRST_THROTTLE_WINDOW", "THROTTLE_BASE", "TRANSIENT_BASE", "backoff_delay", "clipped"]

#: Base of the exponential for throttles (429/529/503): the provider is short of capacity.
THROTTLE_BASE = 1.0
#: The first retry's window after a throttle: the official SDKs' first delay (0.375–0.5 s).
#: A lone 429 is most often transient; a second in a row is throttling that lasts.
FIRST_THROTTLE_WINDOW = 0.5
#: Base for transient errors (5xx, resets, timeouts): usually gone on the next try.
TRANSIENT_BASE = 0.25
#: Widest positive spread added after a server-directed delay.
_HINT_SPREAD = 5.0
#: The first retry's spread after a hint, as a share of the hint.
_FIRST_SPREAD = 0.1


def backoff_delay(
    *,
    retry: int,
    failure: Failure,
    rng: RandomSource,
    max_backoff: float,
    pressure: float = 0.0,
    floor: float = 0.0,
    limit: float | None = None,
) -> float:
    """Seconds to wait before retry number ``retry`` (1 = first retry).

    ``cap = min(max_backoff, base · 2^(retry−1)) · (1 + pressure)`` with ``base`` 1 s for
    throttles (a 503 only under pressure ≥ 0.5; the first retry's window is 0.5 s, the
    official SDKs' first delay) and 0.25 s otherwise; ``pressure`` ≥ 0 (0 = calm) widens the
    window when the target is under load. ``jitter = U(0, cap)`` (AWS "full jitter").

    ``hint = max(Retry-After, floor)`` where ``floor`` is the pacer's time until capacity.
    The first retry waits ``hint + U(0, 0.1 · hint)``; later ones
    ``max(jitter, hint + U(0, min(cap, 5)))``: never sooner than asked, spread after it so
    clients released by the same reset do not retry in one wave. Without a hint the wait is
    ``jitter``.

    A first retry from a calm target is never slower than the official SDKs' (0.375–0.5 s,
    or the hint): one transient fault must not cost a caller more than the client it
    replaced (the caller passes a first retry the pressure without the throttle it answers;
    the concurrency limit, the pacer and the retry budget keep retries from amplifying an
    overload).

    ``limit`` (the time the deadline leaves for waiting) clips the jitter window to ``limit``
    and the spread to a quarter of ``limit − hint``, never the hint: a retry that fits after
    what the provider asked for is taken, early enough to finish. The caller still checks
    that the result fits; this function does not sleep.
    """
    if retry < 1:
        raise ValueError("retry numbers start at 1")
    first = retry == 1
    cap = _window(retry, failure, max_backoff, pressure) * (1.0 + max(pressure, 0.0))
    hint = max(failure.retry_after or 0.0, floor)
    spread = _FIRST_SPREAD * hint if first else min(cap, _HINT_SPREAD)
    if limit is not None:  # what the deadline leaves: the retry must still fit after the wait
        cap = min(cap, max(limit, 0.0))
        spread = min(spread, max(0.0, limit - hint) / 4)
    if hint > 0 and first:
        return hint + rng.uniform(0.0, spread)
    jitter = rng.uniform(0.0, cap)
    return max(jitter, hint + rng.uniform(0.0, spread)) if hint > 0 else jitter


def clipped(*, retry: int, failure: Failure, max_backoff: float, limit: float,
            pressure: float = 0.0) -> bool:
    """Does the deadline clip retry ``retry``'s backoff window (``limit`` is what it leaves for
    waiting)? A server-directed delay is never clipped: a retry that fits after it is taken."""
    if failure.retry_after is not None:
        return False
    return limit < _window(retry, failure, max_backoff, pressure)


def _window(retry: int, failure: Failure, max_backoff: float, pressure: float) -> float:
    """``min(max_backoff, base · 2^(retry−1))``, before pressure widens it."""
    base = _base(failure, pressure)
    if retry == 1 and base == THROTTLE_BASE:
        return min(max_backoff, FIRST_THROTTLE_WINDOW)
    return min(max_backoff, base * (2.0 ** min(retry - 1, 32)))


def _base(failure: Failure, pressure: float) -> float:
    """The exponential's base: a throttle's, or a transient error's. A 503 says "unavailable"
    and is a throttle only while the target shows pressure: from a calm target it is a blip or
    a partial failure, retried as quickly as the official SDK retries it."""
    if failure.throttle and (failure.status != 503 or pressure >= 0.5):
        return THROTTLE_BASE
    return TRANSIENT_BASE
