"""Charts for the benchmark page (``--plot``): official vs resilient, side by side.

Needs matplotlib (``pip install -e '.[docs]'``). Charts are SVG with fixed ids and no date, so
re-running a benchmark changes a committed image only where a figure changed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ._common import ROOT

#: Where the committed charts live (``docs/benchmarks.md`` shows them).
DEFAULT_DIR = ROOT / "docs" / "img"
#: Series colours in order: with two series official / resilient, with three raw / official /
#: resilient (the resilient client is always the last series and always blue).
COLOURS = {2: ("#9e9e9e", "#1565c0"), 3: ("#cfd8dc", "#9e9e9e", "#1565c0")}


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("--plot needs matplotlib: python -m pip install -e '.[docs]'") from None
    matplotlib.use("Agg")
    matplotlib.rcParams.update({"svg.hashsalt": "resilient-llm", "svg.fonttype": "path",
                                "font.size": 10})
    import matplotlib.pyplot as plt

    return plt


def grouped_bars(
    path: Path,
    *,
    title: str,
    ylabel: str,
    groups: Sequence[str],
    series: Mapping[str, Sequence[float]],
    note: str = "",
    fmt: str = "{:.2f}",
    reference: float | None = None,
    reference_label: str = "",
) -> Path:
    """One bar per series in each group (official then resilient, or raw, official, resilient),
    each bar labelled with its value; ``reference`` draws a dashed line (a target, an ideal)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 3.6))
    width = 0.8 / max(1, len(series))
    colours = COLOURS.get(len(series), ())
    for n, (name, values) in enumerate(series.items()):
        xs = [i + (n - (len(series) - 1) / 2) * width for i in range(len(groups))]
        colour = colours[n] if colours else None
        bars = ax.bar(xs, values, width * 0.95, label=name, color=colour)
        ax.bar_label(bars, labels=[fmt.format(v) for v in values], padding=2, fontsize=8)
    if reference is not None:
        ax.axhline(reference, color="#c62828", linestyle="--", linewidth=1,
                   label=reference_label or None)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel(ylabel)
    # The legend sits above the plot, under the title, never over a bar or its label: one row
    # when the labels fit the width, else one label per row.
    entries = len(series) + (reference is not None)
    one_row = sum(len(name) for name in series) + 6 * entries <= 90
    rows = 1 if one_row else entries
    ax.set_title(title, pad=10 + 13 * rows)
    ax.margins(y=0.15)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(frameon=False, fontsize=8, loc="lower left", bbox_to_anchor=(0, 1.0),
              ncol=entries if one_row else 1, borderaxespad=0.2)
    if note:
        fig.text(0.01, 0.01, note, fontsize=7, color="#616161")
    fig.tight_layout(rect=(0, 0.04 if note else 0, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="svg", metadata={"Date": None})
    plt.close(fig)
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return path


def plot_dir(value: str | None) -> Path | None:
    """The ``--plot [DIR]`` option's directory (``docs/img`` when given without a value)."""
    if value is None:
        return None
    return Path(value) if value else DEFAULT_DIR
