"""The main job, measured: a provider in a brownout, the official client and the resilient one.

    python benchmarks/deadline.py [--quick] [--calls N] [--deadline S] [--json PATH]
                                  [--plot [DIR]]

The workload of ``python -m resilient_llm demo`` (``resilient_llm._demo``): the primary model
answers half its requests and otherwise sends 429 bursts with ``Retry-After``, 503s, 6 s
answers, cut streams and hung requests; a fallback model stays healthy. The same calls (every
fourth one streamed) run through ``openai.OpenAI(timeout=D, max_retries=2)``, what users write
when they mean "give up after D seconds", and through ``resilient_llm.openai.OpenAI`` with a
deadline of D and one fallback. Reported per client: success, attempts per call (from the
provider's request log), p50/p99 latency and the worst overshoot of D. ``--plot`` writes the
success, attempts-per-call and overshoot charts of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

for _var in [v for v in os.environ if v.startswith("RESILIENT_LLM_")]:
    del os.environ[_var]  # the default policy, whatever the shell exports

from benchmarks._common import load_note, table, write_json  # noqa: E402
from benchmarks._plot import grouped_bars, plot_dir  # noqa: E402
from resilient_llm._demo import FALLBACK, PRIMARY, Summary, brownout  # noqa: E402
from resilient_llm._demo import _official_call as official_call  # noqa: E402
from resilient_llm._demo import _resilient_call as resilient_call  # noqa: E402
from resilient_llm._demo import _run as run_calls  # noqa: E402

OFFICIAL = "openai.OpenAI"
RESILIENT = "resilient_llm.openai.OpenAI"


def measure(calls: int, deadline: float, workers: int, seed: int) -> dict[str, Summary]:
    import openai

    from resilient_llm import Policy
    from resilient_llm.openai import OpenAI
    from resilient_llm.testing import Fault, FaultProvider

    provider = FaultProvider()
    out: dict[str, Summary] = {}
    with provider.serve() as server:
        for name in (OFFICIAL, RESILIENT):
            provider.reset()
            provider.set_default(Fault.ok(delay=0.05), model=FALLBACK)
            provider.script(*brownout(seed, calls * 6), model=PRIMARY)
            if name == OFFICIAL:
                client: Any = openai.OpenAI(base_url=server.openai_base_url, api_key="sk-bench",
                                            timeout=deadline, max_retries=2)
                make = official_call(client)
            else:
                client = OpenAI(base_url=server.openai_base_url, api_key="sk-bench",
                                policy=Policy(deadline=deadline, fallbacks={PRIMARY: [FALLBACK]}))
                make = resilient_call(client)
            with client:
                out[name] = run_calls(name, make, calls=calls, workers=workers,
                                      deadline=deadline, provider=provider)
    return out


def plot(results: dict[str, Summary], calls: int, deadline: float, directory: Any) -> None:
    group = [f"{calls} calls, brownout, {deadline:g} s budget"]
    note = (f"benchmarks/deadline.py --calls {calls} --deadline {deadline:g}: one run on a "
            "shared 2-core machine; loopback provider")
    official, resilient = results[OFFICIAL], results[RESILIENT]
    names = {f"{OFFICIAL}(timeout={deadline:g}, max_retries=2)": official,
             f"{RESILIENT} (deadline {deadline:g} s, one fallback)": resilient}
    grouped_bars(directory / "bench-brownout-success.svg", title="Calls that succeeded",
                 ylabel="success, %", groups=group, fmt="{:.0f} %", note=note,
                 series={k: [100 * v.succeeded / v.calls] for k, v in names.items()})
    grouped_bars(directory / "bench-brownout-attempts.svg",
                 title="Requests the provider received per call", ylabel="attempts per call",
                 groups=group, note=note,
                 series={k: [v.attempts_per_call] for k, v in names.items()})
    grouped_bars(directory / "bench-brownout-overshoot.svg",
                 title=f"Slowest call past the {deadline:g} s the caller allowed",
                 ylabel="worst overshoot, s", groups=group, note=note,
                 series={k: [v.worst_overshoot] for k, v in names.items()})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run (12 calls)")
    parser.add_argument("--calls", type=int, default=None, help="calls per client (40)")
    parser.add_argument("--deadline", type=float, default=3.0, help="seconds (3)")
    parser.add_argument("--workers", type=int, default=10, help="calls in flight (10)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    parser.add_argument("--plot", nargs="?", const="", default=None, metavar="DIR",
                        help="write the charts (default DIR: docs/img; needs matplotlib)")
    args = parser.parse_args(argv)
    calls = args.calls or (12 if args.quick else 40)
    print(load_note())
    logging.getLogger("resilient_llm").addHandler(logging.NullHandler())  # the table says it
    results = measure(calls, args.deadline, args.workers, args.seed)
    print(table(["client", "success", "attempts/call", "p50 s", "p99 s",
                 f"worst overshoot of {args.deadline:g} s", "served by fallback"],
                [[s.name, f"{s.succeeded}/{s.calls}", s.attempts_per_call, s.p50, s.p99,
                  s.worst_overshoot, s.degraded] for s in results.values()]))
    directory = plot_dir(args.plot)
    if directory is not None:
        plot(results, calls, args.deadline, directory)
    write_json(args.json, {"benchmark": "deadline", "calls": calls, "deadline": args.deadline,
                           "results": {k: vars_of(v) for k, v in results.items()}})
    return 0


def vars_of(summary: Summary) -> dict[str, Any]:
    return {field: getattr(summary, field) for field in summary.__dataclass_fields__}


if __name__ == "__main__":
    raise SystemExit(main())
