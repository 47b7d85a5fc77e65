"""The pressure-control invariants, checked on one cell's metrics: one place for the rules.

Each cell names the invariants that apply to it (``Cell.checks``); :func:`violations` returns
a line per broken one, empty when the cell holds. ``tests/test_simulator.py`` asserts it on
the reduced matrix, ``benchmarks/pressure_matrix.py --check`` on the whole one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from .matrix import Cell, CellMetrics, ClientKind

__all__ = ["RULES", "violations"]

#: What each check name promises (the pressure-control issue's acceptance, in short).
RULES: dict[str, str] = {
    "never_worse": "success >= the control's; p99 <= 1.1 x the control's (up to the deadline "
                   "when more calls succeed than the control's)",
    "transient": "a single transient fault is retried and every call succeeds",
    "idle": "one caller on an idle provider: pressure < 0.3, never sent to the fallback",
    "healthy": "goodput >= 0.95 x the control's and no call held in the client",
    "recovers": "after the episode: below capacity nobody paced after 1 s, "
                "above capacity >= 90 % of capacity served from 5 s on",
    "fallback_fast": "with a fallback ready, no call waits over 50 ms on the down primary",
    "absurd": "one absurd header never holds a call in the client longer than its deadline",
    "quantized": "after 10 s: 429s <= 1 % of attempts, goodput >= 0.9 x the enforced rate",
    "fleet": "a fleet with Redis vs the same processes without: success >= theirs, goodput "
             ">= 0.95 x theirs (the fleet paces within the limit), 429s after 10 s <= "
             "max(theirs, 1 %)",
    "priority": "interactive p99 <= 2 x its unloaded p99, every batch call succeeds",
    "drains": "a burst beyond capacity is served within 1.5 x its ideal makespan",
}

#: Client-side waiting that counts as "not held": scheduling noise, not a queue.
_HELD = 0.005


def violations(cell: Cell, metrics: Mapping[ClientKind, CellMetrics]) -> list[str]:
    """The invariants ``cell`` breaks, one line each (empty: it holds)."""
    ours, control = metrics["resilient"], metrics["control"]
    model = cell.provider()
    broken: list[str] = []

    def need(check: str, ok: bool, detail: str) -> None:
        if check in cell.checks and not ok:
            broken.append(f"{check}: {detail}")

    need("never_worse", ours.success >= control.success,
         f"success {ours.success:.1%} < control {control.success:.1%}")
    if not math.isnan(ours.p99) and not math.isnan(control.p99):
        # Calls the control fails and this client completes may take up to the deadline (the
        # deadline-bound figure: without us they would have failed); when it completes no more
        # calls than the control, they are no slower than the control's.
        bound = 1.1 * control.p99
        if ours.success > control.success:
            bound = max(bound, cell.deadline)
        need("never_worse", ours.p99 <= bound, f"p99 {ours.p99:.3g} s > {bound:.3g} s")
    need("transient", ours.success == 1.0, f"success {ours.success:.1%}")
    need("idle", ours.max_pressure < 0.3, f"pressure reached {ours.max_pressure:.2f}")
    need("idle", ours.fallback_share == 0.0, f"{ours.fallback_share:.1%} served by the fallback")
    need("healthy", ours.goodput >= 0.95 * control.goodput,
         f"goodput {ours.goodput / max(control.goodput, 1e-9):.2f} x the control's")
    need("healthy", ours.max_waited <= _HELD,
         f"a call waited {ours.max_waited:.3g} s in the client")
    offered = cell.traffic.offered(model.service_time)
    if offered < model.capacity:
        need("recovers", ours.recovery is not None and ours.recovery <= 1.0,
             f"still paced or failing {ours.recovery} s after the episode")
    else:
        need("recovers", ours.post_rate is not None and ours.post_rate >= 0.9,
             f"served {ours.post_rate} x capacity from 5 s after the episode")
    need("fallback_fast", ours.max_waited <= 0.05,
         f"a call waited {ours.max_waited:.3g} s in the client")
    need("absurd", ours.max_waited < cell.deadline and ours.success == 1.0,
         f"a call waited {ours.max_waited:.3g} s, success {ours.success:.1%}")
    apart = metrics.get("apart")
    if apart is not None:
        need("fleet", ours.success >= apart.success,
             f"success {ours.success:.1%} < {apart.success:.1%} without Redis")
        need("fleet", ours.goodput >= 0.95 * apart.goodput,
             f"goodput {ours.goodput:.1f}/s < 0.95 x {apart.goodput:.1f}/s without Redis")
        need("fleet", ours.late_429 <= max(apart.late_429, 0.01),
             f"{ours.late_429:.1%} 429s after 10 s > {apart.late_429:.1%} without Redis")
    need("quantized", ours.late_429 <= 0.01, f"{ours.late_429:.1%} 429s after 10 s")
    need("quantized", ours.goodput_ratio >= 0.9, f"goodput {ours.goodput_ratio:.2f} x R")
    if model.concurrency is not None:
        ideal = cell.traffic.n * model.service_time / model.concurrency
        need("drains", ours.p99 <= 1.5 * ideal,
             f"p99 {ours.p99:.3g} s > 1.5 x the ideal makespan {ideal:.3g} s")
    if cell.traffic.kind == "mix":
        unloaded = model.service_time * (1 + model.jitter)
        p99 = ours.interactive_p99 if ours.interactive_p99 is not None else math.inf
        need("priority", p99 <= 2 * unloaded,
             f"interactive p99 {p99:.3g} s > 2 x {unloaded:.3g} s")
        need("priority", ours.batch_success == 1.0,
             f"batch success {ours.batch_success}")
    return broken
