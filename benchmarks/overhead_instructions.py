"""Per-call overhead as CPU instructions: a noise-free companion to ``overhead.py``.

Wall and CPU time on a shared VM move by ±10 % from run to run, more than the effect being
measured. Instructions executed do not: this script runs the official client and the drop-in
side by side in one process under valgrind's callgrind, against the in-process fault
transport (no sockets, no server process), and reports instructions per call and their ratio.
Each client's timed calls run inside its own C-level marker function (``functools.reduce`` for
the official client, ``itertools.dropwhile`` for the drop-in, ``itertools.takewhile`` for the
provider alone answering the same request), whose inclusive count callgrind reports. The
in-process provider's work is in both clients' counts; the "client-only" ratio takes it out of
both, which is what a client costs against a provider in another process.

    python benchmarks/overhead_instructions.py [--calls 200] [--kinds sync-openai,...]
                                               [--plot [DIR]]

Kinds: ``sync-*`` and ``async-*`` make one call at a time; ``async16-*`` keep 16 in flight on
one loop (``overhead.py``'s third configuration).

Needs ``valgrind`` (``apt-get install valgrind``); ≈ 1 minute per kind.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import itertools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

KINDS = ("sync-openai", "sync-anthropic", "async-openai", "async-anthropic",
         "async16-openai", "async16-anthropic")
#: Calls in flight at once for each async kind (``async16-*``: 16, as in ``overhead.py``).
IN_FLIGHT = 16
MESSAGES: Any = [{"role": "user", "content": "Say hello."}]
WARMUP = 60


def _clients(kind: str) -> tuple[Any, Any, Any]:
    import anthropic
    import httpx2
    import openai

    import resilient_llm.anthropic as rl_anthropic
    import resilient_llm.openai as rl_openai
    from resilient_llm.testing import FaultProvider

    transport = FaultProvider(log_limit=100).transport()
    asynchronous = kind.startswith("async")
    http: Any = httpx2.AsyncClient if asynchronous else httpx2.Client
    pair: tuple[Any, Any]
    if kind.endswith("openai"):
        pair = (openai.AsyncOpenAI, rl_openai.AsyncOpenAI) if asynchronous \
            else (openai.OpenAI, rl_openai.OpenAI)
        base = "http://fault.test/v1"
    else:
        pair = (anthropic.AsyncAnthropic, rl_anthropic.AsyncAnthropic) if asynchronous \
            else (anthropic.Anthropic, rl_anthropic.Anthropic)
        base = "http://fault.test"
    official, ours = (cls(base_url=base, api_key="sk-bench", http_client=http(transport=transport))
                      for cls in pair)
    return official, ours, transport


def _provider_only(client: Any, transport: Any) -> Callable[[], Any]:
    """The provider answering one request like the client's, with no client around it."""
    import httpx2

    if hasattr(client, "messages"):
        url, body = "http://fault.test/v1/messages", {
            "model": "claude-sonnet-4-6", "max_tokens": 100, "messages": MESSAGES}
        headers = {"x-api-key": "sk-bench", "anthropic-version": "2023-06-01"}
    else:
        url, body = "http://fault.test/v1/chat/completions", {
            "model": "gpt-4.1", "messages": MESSAGES}
        headers = {"authorization": "Bearer sk-bench"}

    request = httpx2.Request("POST", url, json=body, headers=headers)  # built once: client work

    def once() -> Any:
        response = transport.handle_request(request)
        return response.read()

    return once


def _request(client: Any) -> Any:
    if hasattr(client, "messages"):
        return client.messages.create(model="claude-sonnet-4-6", max_tokens=100,
                                      messages=MESSAGES)
    return client.chat.completions.create(model="gpt-4.1", messages=MESSAGES)


def _measure(kind: str, calls: int) -> None:
    """Child mode (under callgrind): warm both clients, then run each inside its marker."""
    official, ours, transport = _clients(kind)
    provider = _provider_only(official, transport)
    for _ in range(WARMUP):
        provider()
    gc.collect()
    gc.disable()
    for _ in itertools.takewhile(lambda _i: (provider(), True)[1], range(calls)):
        pass
    gc.enable()
    if kind.startswith("async"):
        loop = asyncio.new_event_loop()

        def make(client: Any) -> Callable[[], Any]:
            async def many(n: int) -> None:
                if kind.startswith("async16"):
                    for _ in range(n // IN_FLIGHT):
                        await asyncio.gather(*(_request(client) for _ in range(IN_FLIGHT)))
                    return
                for _ in range(n):
                    await _request(client)

            return lambda: loop.run_until_complete(many(calls))

        for client in (official, ours):
            loop.run_until_complete(_warm_async(client))
        run_official, run_ours = make(official), make(ours)
        gc.collect()
        gc.disable()
        functools.reduce(lambda _acc, _i: run_official(), range(1), None)
        gc.collect()
        for _ in itertools.dropwhile(lambda _i: (run_ours(), True)[1], range(1)):
            pass
        return
    for client in (official, ours):
        for _ in range(WARMUP):
            _request(client)
    gc.collect()
    gc.disable()
    functools.reduce(lambda _acc, _i: _request(official), range(calls), None)
    gc.collect()
    for _ in itertools.dropwhile(lambda _i: (_request(ours), True)[1], range(calls)):
        pass


async def _warm_async(client: Any) -> None:
    for _ in range(WARMUP):
        await _request(client)


def _inclusive(annotated: str, symbol: str) -> int:
    for line in annotated.splitlines():
        if symbol in line:
            match = re.match(r"\s*([\d,]+)", line)
            if match:
                return int(match.group(1).replace(",", ""))
    raise RuntimeError(f"callgrind reported no {symbol}: did the run fail?")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--plot", nargs="?", const="", default=None, metavar="DIR",
                        help="write the per-call overhead chart (default DIR: docs/img)")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks._plot import plot_dir

    if args.child:
        _measure(args.child, args.calls)
        return 0
    if shutil.which("valgrind") is None or shutil.which("callgrind_annotate") is None:
        print("valgrind is not installed: apt-get install valgrind", file=sys.stderr)
        return 2
    if args.calls < IN_FLIGHT:
        print(f"--calls must be at least {IN_FLIGHT}", file=sys.stderr)
        return 2
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        print(f"unknown kind {', '.join(unknown)}; choose from {', '.join(KINDS)}",
              file=sys.stderr)
        return 2
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESILIENT_LLM_")}
    env["PYTHONHASHSEED"] = "0"
    print(f"instructions per call, {args.calls} calls per client, in-process fault transport")
    print(f"{'kind':<16} {'official':>11} {'resilient':>11} {'added':>9} {'ratio':>6} "
          f"{'provider':>10} {'client-only ratio':>18}")
    client_only: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            out = Path(tmp) / f"{kind}.out"
            subprocess.run(
                ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
                 __file__, "--child", kind, "--calls", str(args.calls)],
                check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                timeout=1800,
            )
            annotated = subprocess.run(
                ["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(out)],
                check=True, capture_output=True, text=True,
            ).stdout
            made = args.calls - args.calls % IN_FLIGHT if kind.startswith("async16") \
                else args.calls  # async16 kinds run whole batches of IN_FLIGHT calls
            official = _inclusive(annotated, "functools_reduce") / made
            ours = _inclusive(annotated, "dropwhile_next") / made
            provider = _inclusive(annotated, "takewhile_next") / args.calls
            print(f"{kind:<16} {official:11,.0f} {ours:11,.0f} {ours - official:+9,.0f} "
                  f"{ours / official:6.3f} {provider:10,.0f} "
                  f"{(ours - provider) / (official - provider):18.3f}")
            client_only[kind] = (official - provider, ours - provider)
    directory = plot_dir(args.plot)
    if directory is not None:
        plot(client_only, args.calls, directory)
    return 0


def plot(client_only: dict[str, tuple[float, float]], calls: int, directory: Path) -> None:
    """Client-only instructions per call (thousands), official vs drop-in, per kind."""
    from benchmarks._plot import grouped_bars

    kinds = list(client_only)
    grouped_bars(
        directory / "bench-overhead-instructions.svg",
        title="Client work per call (CPU instructions, provider's share taken out)",
        ylabel="thousand instructions per call", groups=[k.replace("-", "\n") for k in kinds],
        series={"official SDK": [client_only[k][0] / 1000 for k in kinds],
                "resilient drop-in": [client_only[k][1] / 1000 for k in kinds]},
        fmt="{:,.0f}",
        note=f"benchmarks/overhead_instructions.py --calls {calls}: callgrind, deterministic "
             "(the same on any load); in-process fault transport",
    )


if __name__ == "__main__":
    sys.exit(main())
