"""The ``resilient-llm`` command (also ``python -m resilient_llm``).

``demo`` is the main job, ``config`` prints the effective settings (and, with ``--markdown``,
the configuration reference), ``replay`` re-sends captured calls to another model.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence

from ._errors import ConfigError


def _config(args: argparse.Namespace) -> int:
    from ._policy import (
        STRICT_VAR,
        Policy,
        Source,
        report_unknown_env,
        strict_env,
        unknown_env_message,
        unknown_env_vars,
    )

    if args.markdown:
        from ._config_reference import render_markdown

        print(render_markdown(), end="")
        return 0
    try:
        # Strict: an unknown variable is an error; otherwise it is a line below, not a warning.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report_unknown_env(strict=True if args.strict else None)
            policy = Policy.from_env()
    except ConfigError as exc:
        print(f"resilient-llm: {exc}", file=sys.stderr)
        return 2
    rows = policy.describe()
    # Not a Policy field: it governs how the others are read.
    source: Source = "argument" if args.strict else \
        "environment" if STRICT_VAR in os.environ else "default"
    rows.append((STRICT_VAR, "", "true" if args.strict or strict_env() else "false", source))
    width = max(len(row[0]) for row in rows)
    value_width = min(48, max(len(row[2]) for row in rows))
    print(f"{'variable':<{width}}  {'value':<{value_width}}  source")
    for variable, _field, value, source in rows:
        print(f"{variable:<{width}}  {value:<{value_width}}  {source}")
    for name in unknown_env_vars():
        print(f"unknown: {unknown_env_message(name)}")
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


def _prog(argv0: str) -> str:
    """How the user started us: ``resilient-llm`` (console script) or ``python -m ...``."""
    name = os.path.basename(argv0)
    if not name or name in ("__main__.py", "-c") or name.startswith("python"):
        return "python -m resilient_llm"
    return name.removesuffix(".exe")


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser (``prog`` defaults to how this process was started)."""
    parser = argparse.ArgumentParser(
        prog=prog or _prog(sys.argv[0]),
        description="Drop-in OpenAI and Anthropic clients with resilience built in. "
                    "`demo` runs the official and the resilient client side by side, "
                    "`config` prints the effective settings, `replay` re-sends captured calls.",
    )
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
    config.add_argument("--strict", action="store_true",
                        help="exit with status 2 when an unknown RESILIENT_LLM_* variable is set "
                             "(as RESILIENT_LLM_STRICT=1)")
    config.add_argument("--markdown", action="store_true",
                        help="print the configuration reference (docs/configuration.md) instead")
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``resilient-llm`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`config | head -3`): stop quietly, as other command-line tools
        # do. Point stdout at /dev/null so the interpreter's final flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return result


if __name__ == "__main__":
    sys.exit(main())
