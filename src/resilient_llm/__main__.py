"""``python -m resilient_llm``: ``demo`` (the main job), ``config`` (effective settings) and
``replay`` (re-send captured calls to another model)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ._errors import ConfigError


def _config(_: argparse.Namespace) -> int:
    from ._policy import Policy

    try:
        policy = Policy.from_env()
    except ConfigError as exc:
        print(f"resilient-llm: {exc}", file=sys.stderr)
        return 2
    rows = policy.describe()
    width = max(len(row[0]) for row in rows)
    value_width = min(48, max(len(row[2]) for row in rows))
    print(f"{'variable':<{width}}  {'value':<{value_width}}  source")
    for variable, _field, value, source in rows:
        print(f"{variable:<{width}}  {value:<{value_width}}  {source}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    return run_demo(calls=args.calls, deadline=args.deadline)


def _replay(args: argparse.Namespace) -> int:
    from .telemetry.replay import replay

    try:
        summary = replay(args.file, model=args.model, out=args.out, base_url=args.base_url,
                         limit=args.limit)
    except (OSError, ValueError) as exc:  # ConfigError is a ValueError
        print(f"resilient-llm replay: {exc}", file=sys.stderr)
        return 2
    print(f"replayed {summary.replayed} call(s) against {args.model}: "
          f"{summary.replayed - summary.failed} answered, {summary.failed} failed, "
          f"{summary.skipped} line(s) skipped")
    for note in summary.notes[:10]:
        print(f"  skipped {note}")
    print(f"side-by-side results: {summary.out}")
    return 0 if summary.replayed else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the command line."""
    parser = argparse.ArgumentParser(prog="python -m resilient_llm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="run the official and the resilient client side by side against a local "
             "misbehaving provider (no API key, no network)",
    )
    demo.add_argument("--calls", type=int, default=40, help="calls per client (default 40)")
    demo.add_argument("--deadline", type=float, default=3.0,
                      help="RESILIENT_LLM_DEADLINE for the resilient client, seconds (default 3)")
    demo.set_defaults(func=_demo)
    config = sub.add_parser("config", help="print the effective settings and where each came from")
    config.set_defaults(func=_config)
    replay = sub.add_parser(
        "replay",
        help="re-send the calls of a capture file (RESILIENT_LLM_CAPTURE_FILE) to another model "
             "and write original/replay pairs side by side",
    )
    replay.add_argument("file", help="a JSONL capture file")
    replay.add_argument("--model", required=True, help="the model to replay against")
    replay.add_argument("--out", help="result file (default: FILE.replay-MODEL.jsonl)")
    replay.add_argument("--base-url", help="send to this origin instead of the recorded one")
    replay.add_argument("--limit", type=int, help="replay at most this many calls")
    replay.set_defaults(func=_replay)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
