"""Fleet-wide pressure state in Redis: one API key, many workers, one well-paced client.

With ``RESILIENT_LLM_REDIS_URL`` set, :func:`fleet_pressure` builds a :class:`FleetPressure`
per target — a :class:`~resilient_llm.engine.pressure.TargetPressure` whose pacer and breaker
consult Redis — so every process sharing a key behaves like one client. The drivers see the
same interface as without Redis. What is shared, and why that and no more:

* **Rate** (§3.2 of the algorithms reference): per target one GCRA per dimension (requests,
  tokens), in one Redis hash, updated by Lua with the *server's* clock (``TIME``). The rate
  is the providers' header-learned rate (``Σ(L − R − ½)/Σ T`` over recent headers, smoothed
  across workers) times ``HEADROOM`` (0.95), lowered by the shared
  CUBIC state after a throttle. Workers do not ask per call: they take a **lease** of ``k``
  permits per round trip. Permit ``j`` of a lease has a conformance time ``s_j`` on the
  fleet's timeline (``s_j = tat_j − τ``) and may be used in ``[s_j, s_j + τ]``; an unused
  permit is void after that. Hence, for any window ``w``, the fleet sends at most
  ``r·(w + τ) + 1`` requests, and choosing ``τ = min(10 s, (BUDGET·C − 1)/r)`` (``C`` the
  provider's bucket size from ``x-ratelimit-limit-*``, ``BUDGET`` 0.9) keeps that within the
  provider's bucket ``C + ρ·w`` for every ``w``. Lease size ``k = clamp(⌈d·τ⌉, 1, ⌊r·τ/N⌋)``
  (``d`` this worker's demand, ``N`` active workers): a busy worker pays one round trip per
  ``d·τ`` calls, and no worker holds more than its fair share of the window.
* **Throttles**: a 429/529/503 seen by any worker runs the botocore CUBIC cut once for the
  fleet (``W_max = r``, ``r ← β·r``, ``K = ∛(W_max·(1 − β)/C)``), at most once per second
  (one overshoot is seen by many workers at once); every worker paces by
  ``C·(t − t_throttle − K)³ + W_max`` computed on the server clock, so recovery is shared too.
* **Priorities**: ``batch`` leases may take only permits that conform now and must leave
  ``INTERACTIVE_RESERVE`` (25 %, 50 % while recovering from a throttle) of the burst; only
  ``interactive`` leases may also book slots ahead. Under pressure batch waits first.
* **Breaker**: open/half-open state, a fleet failure window and the single half-open probe
  live in a second hash. Health failures are reported as they happen (and successes ride on
  lease refills), so the fleet trips once; the first worker that asks after the break gets the
  one probe (a holder field with an expiry, set atomically), everyone else stays open.
* **Keys**: ``rllm:v1:{<credential hash>}:<target id>:{rate,brk,who}`` — the hash tag keeps a
  credential's keys on one Redis Cluster shard; every key has an idle expiry (``IDLE_TTL``).

Concurrency limits and retry budgets stay local (they are about this process's sockets).

Redis failure is not the app's failure: every operation is bounded by ``OP_TIMEOUT`` (and
skipped when the call has less left), made without holding the target's lock, and on a
timeout or a disconnect the process falls back to local pacing at ``1/N`` of the provider's
limits (``N`` = the last known number of active workers), logs one WARNING per outage, counts
it in :func:`fleet_stats`, and probes Redis again every ``PROBE_EVERY`` seconds to rejoin.
``redis`` is imported only when the first fleet-backed target is created.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import random
import secrets
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from string import Template
from typing import Any

from .._clock import RandomSource
from .._policy import Priority
from ..engine.breaker import Breaker, counts_for_health
from ..engine.classify import Failure, FailureClass
from ..engine.pressure import RateLimits, TargetKey, TargetPressure

__all__ = [
    "HEADROOM",
    "INTERACTIVE_RESERVE",
    "OP_TIMEOUT",
    "FleetBreaker",
    "FleetPressure",
    "FleetSnapshot",
    "FleetStats",
    "Lease",
    "fleet_keys",
    "fleet_pressure",
    "fleet_stats",
    "lease_size",
]

logger = logging.getLogger("resilient_llm")

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
#: While Redis is unreachable, one operation tries it again this often, seconds.
PROBE_EVERY = 1.0
#: A worker that saw fleet failures re-reads the fleet breaker at most this often, seconds.
BREAKER_CHECK_EVERY = 0.1
#: How often a worker asks again while another worker holds the half-open probe, seconds.
PROBE_POLL = 0.25
#: Largest lease, permits.
MAX_LEASE = 1000

_CUBIC_C = 0.4
_CUBIC_BETA = 0.7
_MIN_RATE = 0.5


# --- Lua ---------------------------------------------------------------------------------------

_PRELUDE = Template(r"""
local HEADROOM, BUDGET, TAU_MAX, TAU_UNKNOWN = $headroom, $budget, $tau_max, $tau_unknown
local C3, BETA, FLOOR, ACTIVE, RESERVE = $cubic_c, $cubic_beta, $min_rate, $active, $reserve
local function num(v, d)
  if v == nil or v == false or v == '' then return d end
  return tonumber(v)
end
local function fmt(x) return string.format('%.6f', x) end
local function clock()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function fields(key)
  local flat = redis.call('HGETALL', key)
  local f = {}
  for i = 1, #flat, 2 do f[flat[i]] = flat[i + 1] end
  return f
end
-- The fleet's pace now: request rate r, token rate rt (nil: not learned, unpaced), the lease
-- validity tau, and whether CUBIC is still recovering from a throttle.
local function pace(key, f, now)
  local rr, rc, tr, tc = num(f.rr), num(f.rc), num(f.tr), num(f.tc)
  local r = rr and HEADROOM * rr
  local rt = tr and HEADROOM * tr
  local recovering = false
  local ct = num(f.ct)
  if ct then
    local w = num(f.cw, FLOOR)
    local c = C3 * (now - ct - num(f.ck, 0)) ^ 3 + w
    if c >= (r or 2 * w) then
      redis.call('HDEL', key, 'ct', 'ck', 'cw')
      f.ct = nil
    else
      c = math.max(c, FLOOR)
      if r and rt then rt = rt * c / r end
      r = c
      recovering = true
    end
  end
  local tau = TAU_UNKNOWN
  if r then
    rc = rc or math.max(1, r)
    tau = math.min(TAU_MAX, math.max(0.05, (BUDGET * rc - 1) / r))
  elseif rt then
    tau = math.min(TAU_MAX, math.max(0.05, 0.5 * BUDGET * tc / rt))
  end
  return r, rt, tau, recovering
end
-- The fleet's failure window (two buckets of `win` seconds, the older one weighted down).
local function window(key, now, win, add_fail, add_ok)
  local w = redis.call('HMGET', key, 'fb', 'fc', 'sc', 'pf', 'ps')
  local fb, fc, sc = num(w[1], now), num(w[2], 0), num(w[3], 0)
  local pf, ps = num(w[4], 0), num(w[5], 0)
  local dirty = add_fail > 0 or add_ok > 0
  if now - fb >= win then
    if now - fb < 2 * win then pf, ps = fc, sc else pf, ps = 0, 0 end
    fb, fc, sc, dirty = now, 0, 0, true
  end
  fc, sc = fc + add_fail, sc + add_ok
  if dirty then
    redis.call('HSET', key, 'fb', fmt(fb), 'fc', fc, 'sc', sc, 'pf', pf, 'ps', ps)
  end
  local weight = math.max(0, 1 - (now - fb) / win)
  return fc + pf * weight, fc + sc + (pf + ps) * weight
end
local function open_left(key, now)
  local b = redis.call('HMGET', key, 'st', 'ou')
  if b[1] == 'o' then return math.max(0, num(b[2], now) - now) end
  return 0
end
""").substitute(
    headroom=HEADROOM, budget=BUDGET, tau_max=TAU_MAX, tau_unknown=TAU_UNKNOWN,
    cubic_c=_CUBIC_C, cubic_beta=_CUBIC_BETA, min_rate=_MIN_RATE, active=ACTIVE_WINDOW,
    reserve=INTERACTIVE_RESERVE,
)

# KEYS: rate, brk, who. ARGV: 1 worker, 2 want (calls), 3 tokens per call, 4 batch (0/1),
# 5 ahead (s), 6-9 learned rr rc tr tc ('' unknown), 10-11 observed remaining (requests,
# tokens), 12 observation age (s), 13 successes to add, 14 endpoint, 15 model, 16 breaker
# window (s), 17 idle ttl (ms), 18 this worker's demand (calls/s, 0 unknown).
# Returns: k, first use (s after now; permit j from first + j·spacing), spacing (s), tau (s),
# rate (-1 unpaced), active workers, wait (s, when k = 0), breaker open left (s), fleet
# failures, tokens paced (1/0), first void base (s), void spacing (s): permit j is void after
# void base + j·void spacing + tau (the earliest dimension's slot, so lateness stays <= tau).
_ACQUIRE = _PRELUDE + r"""
local rk, bk, wk = KEYS[1], KEYS[2], KEYS[3]
local worker, want, per_call = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local batch, ahead = ARGV[4] == '1', tonumber(ARGV[5])
local now = clock()
local f = fields(rk)
-- Learned limits: capacities as reported, rates smoothed across workers' estimates.
local names = {'rr', 'rc', 'tr', 'tc'}
for i = 1, 4 do
  local v = tonumber(ARGV[5 + i])
  if v then
    if (i == 1 or i == 3) and f[names[i]] then v = 0.7 * tonumber(f[names[i]]) + 0.3 * v end
    f[names[i]] = fmt(v)
    redis.call('HSET', rk, names[i], f[names[i]])
  end
end
if not f.ep then redis.call('HSET', rk, 'ep', ARGV[14], 'md', ARGV[15]) end
redis.call('ZADD', wk, now, worker)
redis.call('ZREMRANGEBYSCORE', wk, '-inf', now - ACTIVE)
local active = math.max(1, redis.call('ZCARD', wk))
local r, rt, tau, recovering = pace(rk, f, now)
if per_call <= 0 then rt = nil end
local age = num(ARGV[12])
local share = RESERVE
if recovering then share = 2 * RESERVE end
local d = tonumber(ARGV[18])
-- One dimension (`rate` units per second, `units` per call): its GCRA state reconciled with
-- the provider's `remaining`, the increment per call, the burst lead and this priority's horizon.
-- A dimension without state (just learned, or expired while idle) starts with no credit: the
-- fleet does not know how much of the provider's bucket its unpaced calls already used.
local function dim(tat, rate, units, remaining)
  local T = 1 / rate
  local burst = math.max(units, rate * tau)
  if not tat then tat = now + burst * T end
  if remaining and age and age < tau then
    tat = math.max(tat, now - age + (burst - remaining) * T)
  end
  local horizon = now + burst * T + ahead
  if batch then horizon = now + (1 - share) * burst * T end
  return {tat = tat, inc = units * T, lead = burst * T, horizon = horizon}
end
-- Where a lease of k calls starts in dimension x (nil: it does not fit the horizon). Permit j
-- conforms at s_j = start + (j + 1)·inc − lead and is void after s_j + tau; the worker, doing
-- d calls/s, uses it near now + j/d, so idle credit it could not use in time is skipped.
local function start(x, k)
  local slow = 0
  if d > 0 then slow = math.max(0, 1 / d - x.inc) end
  local s = math.max(x.tat, now - tau + x.lead - x.inc + (k - 1) * slow)
  if s + k * x.inc > x.horizon + 1e-9 then return nil end
  return s
end
local dims = {}
local function stored(v) if v then return math.max(tonumber(v), now) end end
if r then dims[#dims + 1] = dim(stored(f.ra), r, 1, num(ARGV[10])) end
if rt then dims[#dims + 1] = dim(stored(f.ta), rt, per_call, num(ARGV[11])) end
local fair = want
if r or rt then
  local calls = r or rt / per_call
  if r and rt then calls = math.min(r, rt / per_call) end
  fair = math.max(1, math.floor(calls * (tau + ahead) / active))
end
local function fits(k)
  for _, x in ipairs(dims) do
    if not start(x, k) then return false end
  end
  return true
end
local lo, hi = 0, math.min(want, fair)
while lo < hi do
  local mid = math.floor((lo + hi + 1) / 2)
  if fits(mid) then lo = mid else hi = mid - 1 end
end
local k = lo
local use_first, use_spacing, void_first, void_spacing, wait = 0, 0, 0, 0, 0
if k >= 1 then
  if #dims > 0 then use_first, void_first, void_spacing = -1e9, 1e9, 1e9 end
  for _, x in ipairs(dims) do
    local s = start(x, k)
    local first = s + x.inc - x.lead - now
    use_first, void_first = math.max(use_first, first), math.min(void_first, first)
    use_spacing, void_spacing = math.max(use_spacing, x.inc), math.min(void_spacing, x.inc)
    x.after = s + k * x.inc
  end
  if r then redis.call('HSET', rk, 'ra', fmt(dims[1].after)) end
  if rt then redis.call('HSET', rk, 'ta', fmt(dims[#dims].after)) end
  local b = math.floor(now * 2) / 2
  local mb = num(f.mb, 0)
  if b == mb then
    redis.call('HINCRBY', rk, 'mc', k)
  else
    local mm = num(f.mm, 0)
    if mb > 0 then mm = 0.8 * num(f.mc, 0) / math.max(b - mb, 0.5) + 0.2 * mm end
    redis.call('HSET', rk, 'mb', fmt(b), 'mc', k, 'mm', fmt(mm))
  end
else
  local need = math.max(1, math.min(want, fair))
  for _, x in ipairs(dims) do wait = math.max(wait, x.tat + need * x.inc - x.horizon) end
  wait = math.max(wait, 0.001)
  if r and not f.ra then redis.call('HSET', rk, 'ra', fmt(dims[1].tat)) end
  if rt and not f.ta then redis.call('HSET', rk, 'ta', fmt(dims[#dims].tat)) end
end
local est_f = window(bk, now, tonumber(ARGV[16]), 0, tonumber(ARGV[13]))
local open = open_left(bk, now)
local ttl = tonumber(ARGV[17])
redis.call('PEXPIRE', rk, ttl)
redis.call('PEXPIRE', wk, ttl)
if redis.call('EXISTS', bk) == 1 then redis.call('PEXPIRE', bk, ttl) end
local rate = -1
if r then rate = r elseif rt then rate = rt / per_call end
local paced_tokens = 0
if rt then paced_tokens = 1 end
return {k, fmt(use_first), fmt(use_spacing), fmt(tau), fmt(rate), active, fmt(wait),
        fmt(open), fmt(est_f), paced_tokens, fmt(void_first), fmt(void_spacing)}
"""

# KEYS: rate. ARGV: 1 cooldown (s), 2 idle ttl (ms). Returns: cut (1/0), the fleet's new rate.
_THROTTLE = _PRELUDE + r"""
local rk = KEYS[1]
local now = clock()
local f = fields(rk)
local r, rt, tau = pace(rk, f, now)
if f.ct and now - tonumber(f.ct) < tonumber(ARGV[1]) then
  return {0, fmt(r or -1)}
end
local base = math.max(r or num(f.mm, 0), FLOOR)
local K = (base * (1 - BETA) / C3) ^ (1 / 3)
redis.call('HSET', rk, 'ct', fmt(now), 'ck', fmt(K), 'cw', fmt(base))
redis.call('HINCRBY', rk, 'th', 1)
-- The provider's bucket is empty: nobody has a burst left.
local g = fields(rk)
local r2, rt2, tau2 = pace(rk, g, now)
if r then redis.call('HSET', rk, 'ra', fmt(math.max(num(f.ra, now), now + tau2))) end
if rt then redis.call('HSET', rk, 'ta', fmt(math.max(num(f.ta, now), now + tau2))) end
redis.call('PEXPIRE', rk, tonumber(ARGV[2]))
return {1, fmt(BETA * base)}
"""

# KEYS: brk. ARGV: 1 worker, 2 window (s), 3 min calls, 4 failure ratio, 5 open (s),
# 6 successes to add, 7 idle ttl (ms). Returns: open left (s), fleet failures.
_FAIL = _PRELUDE + r"""
local bk = KEYS[1]
local now = clock()
local est_f, est_n = window(bk, now, tonumber(ARGV[2]), 1, tonumber(ARGV[6]))
local st = redis.call('HGET', bk, 'st')
if st ~= 'o' and est_n >= tonumber(ARGV[3]) and est_f >= tonumber(ARGV[4]) * est_n then
  redis.call('HSET', bk, 'st', 'o', 'ou', fmt(now + tonumber(ARGV[5])), 'by', ARGV[1])
  redis.call('HDEL', bk, 'ph', 'pe')
  redis.call('HINCRBY', bk, 'opens', 1)
end
redis.call('PEXPIRE', bk, tonumber(ARGV[7]))
return {fmt(open_left(bk, now)), fmt(est_f)}
"""

# KEYS: brk. ARGV: 1 worker, 2 open (s), 3 idle ttl (ms). Returns: open left (s).
_OPEN = _PRELUDE + r"""
local bk = KEYS[1]
local now = clock()
local left = open_left(bk, now)
if left <= 0 then
  redis.call('HSET', bk, 'st', 'o', 'ou', fmt(now + tonumber(ARGV[2])), 'by', ARGV[1])
  redis.call('HDEL', bk, 'ph', 'pe')
  redis.call('HINCRBY', bk, 'opens', 1)
  left = tonumber(ARGV[2])
end
redis.call('PEXPIRE', bk, tonumber(ARGV[3]))
return {fmt(left)}
"""

# KEYS: brk. ARGV: 1 worker, 2 hold (s), 3 poll (s). Returns: verdict, seconds.
# verdict: closed (go ahead), open (for seconds), held (someone probes; ask again), probe (yours).
_PROBE = _PRELUDE + r"""
local bk = KEYS[1]
local now = clock()
local b = redis.call('HMGET', bk, 'st', 'ou', 'ph', 'pe')
if b[1] ~= 'o' then return {'closed', '0'} end
local ou = num(b[2], now)
if ou > now then return {'open', fmt(ou - now)} end
if b[3] and b[3] ~= ARGV[1] and num(b[4], 0) > now then
  return {'held', fmt(math.min(num(b[4], 0) - now, tonumber(ARGV[3])))}
end
redis.call('HSET', bk, 'ph', ARGV[1], 'pe', fmt(now + tonumber(ARGV[2])))
redis.call('HINCRBY', bk, 'probes', 1)
return {'probe', '0'}
"""

# KEYS: brk. ARGV: 1 worker, 2 ok (1/0), 3 open (s). Returns: closed / open / ignored.
_RESULT = _PRELUDE + r"""
local bk = KEYS[1]
local now = clock()
local b = redis.call('HMGET', bk, 'st', 'ph')
if b[1] ~= 'o' or b[2] ~= ARGV[1] then return {'ignored'} end
if ARGV[2] == '1' then
  redis.call('HDEL', bk, 'st', 'ou', 'ph', 'pe', 'by')
  redis.call('HSET', bk, 'fb', fmt(now), 'fc', 0, 'sc', 0, 'pf', 0, 'ps', 0)
  return {'closed'}
end
redis.call('HSET', bk, 'ou', fmt(now + tonumber(ARGV[3])))
redis.call('HDEL', bk, 'ph', 'pe')
redis.call('HINCRBY', bk, 'opens', 1)
return {'open'}
"""

# KEYS: brk. ARGV: 1 worker. Frees the probe if this worker holds it.
_RELEASE = r"""
if redis.call('HGET', KEYS[1], 'ph') == ARGV[1] then
  redis.call('HDEL', KEYS[1], 'ph', 'pe')
  return 1
end
return 0
"""

# KEYS: brk. ARGV: 1 window (s). Returns: open left (s), fleet failures.
_STATE = _PRELUDE + r"""
local bk = KEYS[1]
local now = clock()
local est_f = window(bk, now, tonumber(ARGV[1]), 0, 0)
return {fmt(open_left(bk, now)), fmt(est_f)}
"""

_SCRIPTS = {
    "acquire": _ACQUIRE, "throttle": _THROTTLE, "fail": _FAIL, "open": _OPEN,
    "probe": _PROBE, "result": _RESULT, "release": _RELEASE, "state": _STATE,
}


# --- counters --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FleetStats:
    """Process-wide fleet counters (for telemetry and dashboards; monotonic except ``redis_up``).

    ``round_trips / admissions`` is the admission overhead: Redis round trips per admitted
    attempt while coordinated (leases make it ``≈ 1/(d·τ)``).
    """

    redis_up: bool
    round_trips: int
    admissions: int
    local_admissions: int
    refills: int
    empty_refills: int
    fallbacks: int
    errors: int
    skipped: int
    rejoins: int
    throttles_shared: int
    probes: int

    @property
    def round_trips_per_call(self) -> float:
        return self.round_trips / self.admissions if self.admissions else 0.0


class _Counters:
    __slots__ = ("_lock", "values")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.values: dict[str, int] = dict.fromkeys(
            ("round_trips", "admissions", "local_admissions", "refills", "empty_refills",
             "fallbacks", "errors", "skipped", "rejoins", "throttles_shared", "probes"), 0)

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.values[name] += n

    def reset(self) -> None:
        with self._lock:
            for name in self.values:
                self.values[name] = 0


_COUNTERS = _Counters()


def fleet_stats() -> FleetStats:
    """A snapshot of this process's fleet counters."""
    with _COUNTERS._lock:
        values = dict(_COUNTERS.values)
    with _LINKS_LOCK:
        up = all(link.up for link in _LINKS.values())
    return FleetStats(redis_up=up, **values)


# --- the Redis link ----------------------------------------------------------------------------


def _call_budget() -> float | None:
    """Seconds the current call has left (the tighter of its own deadline and any scope)."""
    from ..context.deadline import remaining
    from ..engine.call import current_call

    left = remaining()
    call = current_call()
    if call is not None:
        own = call.remaining()
        if own is not None:
            left = own if left is None else min(left, own)
    return left


class _Link:
    """One Redis client per URL per process, with outage detection and rejoining.

    Every operation is bounded by ``OP_TIMEOUT`` (socket connect and read timeouts, no client
    retries) and is skipped when the current call has less than that left. The first failure
    marks the link down (one WARNING, ``fallbacks`` + 1); while down, operations return
    ``None`` at once except one every ``PROBE_EVERY`` seconds, whose success brings it back.
    """

    def __init__(self, url: str, *, timeout: float = OP_TIMEOUT) -> None:
        from .._redis import parse_redis_url

        self.url = url
        self.target = parse_redis_url(url, setting="RESILIENT_LLM_REDIS_URL")
        self.label = self.target.label
        self.timeout = timeout
        self.worker = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.up = True
        self._lock = threading.Lock()
        self._retry_at = 0.0
        self._probing = False
        self._down_since = 0.0
        self._client: Any = None
        self._scripts: dict[str, Any] = {}

    def _connect(self) -> None:
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        from .._redis import open_redis

        # One redirection (MOVED/ASK while a slot moves) is followed at once; nothing else is
        # retried: an operation must fit in ``timeout``.
        client = open_redis(
            self.target,
            socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
            decode_responses=True,
            protocol=2,
        )
        self._scripts = {name: client.register_script(src) for name, src in _SCRIPTS.items()}
        self._client = client

    def usable(self) -> bool:
        """False while Redis is known to be down and no re-probe is due."""
        if self.up:
            return True
        return time.monotonic() >= self._retry_at and not self._probing

    def call(self, name: str, keys: list[str], args: list[Any]) -> list[Any] | None:
        """Run script ``name``; ``None`` when Redis is down, failed now, or time is too short."""
        left = _call_budget()
        if left is not None and left < self.timeout:
            _COUNTERS.add("skipped")
            return None
        probe = False
        with self._lock:
            if not self.up:
                if self._probing or time.monotonic() < self._retry_at:
                    return None
                self._probing = probe = True
        from redis.exceptions import RedisError

        try:
            result = self._connected()[name](keys=keys, args=args)
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return None
        finally:
            if probe:
                with self._lock:
                    self._probing = False
        _COUNTERS.add("round_trips")
        if not self.up:
            self._rejoined()
        return list(result) if isinstance(result, list) else [result]

    def _connected(self) -> dict[str, Any]:
        """The scripts, connecting first if needed (the node is asked whether it is a cluster
        node, so connecting is I/O and can fail like any operation)."""
        with self._lock:
            if self._client is None:
                self._connect()
            return self._scripts

    def _failed(self, exc: BaseException) -> None:
        _COUNTERS.add("errors")
        now = time.monotonic()
        with self._lock:
            self._retry_at = now + PROBE_EVERY
            if not self.up:
                return
            self.up = False
            self._down_since = now
        _COUNTERS.add("fallbacks")
        from .._redis import describe_redis_failure

        logger.warning(
            "resilient-llm: Redis at %s cannot serve the fleet: %s; pacing locally at each "
            "target's fair share of its limits until it is back (retrying every %.0f s)",
            self.label, describe_redis_failure(exc, self.target), PROBE_EVERY,
        )

    def _rejoined(self) -> None:
        with self._lock:
            if self.up:
                return
            self.up = True
            down_for = time.monotonic() - self._down_since
        _COUNTERS.add("rejoins")
        logger.info("resilient-llm: Redis at %s is back after %.1f s; fleet coordination resumed",
                    self.label, down_for)

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()


_LINKS: dict[tuple[str, int], _Link] = {}
_LINKS_LOCK = threading.Lock()


def _link_for(url: str) -> _Link:
    """The process's link for ``url`` (a forked child gets its own: sockets are not shared)."""
    slot = (url, os.getpid())
    with _LINKS_LOCK:
        link = _LINKS.get(slot)
        if link is None:
            link = _LINKS[slot] = _Link(url)
        return link


def _reset_links() -> None:
    """Close every link and zero the counters (tests)."""
    with _LINKS_LOCK:
        links = list(_LINKS.values())
        _LINKS.clear()
    for link in links:
        link.close()
    _COUNTERS.reset()


# --- keys ----------------------------------------------------------------------------------------


def fleet_keys(key: TargetKey) -> tuple[str, str, str]:
    """``rllm:v1:{<credential hash>}:<target id>:{rate,brk,who}`` for one target.

    The credential hash is the Redis Cluster hash tag: a credential's targets share a slot, so
    one script may touch all three keys. The target id hashes the endpoint and the model (the
    rate hash also stores both in clear, as ``ep`` and ``md``, for operators).
    """
    target = hashlib.sha256(f"{key.endpoint}|{key.model or '-'}".encode()).hexdigest()[:12]
    base = f"rllm:v1:{{{key.credential}}}:{target}"
    return f"{base}:rate", f"{base}:brk", f"{base}:who"


# --- leases (pure) -------------------------------------------------------------------------------


@dataclass(slots=True)
class Lease:
    """Permits leased from the fleet: ``granted`` of them, permit ``j`` usable from
    ``start + j·spacing`` and void after ``void_start + j·void_spacing + tau``.

    Both are placed on the local clock as if the server's ``now`` were the instant the
    request left: a permit may then be used up to one round trip (well under a millisecond
    on a LAN) before its slot, far inside ``BUDGET``'s 10 % margin, and it voids early rather
    than late. ``tokens`` is
    what the lease allows in the token dimension (``inf`` when tokens are not paced).
    """

    granted: int = 0
    used: int = 0
    start: float = 0.0
    void_start: float = 0.0
    spacing: float = 0.0
    void_spacing: float = 0.0
    tau: float = 0.0
    tokens: float = 0.0
    per_call: float = 0.0

    def _next(self, now: float) -> int | None:
        i = self.used
        if self.void_spacing > 0:
            first_valid = math.ceil((now - self.tau - self.void_start) / self.void_spacing - 1e-9)
            i = max(i, first_valid)
        elif now > self.void_start + self.tau:
            return None
        return i if i < self.granted else None

    def left(self, now: float) -> int:
        i = self._next(now)
        return 0 if i is None else self.granted - i

    def wait(self, now: float, cost: float) -> float | None:
        """Seconds until the next permit may be used, or ``None`` when the lease cannot serve."""
        i = self._next(now)
        if i is None:
            return None
        if self.per_call > 0:
            self.tokens = min(self.tokens, (self.granted - i) * self.per_call)
        if self.tokens + 1e-9 < cost:
            return None
        return max(0.0, self.start + i * self.spacing - now)

    def take(self, now: float, cost: float) -> None:
        i = self._next(now)
        self.used = (i if i is not None else self.used) + 1
        self.tokens -= cost

    def drop(self) -> None:
        self.granted = self.used = 0
        self.tokens = 0.0


def lease_size(demand: float, waiting: int, tau: float) -> int:
    """Permits to ask for: what this worker will use within one validity window.

    ``k = max(waiting, ⌈d·τ⌉, 1)`` capped at ``MAX_LEASE``; the script caps it again at the
    fair share ``⌊r·τ/N⌋``. A worker doing ``d`` calls per second then pays ``1/(d·τ)`` round
    trips per call (0.11 at 10 calls/s and τ = 0.9 s).
    """
    return int(min(MAX_LEASE, max(1, waiting, math.ceil(demand * tau - 1e-9))))


def _evidence(limits: RateLimits) -> tuple[float, float] | None:
    """What one header set says about the refill rate: ``(missing units, seconds to refill)``.

    Headers round ``remaining`` down to a whole unit while ``reset`` measures the true gap, so
    the missing count is read as ``L − R − 0.5`` (the middle of what it may be). Skipped
    with fewer than 2 units (and 5 % of the limit) missing, from an empty bucket (a rejected
    request's reset may mean "until the next unit", not "until full"), and for resets under
    5 ms (millisecond rounding dominates).
    """
    missing = limits.limit - limits.remaining
    if limits.remaining <= 0 or limits.reset < 0.005 or missing < max(2.0, 0.05 * limits.limit):
        return None
    return missing - 0.5, limits.reset


def _learned_rate(limits: RateLimits) -> float | None:
    """The refill rate one header set implies (see :func:`_evidence`)."""
    evidence = _evidence(limits)
    return None if evidence is None else evidence[0] / evidence[1]


class _Dimension:
    """What this worker learned about one dimension from headers.

    The rate pools the last 16 header sets: ``Σ missing / Σ reset``. A single nearly full
    bucket (4 missing of 40) can be off by an eighth through rounding; pooled, each set
    weighs by how much it says and the rounding errors average out.
    """

    __slots__ = ("capacity", "evidence", "observed_at", "remaining")

    def __init__(self) -> None:
        self.evidence: deque[tuple[float, float]] = deque(maxlen=16)
        self.capacity: float | None = None
        self.remaining: float | None = None
        self.observed_at = 0.0

    def observe(self, limits: RateLimits, now: float) -> bool:
        """Record ``limits``; True when the learned rate moved by more than 20 %."""
        before = self.rate
        evidence = _evidence(limits)
        if evidence is not None:
            self.evidence.append(evidence)
        self.capacity = max(limits.limit, 1.0)
        self.remaining = limits.remaining
        self.observed_at = now
        after = self.rate
        return after is not None and (before is None or abs(after - before) > 0.2 * before)

    @property
    def rate(self) -> float | None:
        if not self.evidence:
            return None
        return sum(m for m, _ in self.evidence) / sum(r for _, r in self.evidence)


# --- the fleet-backed target --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FleetSnapshot:
    """A target's fleet view, attached to its ``PressureSnapshot`` as ``fleet``."""

    mode: str  # "fleet" (coordinated through Redis) or "local" (Redis unreachable)
    rate: float | None  # the fleet's paced request rate, calls/s (None: not learned yet)
    tau: float
    active_workers: int
    leased: int
    stats: FleetStats


class _Pool:
    """One priority's lease and what sizes the next one (admissions since the last refill)."""

    __slots__ = ("enqueued", "hint_until", "last_refill", "lease", "rate")

    def __init__(self) -> None:
        self.lease = Lease()
        self.hint_until = -math.inf
        self.enqueued = 0
        self.last_refill: float | None = None
        self.rate = 0.0


class FleetPressure(TargetPressure):
    """A target whose pacer and breaker are shared through Redis (see the module docstring).

    Admission: the head waiter, when its lease cannot serve it, refills the lease with one
    Redis round trip made outside the state lock; the permit then comes from the lease.
    Everything local (concurrency limit, retry budget, priority queue) is inherited. While
    Redis is unreachable, pacing is the inherited local pacer over ``1/N`` of the headers.
    """

    def __init__(self, key: TargetKey, now: float, link: _Link) -> None:
        super().__init__(key, now)
        self._link = link
        self._keys = fleet_keys(key)
        self.breaker: FleetBreaker = FleetBreaker(link, self._keys[1])
        self._pools: dict[Priority, _Pool] = {"interactive": _Pool(), "batch": _Pool()}
        self._refilling = False
        self._avg_cost = 0.0
        self._req = _Dimension()
        self._tok = _Dimension()
        self._fleet_rate: float | None = None
        self._tau = TAU_UNKNOWN
        self._active = 1
        self._mode = "fleet"
        self._local_share = 1.0
        self._last_throttle_sent = -math.inf
        self._rng = random.Random()

    # admission

    _local_pacer = False  # leases, not the local buckets, pace admissions

    @property
    def paces_tokens(self) -> bool:
        """Always: a lease's size follows the calls' token estimates."""
        return True

    def admit_now(self, priority: Priority, cost: float, now: float) -> float | None:
        self._sync_mode()
        if self._mode == "local" and self._link.usable():
            return None  # time to try Redis again: the queued path refills (and so probes)
        return super().admit_now(priority, cost, now)

    def try_admit(self, waiter: Any, now: float) -> Any:
        self._sync_mode()
        if self._mode == "fleet" or self._link.usable():  # in fleet mode, or time to rejoin
            self._maybe_refill(waiter, now)
            self._sync_mode()
        return super().try_admit(waiter, now)

    def _sync_mode(self) -> None:
        mode = "fleet" if self._link.up else "local"
        if mode == self._mode:
            return
        with self._lock:
            if mode == self._mode:
                return
            self._mode = mode
            if mode == "local":
                for pool in self._pools.values():
                    pool.lease.drop()
                    pool.hint_until = -math.inf
                self._local_share = 1.0 / max(1, self._active)
                self._scale_local(self._local_share)
            else:
                self._scale_local(1.0 / self._local_share)
                self._local_share = 1.0

    def _scale_local(self, factor: float) -> None:
        """Scale the local buckets: to this worker's share when Redis goes, back when it returns.

        Without Redis each worker may use ``1/N`` of the provider's buckets (``N`` the last
        known number of active workers), so the fleet stays within the limit while apart.
        """
        for bucket in (self.requests, self.tokens):
            if bucket is not None:
                bucket.rate = max(bucket.rate * factor, _MIN_RATE)
                bucket.capacity = max(bucket.capacity * factor, 1.0)
                bucket.level = min(max(bucket.level, 0.0), bucket.capacity)

    def _maybe_refill(self, waiter: Any, now: float) -> None:
        priority: Priority = waiter.priority
        with self._lock:
            if self._refilling or not self._waiting or self._waiting[0] is not waiter:
                return
            limit = self.concurrency.limit
            if self.inflight >= max(1.0, limit) or (
                priority == "batch" and self.inflight_batch >= max(1.0, limit * 0.75)
            ):
                return
            pool = self._pools[priority]
            if self._serving_pool(priority, waiter.cost, now) is not None:
                return
            if now < pool.hint_until:
                return
            waiting = sum(1 for w in self._waiting if w.priority == priority)
            if pool.last_refill is not None and now > pool.last_refill:
                current = (pool.enqueued + waiting) / (now - pool.last_refill)
                pool.rate = current if pool.rate == 0 else 0.5 * pool.rate + 0.5 * current
            pool.enqueued = 0
            pool.last_refill = now
            want = lease_size(pool.rate, waiting, self._tau)
            per_call = max(self._avg_cost, waiter.cost)
            if self.tokens is not None and per_call > 0:
                per_call = min(per_call, self.tokens.capacity)
            left = _call_budget()
            ahead = 0.0 if priority == "batch" else min(self._tau, left if left is not None
                                                        else self._tau)
            args = self._acquire_args(priority, want, per_call, max(0.0, ahead), now, pool.rate)
            self._refilling = True
        sent = time.monotonic()
        result: list[Any] | None = None
        try:
            result = self._link.call("acquire", list(self._keys), args)
        finally:
            rtt = time.monotonic() - sent
            with self._lock:
                self._refilling = False
                if result is not None:
                    self._install(pool, result, now, rtt, per_call)
                self._wake_head()
        if result is None:
            self._sync_mode()
        else:
            _COUNTERS.add("refills")
            self.breaker.adopt(now + rtt, float(result[7]), float(result[8]))

    def _acquire_args(self, priority: Priority, want: int, per_call: float, ahead: float,
                      now: float, demand: float) -> list[Any]:
        req, tok = self._req, self._tok
        observed = max(req.observed_at, tok.observed_at)
        fresh = observed > 0
        args: list[Any] = [
            self._link.worker, want, f"{per_call:.3f}", "1" if priority == "batch" else "0",
            f"{ahead:.4f}",
            _fmt(req.rate), _fmt(req.capacity), _fmt(tok.rate), _fmt(tok.capacity),
            _fmt(req.remaining if fresh else None), _fmt(tok.remaining if fresh else None),
            _fmt(max(0.0, now - observed) if fresh else None),
            self.breaker.take_successes(),
            self.key.endpoint, self.key.model or "-",
            f"{self.breaker.window:g}", int(IDLE_TTL * 1000), f"{demand:.4f}",
        ]
        return args

    def _install(self, pool: _Pool, result: list[Any], now: float, rtt: float,
                 per_call: float) -> None:
        granted = int(result[0])
        first, spacing, tau = float(result[1]), float(result[2]), float(result[3])
        rate = float(result[4])
        self._tau = tau
        self.breaker.view_ttl = max(2 * tau, 1.0)
        self._fleet_rate = rate if rate > 0 else None
        self._active = max(1, int(result[5]))
        if granted < 1:
            _COUNTERS.add("empty_refills")
            wait = float(result[6])
            pool.hint_until = now + rtt + wait * self._rng.uniform(1.0, 1.1)
            return
        pool.hint_until = -math.inf
        tokens = granted * per_call if int(result[9]) == 1 else math.inf
        pool.lease = Lease(granted=granted, start=now + first,
                           void_start=now + float(result[10]), spacing=spacing,
                           void_spacing=float(result[11]), tau=tau, tokens=tokens,
                           per_call=per_call if math.isfinite(tokens) else 0.0)

    def _serving_pool(self, priority: Priority, cost: float, now: float) -> _Pool | None:
        """The pool whose lease can serve a call of ``priority`` (interactive may use batch's)."""
        order: tuple[Priority, ...] = (
            ("interactive", "batch") if priority == "interactive" else ("batch",)
        )
        for name in order:
            pool = self._pools[name]
            if pool.lease.wait(now, cost) is not None:
                return pool
        return None

    def _admit_wait(self, cost: float, now: float, priority: Priority) -> float | None:
        if self._mode == "local":
            return super()._admit_wait(cost, now, priority)
        pool = self._serving_pool(priority, cost, now)
        if pool is not None:
            return pool.lease.wait(now, cost)
        own = self._pools[priority]
        if now < own.hint_until:
            return own.hint_until - now
        return None  # a refill is due or under way: wait to be woken

    def _take(self, cost: float, now: float, priority: Priority) -> None:
        super()._take(cost, now, priority)  # the local buckets keep learning for a fallback
        self._pools[priority].enqueued += 1  # demand, for the next lease's size
        self._avg_cost = cost if self._avg_cost == 0 else 0.8 * self._avg_cost + 0.2 * cost
        if self._mode == "local":
            _COUNTERS.add("local_admissions")
            return
        pool = self._serving_pool(priority, cost, now)
        if pool is not None:
            pool.lease.take(now, cost)
        _COUNTERS.add("admissions")

    def _pacer_wait(self, cost: float, now: float) -> float:
        if self._mode == "local":
            return super()._pacer_wait(cost, now)
        wait = self._admit_wait(cost, now, "interactive")
        return 0.0 if wait is None else wait

    # feedback

    def observe(self, requests: RateLimits | None, tokens: RateLimits | None, now: float) -> None:
        changed = False
        with self._lock:
            if requests is not None:
                changed |= self._req.observe(requests, now)
            if tokens is not None:
                changed |= self._tok.observe(tokens, now)
            if changed and self._mode == "fleet":
                for pool in self._pools.values():  # unpaced or stale leases: refill now
                    pool.lease.drop()
                    pool.hint_until = -math.inf
        if self._mode == "local":
            requests = _share_of(requests, self._local_share)
            tokens = _share_of(tokens, self._local_share)
        super().observe(requests, tokens, now)

    def release(
        self,
        now: float,
        *,
        priority: Priority,
        latency: float | None,
        throttled: bool,
        dropped: bool,
        succeeded: bool,
        retry_after: float | None = None,
        patience: float | None = None,
    ) -> None:
        super().release(now, priority=priority, latency=latency, throttled=throttled,
                        dropped=dropped, succeeded=succeeded, retry_after=retry_after,
                        patience=patience)
        if not throttled or self._mode != "fleet":
            return
        with self._lock:
            for pool in self._pools.values():
                pool.lease.drop()
            if now - self._last_throttle_sent < 0.25:
                return
            self._last_throttle_sent = now
        result = self._link.call("throttle", [self._keys[0]],
                                 [f"{THROTTLE_COOLDOWN:g}", int(IDLE_TTL * 1000)])
        if result is not None and int(result[0]) == 1:
            _COUNTERS.add("throttles_shared")
            with self._lock:
                self._fleet_rate = float(result[1])

    def snapshot(self, now: float) -> Any:
        base = super().snapshot(now)
        with self._lock:
            leased = sum(pool.lease.left(now) for pool in self._pools.values())
            fleet = FleetSnapshot(mode=self._mode, rate=self._fleet_rate, tau=self._tau,
                                  active_workers=self._active, leased=leased,
                                  stats=fleet_stats())
        from dataclasses import replace

        return replace(base, fleet=fleet)


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def _share_of(limits: RateLimits | None, share: float) -> RateLimits | None:
    if limits is None:
        return None
    return RateLimits(limits.limit * share, limits.remaining * share, limits.reset)


# --- the fleet breaker ---------------------------------------------------------------------------


def _owner() -> int:
    """Who is asking: the current call (drop-in clients) or else the thread."""
    from ..engine.call import current_call

    call = current_call()
    return id(call) if call is not None else threading.get_ident()


class FleetBreaker(Breaker):
    """A :class:`Breaker` whose open state, failure window and half-open probe are the fleet's.

    * ``allow``: closed → no Redis while the fleet view is fresh (lease refills refresh it;
      it is re-read when older than ``view_ttl`` = max(2τ, 1 s), or every
      ``BREAKER_CHECK_EVERY`` while the fleet reports failures); open → no; half-open → ask
      Redis for the fleet's one probe (granted to one worker; the others stay open, asking
      again every ``PROBE_POLL`` or when the new break ends).
    * ``record``: a health failure is reported at once (the fleet trips when its window
      crosses the thresholds); the local window's own trip is published; successes are
      counted and sent with the next lease refill. The probe's outcome closes or reopens
      the fleet's circuit.
    While Redis is unreachable it is the local breaker, unchanged.
    """

    #: The fleet's half-open probe tests a target that looks down: no per-process probes.
    alone_probes = False

    def __init__(
        self,
        link: _Link,
        key: str,
        *,
        window: float = 30.0,
        min_calls: int = 5,
        failure_ratio: float = 0.5,
        break_for: float = 5.0,
    ) -> None:
        super().__init__(window=window, min_calls=min_calls, failure_ratio=failure_ratio,
                         break_for=break_for)
        self._link = link
        self._key = key
        self._fleet_probe: int | None = None  # owner holding the fleet probe
        self._probe_owner: int | None = None  # owner holding the local probe right
        self._probe_since = 0.0
        self._probe_hold = 0.0
        self._fleet_failures = 0.0
        self._view_at = -math.inf
        self._checking = False
        self._successes = 0
        #: How old the fleet view may be before ``allow`` re-reads it (set to the lease
        #: validity by the pressure state, so busy workers never pay for it: refills refresh it).
        self.view_ttl = 1.0

    def take_successes(self) -> int:
        with self._lock:
            count, self._successes = self._successes, 0
        return count

    def _open_for(self, now: float, seconds: float) -> None:
        """Adopt an open circuit (lock held)."""
        until = now + seconds
        if self._state != "open" or until > self._open_until:
            if self._state != "open":
                self.transitions += 1
            self._state = "open"
            self._open_until = until
            self._probe_out = False
            self._probe_owner = None

    def adopt(self, now: float, open_left: float, failures: float) -> None:
        """The fleet's breaker as a lease refill saw it."""
        with self._lock:
            self._fleet_failures = failures
            self._view_at = now
            if open_left > 0 and self._fleet_probe is None:
                self._open_for(now, open_left)

    def allow(self, now: float, *, alone: bool = False, rng: RandomSource | None = None) -> bool:
        if not self._link.usable():
            return super().allow(now, alone=alone, rng=rng)
        with self._lock:
            state = self._current(now)
            if state == "open":
                return alone and self._admit_alone(now)
            if state == "closed":
                age = now - self._view_at
                stale = age >= self.view_ttl or (self._fleet_failures > 0
                                                 and age >= BREAKER_CHECK_EVERY)
                if not stale or self._checking:
                    return True
                self._checking = True
            else:
                if self._probe_out and now - self._probe_since < self._probe_hold:
                    return False
                self._probe_out = True
                self._probe_owner = _owner()
                self._probe_since = now
                self._probe_hold = self._hold()
        if state == "closed":
            return self._check(now)
        return self._ask_probe(now)

    def _check(self, now: float) -> bool:
        result = self._link.call("state", [self._key], [f"{self.window:g}"])
        with self._lock:
            self._checking = False
            if result is not None:
                self._view_at = now
                self._fleet_failures = float(result[1])
                if float(result[0]) > 0:
                    self._open_for(now, float(result[0]))
            return self._current(now) == "closed"

    def _hold(self) -> float:
        """How long a probe may stay out before someone else may probe."""
        left = _call_budget()
        return max(self.break_for, min(left if left is not None else 60.0, 60.0)) + 1.0

    def _ask_probe(self, now: float) -> bool:
        result = self._link.call("probe", [self._key], [self._link.worker,
                                                        f"{self._probe_hold:.3f}",
                                                        f"{PROBE_POLL:g}"])
        with self._lock:
            if result is None:
                return True  # Redis unreachable: the local probe right decides
            verdict, seconds = str(result[0]), float(result[1])
            if verdict == "probe":
                _COUNTERS.add("probes")
                self._fleet_probe = self._probe_owner
                return True
            if verdict == "closed":
                self._state = "closed"
                self._events.clear()
                self._probe_out = False
                self._probe_owner = None
                self.transitions += 1
                return True
            # open (a new break) or held (another worker probes): stay open locally
            self._state = "open"
            self._open_until = now + seconds
            self._probe_out = False
            self._probe_owner = None
            return False

    def cancel_probe(self) -> None:
        owner = _owner()
        with self._lock:
            holder = self._fleet_probe if self._fleet_probe is not None else self._probe_owner
            if self._link.up and self._probe_out and holder is not None and holder != owner:
                return  # another call's probe: not ours to give back
            fleet = self._fleet_probe is not None
            self._fleet_probe = None
            self._probe_owner = None
        super().cancel_probe()
        if fleet:
            self._link.call("release", [self._key], [self._link.worker])

    def record(self, now: float, failure: Failure | None, rng: RandomSource) -> None:
        if not self._link.usable():
            super().record(now, failure, rng)
            return
        owner = _owner()
        with self._lock:
            probing = self._fleet_probe is not None and self._fleet_probe == owner
            before = self._current(now)
        if failure is not None and failure.kind is FailureClass.RATE_LIMITED:
            if probing:
                self.cancel_probe()  # says nothing about health: let the next caller probe
            return
        healthy = not counts_for_health(failure)
        super().record(now, failure, rng)
        with self._lock:
            after = self._state
            open_left = max(0.0, self._open_until - now)
            if probing:
                self._fleet_probe = None
                self._probe_owner = None
        if probing:
            self._link.call("result", [self._key], [self._link.worker, "1" if healthy else "0",
                                                     f"{max(open_left, 0.001):.3f}"])
            return
        if healthy:
            with self._lock:
                self._successes += 1
            return
        if before == "closed" and after == "open":
            result = self._link.call("open", [self._key], [self._link.worker,
                                                           f"{open_left:.3f}",
                                                           int(IDLE_TTL * 1000)])
        else:
            open_for = self.break_for * rng.uniform(1.0, 1.5)
            result = self._link.call("fail", [self._key], [
                self._link.worker, f"{self.window:g}", self.min_calls,
                f"{self.failure_ratio:g}", f"{open_for:.3f}", self.take_successes(),
                int(IDLE_TTL * 1000),
            ])
        if result is None:
            return
        with self._lock:
            self._view_at = now
            if len(result) > 1:
                self._fleet_failures = float(result[1])
            if float(result[0]) > 0 and self._fleet_probe is None:
                self._open_for(now, float(result[0]))


# --- the hook ------------------------------------------------------------------------------------


def fleet_pressure(key: TargetKey, now: float, redis_url: str) -> FleetPressure:
    """The fleet-backed state of ``key`` (what ``PressureRegistry.get(..., redis_url=)`` builds)."""
    return FleetPressure(key, now, _link_for(redis_url))

