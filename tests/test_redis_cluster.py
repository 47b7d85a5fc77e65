"""The fleet and the Redis ledger on the Redis that users run: clusters, TLS, ACL users.

Against real clusters (``tests/redis_cluster.py``: 3 masters + 3 replicas, and the same over
TLS with an ACL user) and a real single ``redis-server``: a URL of any node works, keys stay in
one slot per script, a failover costs no call and no duplicate side effect, and a URL that
contradicts the server fails with a ``ConfigError`` that says which.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from benchmarks.fleet import run_fleet

from resilient_llm import ConfigError, IdempotencyStoreUnavailable, Policy
from resilient_llm._redis import describe_redis_failure, open_redis, parse_redis_url
from resilient_llm._urls import redact_url
from resilient_llm.engine.breaker import Thresholds
from resilient_llm.fleet import FleetBreaker, fleet_keys
from resilient_llm.fleet.link import Link, reset_links
from resilient_llm.fleet.scripts import Script
from resilient_llm.idempotency.side_effect import run, side_effect
from resilient_llm.stores.redis import RedisLedger
from resilient_llm.testing import FakeRandom, FaultProvider
from tests.redis_cluster import (  # noqa: F401
    ACL_PASSWORD,
    Cluster,
    fresh_cluster,
    redis_cluster,
    redis_tls_cluster,
)
from tests.redis_server import redis_url  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _fresh_links() -> Iterator[None]:
    reset_links()
    yield
    reset_links()


# --- URLs: validated at configuration time --------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("redis://127.0.0.1:notaport/0", "does not parse"),
        ("redis://127.0.0.1:0/0", "port must be"),
        ("http://127.0.0.1:6379/0", "scheme must be"),
        ("redis:///0", "no host"),
        ("redis://h/zero", "must be a whole number"),
        ("redis://h/0?clustr=true", "unknown query parameter 'clustr'"),
        ("redis://h/0?cluster=maybe", "must be true or false"),
        ("redis://h/2?cluster=true", "only database 0"),
        ("redis://h/0?ssl_ca_certs=/ca.pem", "needs TLS"),
        ("unix://", "socket's path"),
    ],
)
def test_bad_urls_fail_at_configuration_naming_the_setting(url: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why) as info:
        parse_redis_url(url, setting="RESILIENT_LLM_REDIS_URL")
    assert info.value.variable == "RESILIENT_LLM_REDIS_URL"
    with pytest.raises(ConfigError, match=re.escape(why.split("'")[0])):
        Policy(redis_url=url)


def test_labels_never_show_a_password() -> None:
    url = "rediss://app:s3cr3t-pw@redis.internal:6380/0?ssl_password=k3y-pw&ssl_ca_certs=/ca.pem"
    target = parse_redis_url(url, setting="RESILIENT_LLM_REDIS_URL")
    for shown in (target.label, repr(target), redact_url(url)):
        assert "s3cr3t-pw" not in shown and "k3y-pw" not in shown
        assert "app:***@redis.internal:6380" in shown
    assert target.cluster is None
    with pytest.raises(ConfigError) as info:
        parse_redis_url("redis://app:s3cr3t-pw@h/0?nope=1", setting="X")
    assert "s3cr3t-pw" not in str(info.value)


def test_the_cluster_parameter_is_ours_and_not_passed_on() -> None:
    target = parse_redis_url("redis://h:7000/0?cluster=true&client_name=w1", setting="X")
    assert target.cluster is True
    assert "cluster" not in target.url and "client_name=w1" in target.url
    assert parse_redis_url("redis://h/0?cluster=false", setting="X").cluster is False


# --- detection --------------------------------------------------------------------------------


def test_any_node_of_a_cluster_is_detected(redis_cluster: Cluster) -> None:  # noqa: F811
    from redis.cluster import RedisCluster

    for port in (redis_cluster.ports[0], redis_cluster.ports[-1]):  # a master and a replica
        client = open_redis(parse_redis_url(redis_cluster.url(port), setting="X"),
                            decode_responses=True)
        try:
            assert isinstance(client, RedisCluster)
            # Keys of every slot work from one URL: the client follows the slot map.
            for n in range(20):
                client.set(f"rllm-test:detect:{n}", n)
            got = [client.get(f"rllm-test:detect:{n}") for n in range(20)]
            assert got == [str(n) for n in range(20)]
        finally:
            client.close()


def test_a_url_that_contradicts_the_server_says_which(
    redis_cluster: Cluster, redis_url: str  # noqa: F811
) -> None:
    with pytest.raises(ConfigError, match="belongs to a Redis Cluster; drop cluster=false"):
        open_redis(parse_redis_url(redis_cluster.url() + "?cluster=false", setting="X"))
    with pytest.raises(ConfigError, match="single Redis server, not a cluster node"):
        open_redis(parse_redis_url(redis_url + "?cluster=true", setting="X"))
    import redis

    plain = open_redis(parse_redis_url(redis_url, setting="X"))
    assert type(plain) is redis.Redis
    plain.close()
    with pytest.raises(ConfigError, match="only database 0"):
        open_redis(parse_redis_url(redis_cluster.url().replace("/0", "/3"), setting="X"))


def test_failures_are_named_for_the_operator(redis_tls_cluster: Cluster) -> None:  # noqa: F811
    import redis

    wrong = parse_redis_url(redis_tls_cluster.url().replace(ACL_PASSWORD, "wrong-pw"),
                            setting="RESILIENT_LLM_REDIS_URL")
    with pytest.raises(redis.RedisError) as info:
        open_redis(wrong, socket_timeout=2, socket_connect_timeout=2)
    said = describe_redis_failure(info.value, wrong)
    assert "login refused" in said and "RESILIENT_LLM_REDIS_URL" in said
    assert "wrong-pw" not in said

    no_ca = parse_redis_url(re.sub(r"\?ssl_ca_certs=.*$", "", redis_tls_cluster.url()),
                            setting="RESILIENT_LLM_REDIS_URL")
    with pytest.raises(redis.RedisError) as info:
        open_redis(no_ca, socket_timeout=2, socket_connect_timeout=2)
    assert "TLS failed" in describe_redis_failure(info.value, no_ca)


# --- every script keeps to one slot --------------------------------------------------------------


def test_the_keys_of_one_call_share_a_slot() -> None:
    from redis.crc import key_slot

    from resilient_llm.engine.pressure import TargetKey

    key = TargetKey.of("https://api.example.com:443", "Bearer sk-test", "gpt-4.1")
    slots = {key_slot(k.encode()) for k in fleet_keys(key)}
    assert len(slots) == 1
    ledger = RedisLedger(client=_NoClient())
    assert len({key_slot(k.encode()) for k in ledger._keys("run:order-1|send|abc")}) == 1


class _NoClient:
    """A stand-in client that only registers scripts (the slot test sends nothing)."""

    def register_script(self, source: str) -> object:
        return object()


# --- the fleet on a cluster, end to end ---------------------------------------------------------


def _worker(base_url: str, key: str, redis: str, **options: Any) -> dict[str, Any]:
    cfg = {"base_url": base_url, "api_key": key, "redis_url": redis, "client": "resilient",
           "threads": 2, "calls": 50, "duration": 30.0, "deadline": 10.0}
    cfg.update(options)
    return cfg


def _fleet_run(redis: str, key: str) -> tuple[list[dict[str, Any]], float]:
    provider = FaultProvider(rate_limit_rps=100.0, tokens_per_minute=2_000_000,
                             service_time=0.02)
    with provider.serve() as server:
        _, results = run_fleet([_worker(server.openai_base_url, key, redis)] * 4)
    log = provider.requests
    return results, sum(1 for e in log if e.status == 429) / max(1, len(log))


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls-acl"])
def test_four_workers_on_one_cluster_node_url(
    tls: bool, request: pytest.FixtureRequest, redis_url: str  # noqa: F811
) -> None:
    cluster: Cluster = request.getfixturevalue("redis_tls_cluster" if tls else "redis_cluster")
    results, share = _fleet_run(cluster.url(cluster.ports[1]), f"sk-cluster-{tls}")
    assert sum(len(r["latencies"]) for r in results) == 400
    assert all(not r["errors"] for r in results), [r["errors"] for r in results]
    redis_warnings = [w for r in results for w in r["warnings"] if "Redis" in w]
    assert not redis_warnings
    assert all(r["stats"]["errors"] == 0 and r["stats"]["round_trips"] > 0 for r in results)
    assert cluster.keys("rllm:v1:*"), "the fleet wrote nothing to the cluster"
    if not tls:  # the same run through one redis-server: the cluster paces as well
        _, single_share = _fleet_run(redis_url, f"sk-single-{tls}")
        assert share <= single_share + 0.02, (share, single_share)  # 2 points: timing noise


def test_the_breaker_scripts_run_on_a_cluster(redis_cluster: Cluster) -> None:  # noqa: F811
    from resilient_llm.engine.classify import Failure, FailureClass
    from resilient_llm.engine.pressure import TargetKey

    link = Link(redis_cluster.url(redis_cluster.ports[2]))
    calls: list[tuple[str, bool]] = []
    original = link.call

    def recording(script: Script[Any], keys: list[str], args: list[Any]) -> Any:
        result = original(script, keys, args)
        calls.append((script.name, result is not None))
        return result

    link.call = recording  # type: ignore[method-assign]
    key = TargetKey.of("https://breaker.test:443", "Bearer sk-brk", "gpt-4.1")
    breaker = FleetBreaker(link, fleet_keys(key)[1],
                           thresholds=Thresholds(break_for=0.05, min_calls=2))
    failure = Failure(kind=FailureClass.SERVER_ERROR, retryable=True, status=500)
    rng = FakeRandom()
    for _ in range(4):
        breaker.record(time.monotonic(), failure, rng)
    deadline = time.monotonic() + 5
    while not breaker.allow(time.monotonic()):  # the fleet's break (0.05-0.075 s) ends
        assert time.monotonic() < deadline
        time.sleep(0.01)
    breaker.record(time.monotonic(), None, rng)
    breaker.state(time.monotonic())
    link.close()
    assert link.up
    used = {name for name, ok in calls if ok}
    assert not [c for c in calls if not c[1]], calls
    assert {"fail", "probe", "result"} <= used, calls


# --- the ledger on a cluster --------------------------------------------------------------------

CHILD = r"""
import json, os, sys, time
from resilient_llm.idempotency.side_effect import run, side_effect

store, log, go, hold = sys.argv[1:5]

@side_effect(store=store, name="send_email", lease=30.0)
def send_email(to: str) -> dict[str, str]:
    with open(log, "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(float(hold))
    return {"message_id": f"msg-{os.getpid()}"}

while not os.path.exists(go):
    time.sleep(0.005)
with run(os.environ["RUN_ID"]):
    print(json.dumps(send_email("a@example.com")), flush=True)
"""


def _spawn(store: str, log: Path, go: Path, run_id: str, hold: float) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESILIENT_LLM_")}
    env.update(PYTHONPATH=str(ROOT / "src"), RUN_ID=run_id)
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, store, str(log), str(go), str(hold)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls-acl"])
def test_two_processes_run_a_side_effect_once_on_a_cluster(
    tls: bool, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    cluster: Cluster = request.getfixturevalue("redis_tls_cluster" if tls else "redis_cluster")
    log, go = tmp_path / "sent.log", tmp_path / "go"
    run_id = f"order-{os.urandom(4).hex()}"
    before = set(cluster.keys("resilient_llm:idem:*"))
    children = [_spawn(cluster.url(port), log, go, run_id, 0.3) for port in cluster.ports[:2]]
    go.touch()
    outputs = []
    for child in children:
        out, err = child.communicate(timeout=60)
        assert child.returncode == 0, err
        outputs.append(json.loads(out))
    assert len(log.read_text().splitlines()) == 1
    assert outputs[0] == outputs[1]
    assert set(cluster.keys("resilient_llm:idem:*")) - before  # the record is on the cluster


def test_a_failover_during_the_body_leaves_one_execution(
    fresh_cluster: Cluster,  # noqa: F811
) -> None:
    """The master holding the key dies mid-body; its replica takes over; nobody runs twice."""
    ledger = RedisLedger(fresh_cluster.url(), socket_timeout=1.0)
    executions: list[int] = []
    started = threading.Event()
    run_id = "order-failover"

    @side_effect(store=ledger, name="charge")
    def charge(amount: int) -> str:
        executions.append(amount)
        started.set()
        master = fresh_cluster.master_of(next(iter(ledger_keys)))
        fresh_cluster.kill(master)
        fresh_cluster.wait_failover(master)
        return f"charged {amount}"

    ledger_keys: list[str] = []
    original = ledger._keys

    def keys(key: str) -> list[str]:
        made = original(key)
        ledger_keys[:] = made
        return made

    ledger._keys = keys  # type: ignore[method-assign]
    with run(run_id):
        first = _settle(lambda: charge(5))
    assert started.is_set() and executions == [5]
    # Another worker (a fresh ledger on a surviving node) replays instead of charging again.
    survivor = next(iter(fresh_cluster.procs))
    other = RedisLedger(fresh_cluster.url(survivor), socket_timeout=1.0)

    @side_effect(store=other, name="charge")
    def charge_again(amount: int) -> str:
        executions.append(amount)
        return "charged twice"

    with run(run_id):
        second = _settle(lambda: charge_again(5))
    assert executions == [5]
    # Right after a failover, under load, the cluster may still refuse the second worker for
    # longer than its socket timeout: it then fails closed (and runs nothing), also honest.
    assert first == "charged 5" and second in ("charged 5", "outcome unknown",
                                               "store unavailable")
    ledger.close()
    other.close()


def _settle(call: Any) -> str:
    """The call's result, or what the ledger honestly says when it cannot give one."""
    from resilient_llm import IdempotencyOutcomeUnknown, IdempotencyStoreUnavailable

    try:
        return str(call())
    except IdempotencyOutcomeUnknown:
        return "outcome unknown"
    except IdempotencyStoreUnavailable:
        return "store unavailable"


def test_an_unreachable_cluster_store_fails_closed_and_says_why(caplog: Any) -> None:
    ledger = RedisLedger("redis://app:pw-not-shown@127.0.0.1:1/0", socket_timeout=0.2)
    ran: list[int] = []

    @side_effect(store=ledger, name="send")
    def send() -> None:
        ran.append(1)

    with caplog.at_level(logging.DEBUG), run("order-down"), \
            pytest.raises(IdempotencyStoreUnavailable, match="unreachable") as info:
        send()
    assert ran == []
    assert "pw-not-shown" not in str(info.value) and "pw-not-shown" not in caplog.text


def test_a_failover_under_load_costs_the_fleet_no_call(
    fresh_cluster: Cluster,  # noqa: F811
) -> None:
    """The master of the credential's slot dies mid-run: the workers pace locally while the
    slot moves, rejoin on the promoted replica, and every call succeeds."""
    from urllib.parse import urlsplit

    from resilient_llm.engine.pressure import TargetKey

    provider = FaultProvider(rate_limit_rps=100.0, tokens_per_minute=2_000_000,
                             service_time=0.02)
    api_key = "sk-failover"
    with provider.serve() as server:
        url = urlsplit(server.openai_base_url)
        credential = TargetKey.of(f"{url.scheme}://{url.hostname}:{url.port}",
                                  f"Bearer {api_key}", None).credential
        master = fresh_cluster.master_of(f"rllm:v1:{{{credential}}}:probe")
        survivor = next(p for p in fresh_cluster.ports if p != master)

        def kill_later(start: float) -> None:
            def go() -> None:
                time.sleep(max(0.0, start + 1.0 - time.monotonic()))
                fresh_cluster.kill(master)

            threading.Thread(target=go, daemon=True).start()

        cfg = _worker(server.openai_base_url, api_key, fresh_cluster.url(survivor),
                      calls=None, duration=4.0, threads=2)
        _, results = run_fleet([cfg] * 4, on_start=kill_later)
    assert all(not r["errors"] for r in results), [r["errors"] for r in results]
    assert all(r["late"] == 0 for r in results)
    assert sum(len(r["latencies"]) for r in results) > 100
    # Each worker said once what happened, in words an operator acts on.
    for r in results:
        said = [w for w in r["warnings"] if "Redis at" in w]
        assert len(said) <= 1, said
        assert all("unreachable" in w or "no answer" in w or "cluster" in w for w in said)
