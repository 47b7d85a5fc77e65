"""The pressure-control matrix, simulated: resilient-llm vs a control modelled on the official SDK.

    python benchmarks/pressure_matrix.py [--seeds N] [--only TEXT] [--reduced] [--check]
                                         [--jobs N] [--json PATH] [--markdown PATH] [--plot]

Every cell of ``resilient_llm.testing.sim.MATRIX`` (provider model × traffic × deadline) runs
on virtual time with seeds 0..N−1 (default 20), once with the library's own decision code and
once with the control client, on the same traffic and seeds. Printed per cell and client:
success rate, goodput / ideal, attempts per call, share of 429s, p50/p99 latency of successes,
time to recover after an episode, and the mix cells' interactive p99. ``--plot`` writes
``docs/pressure-matrix.png`` (needs matplotlib: ``pip install -e '.[bench]'``). ``--check`` lists
every invariant a cell breaks (``resilient_llm.testing.sim.invariants``) and exits with status
1 if any does. No sockets.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

from resilient_llm.testing.sim import MATRIX, REDUCED, Cell, CellMetrics, run_cell
from resilient_llm.testing.sim.invariants import violations
from resilient_llm.testing.sim.matrix import ClientKind

ROOT = Path(__file__).resolve().parent.parent


def _fmt(value: float | None, spec: str = ".2f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return format(value, spec)


def row(cell: Cell, kind: str, m: CellMetrics) -> list[str]:
    return [
        cell.name, kind, _fmt(m.success, ".1%"), _fmt(m.goodput_ratio), _fmt(m.attempts),
        _fmt(m.share_429, ".1%"), _fmt(m.p50, ".3g"), _fmt(m.p99, ".3g"),
        _fmt(m.recovery, ".1f"), _fmt(m.interactive_p99, ".3g"),
    ]


HEADER = ["cell", "client", "success", "goodput/ideal", "attempts/call", "429s",
          "p50 s", "p99 s", "recovery s", "interactive p99 s"]


def markdown(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def plot(results: list[tuple[Cell, dict[str, CellMetrics]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [cell.name for cell, _ in results]
    fig, axes = plt.subplots(1, 2, figsize=(16, 0.32 * len(names) + 1.5), sharey=True)
    ys = range(len(names))
    for ax, metric, title in ((axes[0], "success", "success rate"),
                              (axes[1], "p99_ratio", "p99 latency / control's")):
        for offset, kind, color in ((-0.2, "resilient", "tab:blue"), (0.2, "control", "tab:gray")):
            values = []
            for _, metrics in results:
                m = metrics[kind]
                if metric == "success":
                    values.append(m.success)
                else:
                    base = metrics["control"].p99
                    values.append(m.p99 / base if base and not math.isnan(base)
                                  and not math.isnan(m.p99) else 0.0)
            ax.barh([y + offset for y in ys], values, height=0.4, color=color, label=kind)
        ax.set_title(title)
        ax.grid(axis="x", alpha=0.3)
    axes[1].axvline(1.1, color="tab:red", linewidth=0.8, linestyle="--")
    axes[0].set_yticks(list(ys), names, fontsize=7)
    axes[0].invert_yaxis()
    axes[0].legend(loc="lower left", fontsize=8)
    fig.suptitle("Simulated pressure matrix: resilient-llm vs the official SDK's retry loop")
    fig.tight_layout(rect=(0.0, 0.0, 1.0, 1.0 - 0.6 / fig.get_figheight()))
    fig.savefig(path, dpi=110)


def _run(index: int, seeds: int) -> dict[ClientKind, CellMetrics]:
    """One cell of the matrix by its index (a worker process rebuilds the cell itself)."""
    return run_cell(MATRIX[index], range(seeds))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--only", help="run only cells whose name contains this text")
    parser.add_argument("--reduced", action="store_true", help="the reduced matrix CI asserts")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--plot", action="store_true", help="write docs/pressure-matrix.png")
    parser.add_argument("--jobs", type=int, default=1,
                        help="processes to run cells in (the figures do not depend on it)")
    parser.add_argument("--check", action="store_true",
                        help="list the invariants each cell breaks; exit 1 if any")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    cells = REDUCED if args.reduced else MATRIX
    if args.only:
        cells = [c for c in cells if args.only.lower() in c.name.lower()]
        if not cells:
            parser.error(f"no cell name contains {args.only!r}")
    began = time.process_time()
    results: list[tuple[Cell, dict[str, CellMetrics]]] = []
    rows: list[list[str]] = []
    widths = [52, 9, 8, 13, 13, 6, 7, 7, 10, 17]
    print("  ".join(h.ljust(w) for h, w in zip(HEADER, widths, strict=True)))
    broken: list[str] = []
    indexes = [MATRIX.index(cell) for cell in cells]
    if args.jobs > 1:
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(args.jobs)
        computed = pool.map(_run, indexes, [args.seeds] * len(indexes))
    else:
        computed = (_run(index, args.seeds) for index in indexes)
    for cell, metrics in zip(cells, computed, strict=True):
        results.append((cell, {str(kind): m for kind, m in metrics.items()}))
        for kind, m in metrics.items():
            rows.append(row(cell, kind, m))
            print("  ".join(v.ljust(w) for v, w in zip(rows[-1], widths, strict=True)), flush=True)
        if args.check:
            broken += [f"{cell.name}: {line}" for line in violations(cell, metrics)]
    print(f"\n{len(cells)} cells x {args.seeds} seeds x 2 clients in "
          f"{time.process_time() - began:.1f} s of CPU", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(
            [{"cell": c.name, **{k: dataclasses.asdict(m) for k, m in ms.items()}}
             for c, ms in results], indent=1))
    if args.markdown:
        args.markdown.write_text(markdown(rows))
    if args.plot:
        path = ROOT / "docs" / "pressure-matrix.png"
        plot(results, path)
        print(f"wrote {path.relative_to(ROOT)}", file=sys.stderr)
    if args.check:
        print(f"\n{len(broken)} invariant(s) broken" + (":" if broken else ""))
        for line in broken:
            print(f"  {line}")
        return 1 if broken else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
