"""Import time of the drop-in clients vs the official SDKs, in fresh interpreters.

    python benchmarks/import_time.py [--quick] [--runs N] [--json PATH]

Each command is ``python -c "<statement>"`` in a new process; the figure is the whole process's
wall time (interpreter start-up included, as a user sees it). Commands are interleaved
(A B C D … A B C D …) so machine drift hits all of them alike; one untimed warm-up run each
fills the bytecode caches. Reported: median and IQR of wall time, median child CPU, peak RSS,
and the ratio drop-in / official. Also checks, in a fresh interpreter, that
``import resilient_llm`` loads neither provider SDK nor redis, sqlite3 or the OpenTelemetry
SDK (exit status 1 if it does).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import (
    ROOT,
    child_env,
    importable,
    iqr,
    load_note,
    median,
    run_fresh,
    subprocess_json,
    table,
    write_json,
)

FORBIDDEN = ("openai", "anthropic", "redis", "sqlite3", "_sqlite3", "opentelemetry.sdk")

_CHECK = f"""
import json, sys
import resilient_llm
forbidden = {FORBIDDEN!r}
loaded = sorted(m for m in sys.modules
                if any(m == f or m.startswith(f + ".") for f in forbidden))
print(json.dumps({{"loaded": loaded, "modules": len(sys.modules)}}))
"""


def lazy_import_check() -> dict[str, object]:
    result: dict[str, object] = subprocess_json(_CHECK)
    result["ok"] = not result["loaded"]
    return result


def top_imports(code: str, count: int = 8) -> list[tuple[str, float]]:
    """Top-level packages by cumulative ``-X importtime`` (ms) when running ``code``."""
    import subprocess

    out = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True,
                         text=True, cwd=str(ROOT), env=child_env(), timeout=60, check=False)
    rows: list[tuple[str, float]] = []
    for line in out.stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        parts = line[len("import time:"):].split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        name = parts[2].strip()
        if "." not in name:
            rows.append((name, int(parts[1]) / 1000))
    return sorted(rows, key=lambda r: -r[1])[:count]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="2 runs each, no warm-up run (smoke test, < 20 s)")
    parser.add_argument("--runs", type=int, default=None, help="timed runs per command (15)")
    parser.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    args = parser.parse_args(argv)
    runs = args.runs or (2 if args.quick else 15)

    commands: dict[str, str] = {
        "python -c pass": "pass",
        "import resilient_llm": "import resilient_llm",
        "from openai import OpenAI": "from openai import OpenAI",
        "from resilient_llm.openai import OpenAI": "from resilient_llm.openai import OpenAI",
    }
    pairs = [("from resilient_llm.openai import OpenAI", "from openai import OpenAI")]
    # A cloud class comes with its module: the same import, measured under its own name.
    commands["from openai import AzureOpenAI"] = "from openai import AzureOpenAI"
    commands["from resilient_llm.openai import AzureOpenAI"] = (
        "from resilient_llm.openai import AzureOpenAI")
    pairs.append(("from resilient_llm.openai import AzureOpenAI", "from openai import AzureOpenAI"))
    notes: list[str] = []
    ok, why = importable("resilient_llm.anthropic")
    if ok and args.quick:
        notes.append("anthropic pair skipped in --quick (about 1.6 s per import)")
    elif ok:
        commands["from anthropic import Anthropic"] = "from anthropic import Anthropic"
        commands["from resilient_llm.anthropic import Anthropic"] = (
            "from resilient_llm.anthropic import Anthropic")
        pairs.append(("from resilient_llm.anthropic import Anthropic",
                      "from anthropic import Anthropic"))
        commands["from anthropic import AnthropicBedrock"] = (
            "from anthropic import AnthropicBedrock")
        commands["from resilient_llm.anthropic import AnthropicBedrock"] = (
            "from resilient_llm.anthropic import AnthropicBedrock")
        pairs.append(("from resilient_llm.anthropic import AnthropicBedrock",
                      "from anthropic import AnthropicBedrock"))
    else:
        notes.append(f"anthropic pair skipped: resilient_llm.anthropic does not import ({why})")

    for note in notes:
        print(f"note: {note}")
    warm = "" if args.quick else ", after one warm-up run each"
    print(f"{runs} timed runs per command, interleaved{warm}; {load_note()}\n")

    if not args.quick:
        for code in commands.values():  # warm-up: bytecode caches, page cache
            run_fresh(code)
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in commands}
    names = list(commands)
    for i in range(runs):
        order = names if i % 2 == 0 else names[::-1]  # ABCD DCBA: no fixed position bias
        for name in order:
            samples[name].append(run_fresh(commands[name]))

    figures: dict[str, dict[str, float]] = {}
    for name, runs_ in samples.items():
        walls = [s["wall"] * 1000 for s in runs_]
        figures[name] = {
            "wall_ms_median": median(walls),
            "wall_ms_iqr": iqr(walls),
            "wall_ms_min": min(walls),
            "cpu_ms_median": median([s["cpu"] * 1000 for s in runs_]),
            "rss_mib_median": median([s["rss_kib"] / 1024 for s in runs_]),
            "runs": len(walls),
        }
    base = figures["python -c pass"]["wall_ms_median"]
    rows = []
    for name, f in figures.items():
        rows.append([name, f["wall_ms_median"], f["wall_ms_iqr"], f["wall_ms_median"] - base,
                     f["cpu_ms_median"], f["rss_mib_median"]])
    print(table(["command", "wall ms (median)", "IQR", "minus bare", "CPU ms", "RSS MiB"], rows))

    ratios = {}
    print()
    ratio_rows = []
    for ours, theirs in pairs:
        a, b = figures[ours]["wall_ms_median"], figures[theirs]["wall_ms_median"]
        ratios[f"{ours} / {theirs}"] = a / b
        ratio_rows.append([ours, theirs, a - b, a / b,
                           (a - base) / max(b - base, 1e-9)])
    print(table(["drop-in", "official", "added ms", "ratio (wall)", "ratio (minus bare)"],
                ratio_rows))

    check = lazy_import_check()
    print()
    if check["ok"]:
        print(f"PASS: `import resilient_llm` loads none of {', '.join(FORBIDDEN)} "
              f"({check['modules']} modules in sys.modules)")
    else:
        print(f"FAIL: `import resilient_llm` loaded {', '.join(check['loaded'])}")  # type: ignore[arg-type]

    top = top_imports("import resilient_llm")
    print("\n`import resilient_llm`, largest top-level imports (-X importtime, cumulative ms, "
          "one run): " + ", ".join(f"{name} {ms:.0f}" for name, ms in top))

    write_json(args.json, {"benchmark": "import_time", "runs": runs, "notes": notes,
                           "figures": figures, "ratios": ratios, "lazy_import": check,
                           "top_imports_resilient_llm": top})
    return 0 if check["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
