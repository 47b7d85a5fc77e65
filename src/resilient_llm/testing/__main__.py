"""``python -m resilient_llm.testing serve``: run the fault provider as a standalone server.

Lets non-Python clients (or a benchmark in another process) hit the same scripted faults.
The optional ``--script`` file is JSON::

    {"default": {"kind": "ok", "delay": 0.05},
     "faults": [{"kind": "status", "code": 429, "headers": {"retry-after": "1"}},
                {"kind": "hang", "model": "gpt-4.1"}]}
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._faults import Fault, ToolCall, Usage
from ._provider import FaultProvider

__all__ = ["fault_from_dict", "main"]

_KINDS = {
    "ok",
    "status",
    "hang",
    "reset",
    "stream_cut",
    "stream_stall",
    "malformed_chunk",
    "missing_terminator",
    "error_event",
    "first_token_delay",
    "context_length_exceeded",
    "insufficient_quota",
    "content_policy",
}


def fault_from_dict(spec: dict[str, Any]) -> Fault:
    """Build a fault from ``{"kind": name, **keyword arguments of Fault.<name>}``."""
    args = dict(spec)
    kind = args.pop("kind", None)
    args.pop("model", None)
    if kind not in _KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(_KINDS)}")
    if isinstance(args.get("usage"), dict):
        args["usage"] = Usage(**args["usage"])
    if isinstance(args.get("tool_calls"), list):  # {"name": ..., "arguments": "{...}"} each
        args["tool_calls"] = [ToolCall(**call) if isinstance(call, dict) else call
                              for call in args["tool_calls"]]
    if kind == "status":
        return Fault.status(args.pop("code"), **args)
    if kind == "first_token_delay":
        return Fault.first_token_delay(args.pop("seconds"), **args)
    result: Fault = getattr(Fault, kind)(**args)
    return result


def load_script(provider: FaultProvider, path: Path) -> None:
    """Apply a JSON script file (see the module docstring) to ``provider``."""
    data = json.loads(path.read_text())
    if "default" in data:
        provider.set_default(fault_from_dict(data["default"]))
    for spec in data.get("faults", []):
        provider.script(fault_from_dict(spec), model=spec.get("model"))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    parser = argparse.ArgumentParser(prog="python -m resilient_llm.testing")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the fault provider on a loopback port")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=0, help="0 picks a free port")
    serve.add_argument("--script", type=Path, help="JSON file of scripted faults")
    # The FaultProvider's own options, each named once: its keyword is the option's dest.
    provider_options = [
        serve.add_argument("--capacity", type=int, default=None),
        serve.add_argument("--service-time", type=float, default=0.0),
        serve.add_argument("--rate-limit-rps", type=float, default=None),
        serve.add_argument("--tokens-per-minute", type=int, default=None),
        serve.add_argument("--retry-after", dest="retry_after_header", action="store_true",
                           help="send retry-after on 429s"),
        serve.add_argument("--log-limit", type=int, default=10_000,
                           help="requests kept in memory"),
    ]
    args = parser.parse_args(argv)

    provider = FaultProvider(**{opt.dest: getattr(args, opt.dest) for opt in provider_options})
    if args.script is not None:
        load_script(provider, args.script)
    with provider.serve(host=args.host, port=args.port) as server:
        sys.stdout.write(
            f"fault provider on {server.url}\n"
            f"  OpenAI base_url:    {server.openai_base_url}\n"
            f"  Anthropic base_url: {server.anthropic_base_url}\n"
        )
        sys.stdout.flush()
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
