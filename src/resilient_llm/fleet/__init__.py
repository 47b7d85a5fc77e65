"""Fleet-wide pressure state in Redis: one API key, many workers, one well-paced client.

With ``RESILIENT_LLM_REDIS_URL`` set, :func:`fleet_pressure` builds a :class:`FleetPressure`
per target — the engine's target state composed with a pacer and a breaker that consult
Redis (``LeasePacer`` and ``FleetBreaker``, implementing the protocols of ``engine.parts``) —
so every process sharing a key behaves like one client. The drivers see the same state as
without Redis. What is shared, and why that and no more:

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
* **Throttles**: a rate-shaped 429 (it carries a ``Retry-After``, or the provider publishes
  limits; a bare 429 is a concurrency cap, the local limit's business) seen by any worker
  runs the botocore CUBIC cut once for the fleet (``W_max = r``, or without a paced rate what
  the provider accepted lately, ``r ← β·r``, ``K = ∛(W_max·(1 − β)/C)``), at most once per
  second (one overshoot is seen by many workers at once); every worker paces by
  ``C·(t − t_throttle − K)³ + W_max`` computed on the server clock, so recovery is shared too.
  The throttle is forgotten when CUBIC is back at the headers' rate (without one, CUBIC keeps
  pacing: unpaced again would only buy the next burst of 429s), and from the first throttle
  on the provider's bucket is taken as at most ``BURST_SECONDS`` (0.1 s) of the rate, whatever
  the headers describe: a 429 is ground truth, and a per-minute limit may be enforced over
  much shorter windows.
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

Modules: ``tuning`` (the constants), ``scripts`` (the Lua resources in ``lua/``, key names,
decoded replies), ``link`` (the Redis client and outages), ``lease`` (lease arithmetic and
header learning), ``pressure`` (the fleet-backed target), ``breaker`` (the fleet's circuit),
``stats`` (counters).
"""


from __future__ import annotations

from .breaker import FleetBreaker
from .lease import Lease, lease_size
from .pressure import FleetPressure, FleetSnapshot, fleet_pressure
from .scripts import fleet_keys
from .stats import FleetStats, fleet_stats
from .tuning import HEADROOM, INTERACTIVE_RESERVE, OP_TIMEOUT

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
