"""Fleet coordination: 4 worker processes sharing one API key, with Redis, without, official.

    python benchmarks/fleet.py [--quick] [--rps R] [--tpm N] [--duration S] [--json PATH]

The fault provider runs in its own process with a request-rate limit of ``R`` per second
(burst ``R``) and a token limit; 4 worker processes share one key, each with 4 threads calling
in a closed loop (offered load far above ``R``). Three fleets side by side, in one run:

* ``resilient + Redis`` — ``RESILIENT_LLM_REDIS_URL`` set (a real ``redis-server`` on loopback);
* ``resilient, no Redis`` — the same drop-in client, each process pacing on its own;
* ``openai.OpenAI`` — the official client (its 2 retries, its backoff).

Reported per fleet: calls that succeeded / failed, attempts the provider saw, 429s as a share
of attempts, the admitted (200) rate over the second half of the run (steady state: the
provider's bucket and the fleet's lease window both start with a burst) and its largest
1-second window, p50/p99 call latency (calls started after the first second), and Redis
round trips per admitted call (whole run, and second half only). Without ``--quick`` it
also measures priorities (one interactive worker alone, then beside 3 batch workers) and a
Redis outage (killed a third of the way in, restarted at two thirds). ``--quick`` runs the
main table only, in under 20 s.

Workers are forked from a forkserver that imported the SDKs once; the tests reuse
:func:`run_fleet` and :class:`RedisProcess`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODEL = "gpt-4.1"
#: Latency percentiles leave out calls started in the first second (each process's first
#: fleet call imports ``redis`` and connects).
WARM_UP = 1.0
MESSAGES = [{"role": "user", "content": "Say hello."}]


# --- a restartable redis-server ------------------------------------------------------------------


class RedisProcess:
    """A real ``redis-server`` on a free loopback port that can be killed and restarted on it."""

    def __init__(self) -> None:
        from tests.redis_server import _free_port, find_redis_server

        binary = find_redis_server()
        if binary is None:
            raise RuntimeError("redis-server not found: apt-get install -y redis-server")
        self.binary = binary
        self.port = _free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="rllm-fleet-")
        self._proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        from tests.redis_server import _ping

        self._proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self._dir.name, "--daemonize", "no",
             "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self._dir.name,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not _ping(self.port):
            if self._proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self._proc.returncode}")
            time.sleep(0.02)

    def kill(self) -> None:
        """Stop the server abruptly (SIGKILL of the process this object started)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(5)
        self._proc = None

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        self._proc = None
        self._dir.cleanup()

    def __enter__(self) -> RedisProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- the worker process ---------------------------------------------------------------------------


def _preset_breaker(cfg: dict[str, Any]) -> None:
    """Give the target's breaker a short break (tests), before the first call creates it."""
    from urllib.parse import urlsplit

    from resilient_llm.engine.pressure import TargetKey
    from resilient_llm.engine.registry import registry
    from resilient_llm.fleet import fleet_pressure

    url = urlsplit(cfg["base_url"])
    endpoint = f"{url.scheme}://{url.hostname}:{url.port or ''}"
    digest = TargetKey.of(endpoint, f"Bearer {cfg['api_key']}", None).credential
    redis_url = cfg.get("redis_url")
    state = registry.get(TargetKey(endpoint, digest, cfg.get("model", MODEL)), time.monotonic(),
                         redis_url=redis_url, shared=fleet_pressure if redis_url else None)
    state.breaker.thresholds.break_for = float(cfg["break_for"])
    state.breaker.thresholds.min_calls = int(cfg.get("min_calls", 5))


class _Warnings:
    """Collects the WARNING records of ``resilient_llm`` (the outage warning) for the result."""

    def __init__(self) -> None:
        import logging

        self.messages: list[str] = []
        handler = logging.Handler(logging.WARNING)
        handler.emit = lambda record: self.messages.append(record.getMessage())  # type: ignore[method-assign]
        logging.getLogger("resilient_llm").addHandler(handler)


def worker_main(cfg: dict[str, Any], conn: Any) -> None:
    """One worker: build the client, say ``ready``, receive the start instant, call, report."""
    import openai

    warnings = _Warnings()
    for var in [v for v in os.environ if v.startswith("RESILIENT_LLM_")]:
        del os.environ[var]
    if cfg["client"] == "official":
        client: Any = openai.OpenAI(base_url=cfg["base_url"], api_key=cfg["api_key"],
                                    timeout=cfg["deadline"])
    else:
        import resilient_llm.openai as rl_openai
        from resilient_llm import Policy

        policy = Policy(redis_url=cfg.get("redis_url"),
                        priority=cfg.get("priority", "interactive"), deadline=cfg["deadline"])
        client = rl_openai.OpenAI(base_url=cfg["base_url"], api_key=cfg["api_key"],
                                  policy=policy)
        if cfg.get("break_for"):
            _preset_breaker(cfg)
    model = cfg.get("model", MODEL)
    conn.send("ready")
    start_at = float(conn.recv())
    stop_at = start_at + cfg["duration"]
    interval = float(cfg.get("interval", 0.0))
    latencies: list[float] = []
    starts: list[float] = []
    queue_waits: list[float] = []
    errors: Counter[str] = Counter()
    late = 0
    lock = threading.Lock()

    calls = cfg.get("calls")  # per thread; None: call until ``duration`` ends

    def loop(n: int) -> None:
        nonlocal late
        time.sleep(max(0.0, start_at - time.monotonic() + 0.003 * n))
        done = 0
        while time.monotonic() < stop_at and (calls is None or done < calls):
            done += 1
            began = time.monotonic()
            try:
                response = client.chat.completions.create(model=model, messages=MESSAGES,
                                                          max_tokens=cfg.get("max_tokens", 50))
            except Exception as exc:
                with lock:
                    errors[type(exc).__name__] += 1
            else:
                took = time.monotonic() - began
                waited = 0.0
                if cfg["client"] != "official":
                    from resilient_llm import outcome

                    waited = outcome(response).queue_wait
                with lock:
                    latencies.append(took)
                    starts.append(began)
                    queue_waits.append(waited)
                    late += took > cfg["deadline"]
            if interval:
                time.sleep(interval)

    def stats() -> dict[str, Any]:
        if cfg["client"] == "official":
            return {}
        from dataclasses import asdict

        from resilient_llm.fleet import fleet_stats

        return asdict(fleet_stats())

    threads = [threading.Thread(target=loop, args=(n,)) for n in range(cfg["threads"])]
    for thread in threads:
        thread.start()
    time.sleep(max(0.0, start_at + cfg["duration"] / 2 - time.monotonic()))
    half = stats()
    for thread in threads:
        thread.join()
    client.close()
    conn.send({"latencies": latencies, "starts": starts, "queue_waits": queue_waits,
               "errors": dict(errors), "late": late,
               "stats": stats(), "half": half, "warnings": warnings.messages})
    conn.close()


# --- running a fleet ------------------------------------------------------------------------------

_CONTEXT: Any = None


def _context() -> Any:
    """A forkserver that has imported the SDKs once: a worker then starts in milliseconds."""
    global _CONTEXT
    if _CONTEXT is None:
        import multiprocessing

        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["openai", "resilient_llm.openai", "benchmarks.fleet"])
        _CONTEXT = context
    return _CONTEXT


class Fleet:
    """Worker processes started ahead of time: :meth:`go` releases them together."""

    def __init__(self, workers: list[dict[str, Any]]) -> None:
        context = _context()
        self._conns: list[Any] = []
        self._procs: list[Any] = []
        for cfg in workers:
            parent, child = context.Pipe()
            proc = context.Process(target=worker_main, args=(cfg, child), daemon=True)
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)

    def _recv(self, conn: Any, proc: Any, timeout: float) -> Any:
        if not conn.poll(timeout):
            raise RuntimeError(f"worker {proc.pid} did not answer within {timeout:g} s")
        try:
            return conn.recv()
        except EOFError:
            proc.join(5)
            raise RuntimeError(f"worker {proc.pid} ended early (exit {proc.exitcode})") from None

    def go(self, on_start: Any = None,
           timeout: float = 120.0) -> tuple[float, list[dict[str, Any]]]:
        """Release the workers; return the start instant and their results."""
        for conn, proc in zip(self._conns, self._procs, strict=True):
            if self._recv(conn, proc, 60.0) != "ready":
                raise RuntimeError("worker did not start")
        start_at = time.monotonic() + 0.1
        for conn in self._conns:
            conn.send(start_at)
        if on_start is not None:
            on_start(start_at)
        results = [self._recv(conn, proc, timeout) for conn, proc in zip(
            self._conns, self._procs, strict=True)]
        for proc in self._procs:
            proc.join(10)
        return start_at, results

    def close(self) -> None:
        for proc in self._procs:
            if proc.is_alive():
                proc.kill()  # only the workers this object started
                proc.join(5)
            proc.close()
        for conn in self._conns:
            conn.close()
        self._procs, self._conns = [], []


def run_fleet(workers: list[dict[str, Any]], *, on_start: Any = None,
              timeout: float = 120.0) -> tuple[float, list[dict[str, Any]]]:
    """Start one process per worker config, release them together; (start, results).

    ``on_start(start_at)`` runs in this process once the workers are released (e.g. to kill
    Redis mid-run). Each result has ``latencies``, ``starts``, ``errors``, ``late``, ``stats``
    (the worker's ``fleet_stats()``) and ``warnings`` (``resilient_llm`` WARNING messages).
    """
    fleet = Fleet(workers)
    try:
        return fleet.go(on_start, timeout)
    finally:
        fleet.close()


# --- analysis ------------------------------------------------------------------------------------


def summarize(results: list[dict[str, Any]], log: list[dict[str, Any]], start_at: float,
              duration: float) -> dict[str, Any]:
    """The table row of one fleet run (``log``: the provider's request log)."""
    from benchmarks._common import percentile

    warm = start_at + WARM_UP
    latencies = [x for r in results for x, t in zip(r["latencies"], r["starts"], strict=True)
                 if t >= warm]
    ok = sum(len(r["latencies"]) for r in results)
    failed = sum(sum(r["errors"].values()) for r in results)
    errors: Counter[str] = Counter()
    for r in results:
        errors.update(r["errors"])
    attempts = len(log)
    throttled = sum(1 for e in log if e["status"] == 429)
    ok_times = sorted(e["started_at"] for e in log if e["status"] == 200)
    steady_from = start_at + duration / 2
    steady = [t for t in ok_times if steady_from <= t < start_at + duration]
    span = duration / 2
    windows = [sum(1 for t in steady if w <= t < w + 1.0)
               for w in [steady_from + 0.25 * i for i in range(int(max(0, span - 1) * 4) + 1)]]
    trips = sum(r["stats"].get("round_trips", 0) for r in results)
    admissions = sum(r["stats"].get("admissions", 0) for r in results)
    half_trips = trips - sum(r["half"].get("round_trips", 0) for r in results)
    half_admissions = admissions - sum(r["half"].get("admissions", 0) for r in results)
    return {
        "ok": ok,
        "failed": failed,
        "errors": dict(errors),
        "late": sum(r["late"] for r in results),
        "attempts": attempts,
        "429": throttled,
        "429_pct": 100.0 * throttled / attempts if attempts else 0.0,
        "admitted_rate": len(steady) / span if steady else 0.0,
        "max_1s": max(windows) if windows else 0,
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "rt_per_call": trips / admissions if admissions else float("nan"),
        "rt_per_call_steady": half_trips / half_admissions if half_admissions else float("nan"),
        "per_worker_ok": [len(r["latencies"]) for r in results],
        "fallbacks": sum(r["stats"].get("fallbacks", 0) for r in results),
        "rejoins": sum(r["stats"].get("rejoins", 0) for r in results),
    }


def _fleet_configs(base_url: str, key: str, redis_url: str | None, client: str,
                   duration: float, *, threads: int = 4, n: int = 4) -> list[dict[str, Any]]:
    return [{"base_url": base_url, "api_key": key, "redis_url": redis_url, "client": client,
             "threads": threads, "duration": duration, "deadline": 20.0} for _ in range(n)]


def _run_case(provider: Any, fleet: Fleet, duration: float,
              on_start: Any = None) -> dict[str, Any]:
    provider.reset()
    try:
        start_at, results = fleet.go(on_start)
    finally:
        fleet.close()
    time.sleep(0.2)
    row = summarize(results, provider.log(), start_at, duration)
    row["warnings"] = sum(len(r["warnings"]) for r in results)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="main table only, under 20 s")
    parser.add_argument("--rps", type=float, default=40.0, help="provider request limit R")
    parser.add_argument("--tpm", type=int, default=200_000, help="provider token limit")
    parser.add_argument("--duration", type=float, default=None, help="seconds per fleet")
    parser.add_argument("--json", default=None, help="write the figures to this file")
    args = parser.parse_args()
    duration = args.duration or (3.0 if args.quick else 12.0)

    from benchmarks._common import machine, provider_process, table, write_json

    rows: dict[str, dict[str, Any]] = {}
    with RedisProcess() as redis_server, provider_process(
        pin=False, rate_limit_rps=args.rps, tokens_per_minute=args.tpm, service_time=0.05,
    ) as provider:
        base = provider.openai_base_url
        cases = [("resilient + Redis", "sk-fleet-a", redis_server.url, "resilient"),
                 ("resilient, no Redis", "sk-fleet-b", None, "resilient"),
                 ("openai.OpenAI", "sk-fleet-c", None, "official")]
        fleets = [Fleet(_fleet_configs(base, key, url, client, duration))
                  for _, key, url, client in cases]  # all start importing at once
        try:
            for (name, *_), fleet in zip(cases, fleets, strict=True):
                rows[name] = _run_case(provider, fleet, duration)
        finally:
            for fleet in fleets:
                fleet.close()
        print(f"\n4 workers x 4 threads, one key; provider: {args.rps:g} requests/s (burst "
              f"{args.rps:g}), {args.tpm:,} tokens/min, 50 ms service; {duration:g} s each; "
              f"{machine()['cpus']} CPUs\n")
        print(table(
            ["fleet", "ok", "failed", "attempts", "429s", "429 %", "admitted/s", "max 1 s",
             "p50 s", "p99 s", "RT/call", "RT/call steady"],
            [[name, r["ok"], r["failed"], r["attempts"], r["429"], r["429_pct"],
              r["admitted_rate"], r["max_1s"], r["p50"], r["p99"], r["rt_per_call"],
              r["rt_per_call_steady"]]
             for name, r in rows.items()],
        ))
        for name, r in rows.items():
            if r["errors"]:
                print(f"  {name}: errors {r['errors']}")
        if not args.quick:
            rows.update(_priorities(provider, base, redis_server.url, duration))
            rows.update(_outage(provider, base, redis_server, duration))
    write_json(args.json, {"rps": args.rps, "tpm": args.tpm, "duration": duration,
                           "rows": rows})


def _priorities(provider: Any, base: str, url: str, duration: float) -> dict[str, Any]:
    """One interactive worker alone, then beside 3 batch workers flooding the same key."""
    from benchmarks._common import table

    interactive = {"base_url": base, "api_key": "sk-fleet-p", "redis_url": url,
                   "client": "resilient", "threads": 1, "interval": 0.1,
                   "duration": duration, "deadline": 20.0, "priority": "interactive"}
    batch = dict(interactive, threads=4, interval=0.0, priority="batch")
    alone = _run_case(provider, Fleet([interactive]), duration)
    start_at, flood = run_fleet([interactive, batch, batch, batch])
    from benchmarks._common import percentile

    loaded = [x for x, t in zip(flood[0]["latencies"], flood[0]["starts"], strict=True)
              if t >= start_at + WARM_UP]
    batch_ok = sum(len(r["latencies"]) for r in flood[1:])
    print("\npriorities: one interactive worker (1 call per 0.1 s), then beside 3 batch "
          "workers x 4 threads (latency after the first second)\n")
    print(table(["interactive", "calls", "p50 s", "p99 s", "batch calls"],
                [["alone", alone["ok"], alone["p50"], alone["p99"], 0],
                 ["beside the batch flood", len(flood[0]["latencies"]), percentile(loaded, 50),
                  percentile(loaded, 99), batch_ok]]))
    ratio = percentile(loaded, 99) / alone["p99"]
    print(f"  interactive p99 loaded / alone = {ratio:.2f} (acceptance: <= 2)")
    return {"interactive alone": alone,
            "interactive beside batch": {"ok": len(loaded), "p50": percentile(loaded, 50),
                                         "p99": percentile(loaded, 99), "batch_ok": batch_ok,
                                         "p99_ratio": ratio}}


def _outage(provider: Any, base: str, redis_server: RedisProcess,
            duration: float) -> dict[str, Any]:
    """Redis killed a third of the way in and restarted at two thirds."""
    from benchmarks._common import table

    def chaos(start_at: float) -> None:
        def run() -> None:
            time.sleep(max(0.0, start_at + duration / 3 - time.monotonic()))
            redis_server.kill()
            time.sleep(duration / 3)
            redis_server.start()

        threading.Thread(target=run, daemon=True).start()

    row = _run_case(provider, Fleet(_fleet_configs(base, "sk-fleet-o", redis_server.url,
                                                   "resilient", duration)), duration,
                    on_start=chaos)
    print(f"\nRedis outage: killed at {duration / 3:.0f} s, restarted at "
          f"{2 * duration / 3:.0f} s\n")
    print(table(["fleet", "ok", "failed", "429 %", "admitted/s", "warnings", "fallbacks",
                 "rejoins", "Redis RT/call"],
                [["resilient + Redis (outage)", row["ok"], row["failed"], row["429_pct"],
                  row["admitted_rate"], row["warnings"], row["fallbacks"], row["rejoins"],
                  row["rt_per_call"]]]))
    return {"outage": row}


if __name__ == "__main__":
    from benchmarks.fleet import main as _main  # workers pickle benchmarks.fleet, not __main__

    _main()
