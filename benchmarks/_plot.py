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
COLOURS = {"official": "#9e9e9e", "resilient": "#1565c0", "raw": "#cfd8dc"}


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
    """One bar per series in each group (e.g. official / resilient per configuration), each
    bar labelled with its value; ``reference`` draws a dashed line (a target or an ideal)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 3.4))
    width = 0.8 / max(1, len(series))
    for n, (name, values) in enumerate(series.items()):
        xs = [i + (n - (len(series) - 1) / 2) * width for i in range(len(groups))]
        colour = next((c for key, c in COLOURS.items() if name.lower().startswith(key)), None)
        bars = ax.bar(xs, values, width * 0.95, label=name, color=colour)
        ax.bar_label(bars, labels=[fmt.format(v) for v in values], padding=2, fontsize=8)
    if reference is not None:
        ax.axhline(reference, color="#c62828", linestyle="--", linewidth=1,
                   label=reference_label or None)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.margins(y=0.18)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(frameon=False, fontsize=8, loc="upper left")
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
