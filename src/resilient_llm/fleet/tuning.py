"""The fleet's constants, in one place: the Python side reads them and the Lua prelude is
rendered from them (``scripts.py``), so both sides of a lease agree on every number."""

from __future__ import annotations

from ..engine.controllers import MIN_RATE, Cubic
from ..engine.pressure import BURST_SECONDS
from ..engine.refusals import RefusalShare

__all__ = [
    "ACTIVE_WINDOW",
    "BREAKER_CHECK_EVERY",
    "BUDGET",
    "BURST_SECONDS",
    "CONNECT_SHARE",
    "CONNECT_WAIT",
    "CUBIC_BETA",
    "CUBIC_C",
    "EVIDENCE_LEAST",
    "HEADROOM",
    "IDLE_TTL",
    "INTERACTIVE_RESERVE",
    "MAX_LEASE",
    "MIN_RATE",
    "OP_TIMEOUT",
    "PROBE_EVERY",
    "PROBE_HOLD_MOST",
    "PROBE_POLL",
    "REFUSAL_LEAST",
    "REFUSAL_MEMORY",
    "REFUSAL_SHARE",
    "REFUSAL_WEIGHT",
    "REFUSAL_Z",
    "TAU_MAX",
    "TAU_UNKNOWN",
    "THROTTLE_COOLDOWN",
    "TRIAL_COOLDOWN",
    "TRIAL_DROP",
    "TRIAL_LAG",
    "TRIAL_MARGIN",
    "TRIAL_SENDS",
    "TRIAL_STALE",
    "TRIAL_TIME",
]

#: Fraction of the header-learned rate the fleet paces at (room for clock and network jitter).
HEADROOM = 0.95
#: Fraction of the provider's bucket the lease window may use: ``r·τ + 1 ≤ BUDGET·C``.
BUDGET = 0.9
#: Longest lease validity τ, seconds: bounds how stale a lease is after a fleet-wide change.
TAU_MAX = 10.0
#: Lease validity while no limit is known yet (short, so learned limits spread quickly).
TAU_UNKNOWN = 0.25
#: Share of the burst ``batch`` leases leave to ``interactive`` (doubled after a throttle).
INTERACTIVE_RESERVE = 0.25
#: A worker counts as active for fair shares this long after its last lease, seconds.
ACTIVE_WINDOW = 30.0
#: Keys of a target nobody uses expire after this long, seconds.
IDLE_TTL = 300.0
#: Fleet throttle cuts are at most one per this many seconds (one overshoot, many 429s).
THROTTLE_COOLDOWN = 1.0
#: Bound of one Redis operation, seconds (connect and read); skipped when the call has less left.
OP_TIMEOUT = 0.05
#: Longest a caller waits for the link's connect (name lookup, TCP connect, the cluster
#: question: two operations' bounds), seconds; past it the caller paces locally meanwhile.
CONNECT_WAIT = 2 * OP_TIMEOUT
#: The share of a call's time left that it waits for the first connect at most (a call with
#: 0.12 s left waited 0.1 s for a Redis that accepted the connection and never answered, and
#: had no time left for its attempt).
CONNECT_SHARE = 0.25
#: While Redis is unreachable, one operation tries it again this often, seconds.
PROBE_EVERY = 1.0
#: A worker that saw fleet failures re-reads the fleet breaker at most this often, seconds.
BREAKER_CHECK_EVERY = 0.1
#: How often a worker asks again while another worker holds the half-open probe, seconds.
PROBE_POLL = 0.25
#: The longest a half-open probe holds the fleet's probe before another worker may probe,
#: seconds (plus one). A probe that hangs, or whose worker died, held every worker's calls
#: for the caller's whole deadline (61 s at the default) while the target served again.
PROBE_HOLD_MOST = 10.0
#: Units a worker's pooled header sets must show missing before their middle reading is its
#: rate (before, the most they allow): each set read from a whole level is half a unit
#: short, so the middle errs low by at most ``½ · sets / missing`` (5 % for one set of 10).
EVIDENCE_LEAST = 10.0
#: Largest lease, permits.
MAX_LEASE = 1000

#: The shared CUBIC cut after a throttle: the local controller's constants (botocore's).
CUBIC_C = Cubic().C
CUBIC_BETA = Cubic().BETA

#: When the fleet's 429s are a rate limit's answers: the local ``RefusalShare``'s rule over the
#: whole fleet's answers (counts decayed by this weight per answer, above this share at this
#: many standard deviations from this many answers on, or for this many seconds after a 429
#: cut the fleet's rate).
REFUSAL_WEIGHT = RefusalShare.WEIGHT
REFUSAL_SHARE = RefusalShare.SHARE
REFUSAL_Z = RefusalShare.Z
REFUSAL_LEAST = RefusalShare.LEAST
REFUSAL_MEMORY = RefusalShare.MEMORY
#: A fleet cut not shown by headers is tried as the local one is (``RefusalShare``'s trial),
#: counting from ``TRIAL_LAG`` seconds after the cut: workers report their 429s at most every
#: 0.25 s, so those of attempts sent before the cut arrive late.
TRIAL_SENDS = RefusalShare.TRIAL_SENDS
TRIAL_TIME = RefusalShare.TRIAL_TIME
TRIAL_DROP = RefusalShare.TRIAL_DROP
TRIAL_STALE = RefusalShare.STALE
TRIAL_MARGIN = RefusalShare.MARGIN
TRIAL_LAG = 0.5
#: A trial whose cut did not slow the fleet's sends ends after this long (CUBIC's cooldown).
TRIAL_COOLDOWN = Cubic.COOLDOWN
