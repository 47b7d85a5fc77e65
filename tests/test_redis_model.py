"""The simulator's in-memory Redis against a real ``redis-server``: same scripts, same replies.

``resilient_llm.testing.sim.redis_model`` runs the fleet's own Lua on virtual time. Here the
same sequences of script calls go to the model and to a real server, and every reply (and
the state left behind) must be identical. The real server's clock cannot be set, so its copy
of each script reads ``TIME`` from a list the test writes before each call (the same
``[seconds, microseconds]`` the model's ``TIME`` answers); nothing else in the scripts changes.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from resilient_llm.engine.pressure import TargetKey
from resilient_llm.engine.refusals import RefusalShare, over_share
from resilient_llm.fleet import fleet_keys, scripts, tuning
from resilient_llm.testing.sim.redis_model import ModelLink, RedisError, RedisModel
from tests.redis_server import redis_url  # noqa: F401

_TIME_KEY = "rllm:test:time"
_EPOCH = 1_780_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = _EPOCH

    def __call__(self) -> float:
        return self.now


class Twin:
    """One script call, made on the model and on the real server at the same instant."""

    def __init__(self, url: str) -> None:
        self.clock = Clock()
        self.model = RedisModel(self.clock)
        self.real = redis.Redis.from_url(url, decode_responses=True)
        clock = f"redis.call('LRANGE', '{_TIME_KEY}', 0, 1)"
        self._real_scripts = {
            s.name: self.real.register_script(s.source().replace("redis.call('TIME')", clock))
            for s in scripts.SCRIPTS
        }

    def run(self, script: scripts.Script[Any], keys: list[str], args: list[Any]) -> Any:
        moment = self.model.command("TIME")
        pipe = self.real.pipeline()
        pipe.delete(_TIME_KEY)
        pipe.rpush(_TIME_KEY, *moment)  # type: ignore[misc]
        pipe.execute()
        ours = self.model.eval(script.source(), keys, args)
        theirs = self._real_scripts[script.name](keys=keys, args=args)
        assert ours == theirs, f"{script.name}{args}: model {ours!r}, redis-server {theirs!r}"
        return script.decode(ours if isinstance(ours, list) else [ours])

    def state(self, key: str) -> Any:
        kind = self.real.type(key)
        if kind == "hash":
            flat = self.model.command("HGETALL", key)
            assert isinstance(flat, list)
            return self.real.hgetall(key), dict(zip(flat[::2], flat[1::2], strict=True))
        if kind == "zset":
            return self.real.zcard(key), self.model.command("ZCARD", key)
        return kind, self.model.command("EXISTS", key)


@pytest.fixture
def twin(redis_url: str) -> Iterator[Twin]:  # noqa: F811
    made = Twin(redis_url)
    yield made
    made.real.close()


def _keys() -> tuple[str, str, str]:
    return fleet_keys(TargetKey.of("http://sim.invalid:80", f"sk-{random.random()}", "m"))


def _acquire(worker: str, keys: tuple[str, str, str], *, want: int = 4, batch: bool = False,
             learned: tuple[str, str, str, str] = ("", "", "", ""),
             remaining: tuple[str, str, str] = ("", "", ""), successes: int = 0,
             demand: float = 0.0, per_call: float = 30.0,
             refused: int = 0) -> list[Any]:
    return [worker, want, f"{per_call:.3f}", "1" if batch else "0", "0.2500", *learned,
            *remaining, successes, "http://sim.invalid:80", "m", "30", int(tuning.IDLE_TTL * 1000),
            f"{demand:.4f}", refused]


def _fail(worker: str, successes: int = 0) -> list[Any]:
    return [worker, "30", 5, "0.5", "5.000", successes, int(tuning.IDLE_TTL * 1000)]


def test_a_random_fleet_conversation_gets_the_same_replies(twin: Twin) -> None:
    """Workers lease, learn limits, throttle, fail, trip, probe and recover, at random steps
    of virtual time: every reply and the hashes left behind are the same on both."""
    rk, bk, _ = keys = _keys()
    rng = random.Random(7)
    workers = [f"w{i}" for i in range(4)]
    seen: set[str] = set()
    for step in range(300):
        twin.clock.now += rng.choice((0.0, 0.001, 0.013, 0.05, 0.2, 0.7, 1.3))
        worker = rng.choice(workers)
        roll = rng.random()
        if roll < 0.45:
            learned = ("47.5", "3000", "", "") if step > 20 else ("", "3000", "", "")
            if rng.random() < 0.2:
                learned = ("40", "5", "4000", "90000")
            remaining = ((str(rng.randint(0, 3000)), "", f"{rng.uniform(0, 2):.3f}")
                         if rng.random() < 0.3 else ("", "", ""))
            grant = twin.run(scripts.ACQUIRE, list(keys), _acquire(
                worker, keys, want=rng.randint(1, 40), batch=rng.random() < 0.3,
                learned=learned, remaining=remaining, successes=rng.randint(0, 3),
                demand=rng.choice((0.0, 5.0, 50.0)),
                refused=rng.choice((0, 0, 1, 2, 39))))
            seen.add("granted" if grant.granted else "wait")
            seen.add("refusing" if grant.refusing else "not refusing")
            seen.add("cut before" if grant.since_cut >= 0 else "never cut")
        elif roll < 0.6:
            cut = twin.run(scripts.THROTTLE, [rk], [f"{tuning.THROTTLE_COOLDOWN:g}",
                                                    int(tuning.IDLE_TTL * 1000),
                                                    rng.choice((0, 1, 29)), rng.choice("012")])
            seen.add("cut" if cut.cut else "no cut")
        elif roll < 0.72:
            view = twin.run(scripts.FAIL, [bk], _fail(worker, rng.randint(0, 2)))
            seen.add("open" if view.open_left > 0 else "closed")
        elif roll < 0.76:
            twin.run(scripts.OPEN, [bk], [worker, "2.500", int(tuning.IDLE_TTL * 1000), "30"])
        elif roll < 0.86:
            verdict = twin.run(scripts.PROBE, [bk], [worker, "6.000", "0.25"])
            seen.add(verdict.verdict)
            if verdict.verdict == "probe" and rng.random() < 0.5:  # else it stays out
                twin.run(scripts.RESULT, [bk], [worker, rng.choice("01"), "3.000"])
        elif roll < 0.9:
            twin.run(scripts.RELEASE, [bk], [worker])
        else:
            twin.run(scripts.STATE, [bk], ["30"])
    for key in keys:
        real, model = twin.state(key)
        assert real == model
    # the conversation went through every branch worth comparing
    assert seen >= {"granted", "wait", "cut", "no cut", "open", "closed", "probe", "held",
                    "refusing", "not refusing", "cut before", "never cut"}


def _report(twin: Twin, keys: tuple[str, str, str], served: int, refused: int,
            limited: str = "0") -> scripts.Cut:
    """0.1 s later, one worker's lease reports ``served`` successes, then its 429s."""
    twin.clock.now += 0.1
    twin.run(scripts.ACQUIRE, list(keys), _acquire(
        "w0", keys, want=served + refused, successes=served, demand=50.0,
        learned=("", "3000", "", "")))
    cut: scripts.Cut = twin.run(scripts.THROTTLE, [keys[0]], [
        f"{tuning.THROTTLE_COOLDOWN:g}", int(tuning.IDLE_TTL * 1000), refused, limited])
    return cut


def test_a_fleet_cuts_trial_gets_the_same_replies(twin: Twin) -> None:
    """A worker's cut tried over the answers reported (20 % refused before it, then the same
    share or none): the trial's counts, its verdict and the acquittal agree on both."""
    for after_refused in (1, 0):
        keys = _keys()
        for _ in range(30):
            _report(twin, keys, 4, 1)
        assert _report(twin, keys, 4, 1, limited="1").cut
        replies = [_report(twin, keys, 3, after_refused) for _ in range(20)]
        assert any(r.acquitted >= 0 for r in replies) is (after_refused == 1)
        real, model = twin.state(keys[0])
        assert real == model


def test_a_quantized_flood_gets_the_same_leases(twin: Twin) -> None:
    """The shape the simulator's fleet cells make: many workers, small leases, throttles."""
    rk, _, _ = keys = _keys()
    rng = random.Random(3)
    for step in range(400):
        twin.clock.now += rng.expovariate(200.0)
        worker = f"p{rng.randrange(64)}"
        if step % 37 == 36:
            twin.run(scripts.THROTTLE, [rk], ["1", int(tuning.IDLE_TTL * 1000), 0, "1"])
            continue
        grant = twin.run(scripts.ACQUIRE, list(keys), _acquire(
            worker, keys, want=rng.randint(1, 3), learned=("", "3000", "", ""),
            demand=rng.uniform(0.5, 4.0)))
        assert grant.granted >= 0 and grant.tau > 0


def test_keys_expire_on_virtual_time() -> None:
    clock = Clock()
    model = RedisModel(clock)
    model.command("HSET", "h", "a", "1")
    assert model.command("PEXPIRE", "h", "1500") == 1
    clock.now += 1.499
    assert model.command("HGET", "h", "a") == "1"
    assert model.command("PTTL", "h") == 1
    clock.now += 0.001
    assert model.command("EXISTS", "h") == 0
    assert model.command("HGETALL", "h") == []
    model.command("HSET", "h", "a", "2")  # a new key: no expiry carried over
    assert model.command("PTTL", "h") == -1
    model.command("HDEL", "h", "a")  # an emptied hash is deleted
    assert model.command("EXISTS", "h") == 0


def test_the_model_refuses_what_redis_refuses() -> None:
    model = RedisModel(Clock())
    model.command("SET", "s", "x")
    with pytest.raises(RedisError, match="WRONGTYPE"):
        model.command("HSET", "s", "a", "1")
    model.command("HSET", "h", "a", "1.5")
    with pytest.raises(RedisError, match="not an integer"):
        model.command("HINCRBY", "h", "a", "1")
    with pytest.raises(RedisError, match="unknown command 'FLUSHALL'"):
        model.command("FLUSHALL")


def test_a_model_link_skips_an_operation_the_call_has_no_time_for() -> None:
    from resilient_llm._policy import Policy
    from resilient_llm.engine.call import end_call, start_call
    from resilient_llm.testing import FakeClock

    clock = FakeClock()
    model = RedisModel(clock.now)
    link = ModelLink(model, worker="w0")
    keys = list(_keys())
    assert link.call(scripts.STATE, keys[1:2], ["30"]) is not None
    _, token = start_call(Policy(deadline=1.0, telemetry=False), target="m", clock=clock)
    try:
        clock.advance(1.0 - tuning.OP_TIMEOUT / 2)
        assert link.call(scripts.STATE, keys[1:2], ["30"]) is None
    finally:
        end_call(token)
    assert model.evals == 1


# --- the fleet's Lua on virtual time: what a 429 changes -------------------------------------


class Fleet:
    """The fleet's scripts on the model, one worker, time set by hand."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.model = RedisModel(self.clock)
        self.link = ModelLink(self.model, worker="w0")
        self.keys = list(_keys())

    def acquire(self, *, learned: tuple[str, str, str, str] = ("", "3000", "", ""),
                successes: int = 0, want: int = 1) -> scripts.Grant:
        grant = self.link.call(scripts.ACQUIRE, self.keys, _acquire(
            "w0", (self.keys[0], self.keys[1], self.keys[2]), want=want, learned=learned,
            successes=successes, demand=50.0))
        assert grant is not None
        return grant

    def throttle(self, *, refused: int = 0, limited: bool = True,
                 shown: bool = False) -> scripts.Cut:
        cut = self.link.call(scripts.THROTTLE, self.keys[:1],
                             [f"{tuning.THROTTLE_COOLDOWN:g}", int(tuning.IDLE_TTL * 1000),
                              refused, "2" if shown else "1" if limited else "0"])
        assert cut is not None
        return cut


def test_the_fleet_judges_its_429s_by_the_rule_each_worker_judges_its_own() -> None:
    """Permits leased and 429s reported: the fleet's verdict is ``over_share`` of its attempts
    (the permits it granted, each decaying the counts as a worker's ``RefusalShare`` decays
    them per answer) and its 429s. 20 % refused never tips it; a burst refused outright does
    from 30 attempts on."""
    rng = random.Random(5)
    for share in (0.0, 0.2, 0.35, 0.6, 1.0):
        fleet, mirror = Fleet(), RefusalShare()
        for _ in range(60):
            granted = fleet.acquire(want=rng.randint(1, 12)).granted
            keep = (1 - mirror.WEIGHT) ** granted
            mirror.answers = mirror.answers * keep + (1 - keep) / mirror.WEIGHT
            mirror.refused *= keep
            refused = sum(rng.random() < share for _ in range(granted))
            mirror.refused += refused
            cut = fleet.throttle(refused=refused, limited=False)
            assert cut.refusing is over_share(mirror.answers, mirror.refused)
            fleet.clock.now += 0.3
        assert cut.refusing is (share > 0.3)
    burst = Fleet()  # refused outright: a limit's answers once there are enough of them
    for _ in range(29):
        burst.acquire()
        assert not burst.throttle(refused=1, limited=False).refusing
    for _ in range(3):  # the 32nd permit: 30 attempts, decayed
        burst.acquire()
    assert burst.throttle(refused=3, limited=False).refusing


def test_an_unpaced_fleet_paces_from_what_the_provider_accepted_after_a_429() -> None:
    """Headers of 3000/min that never say enough to learn a rate: the fleet is unpaced until
    a 429, which with nothing measured yet cuts nothing; once successes were reported, the
    cut paces just under the accepted rate, with a burst of at most 0.1 s of it."""
    fleet = Fleet()
    assert fleet.acquire().rate == -1  # unpaced
    assert not fleet.throttle().cut  # nothing measured: no rate to keep
    for _ in range(20):  # 50 successes/s reported for 2 s
        fleet.clock.now += 0.1
        fleet.acquire(successes=5)
    fleet.clock.now += 1.0
    cut = fleet.throttle()
    assert cut.cut and cut.rate == pytest.approx(tuning.HEADROOM * 50, rel=0.05)
    grant = fleet.acquire()
    assert grant.rate == pytest.approx(cut.rate, rel=0.01)
    assert grant.tau <= tuning.BURST_SECONDS  # not (0.9·3000 − 1)/r = 10 s
    assert grant.rate * grant.tau + 1 <= 0.9 * max(1.0, grant.rate * tuning.BURST_SECONDS) + 1e-3


def test_without_a_header_rate_the_fleet_stays_paced_and_grows() -> None:
    fleet = Fleet()
    for _ in range(10):
        fleet.clock.now += 0.1
        fleet.acquire(successes=5)
    fleet.clock.now += 1.0
    first = fleet.throttle().rate
    rates = []
    for _ in range(4):
        fleet.clock.now += 30.0
        rates.append(fleet.acquire().rate)
    assert first < rates[0] < rates[1] < rates[2] < rates[3]  # never back to unpaced (-1)


def test_a_throttle_shortens_the_lease_window_a_header_rate_allowed() -> None:
    """Headers teach 100/s with a bucket of 100 (τ ≈ 0.94 s); after a 429 the window holds
    at most 0.1 s of the rate, and once CUBIC is back at the headers' rate the throttle is
    forgotten but the headers' burst still is not believed."""
    fleet = Fleet()
    learned = ("100", "100", "", "")
    before = fleet.acquire(learned=learned)
    assert before.tau == pytest.approx((0.9 * 100 - 1) / 95, rel=0.01)
    assert fleet.throttle().cut
    after = fleet.acquire(learned=learned)
    assert after.rate < before.rate and after.tau <= tuning.BURST_SECONDS
    fleet.clock.now += 60.0
    recovered = fleet.acquire(learned=learned)
    assert recovered.rate == pytest.approx(95, rel=0.01)
    assert recovered.tau <= tuning.BURST_SECONDS


def _answered(fleet: Fleet, seconds: float, served: int,
              refused: int) -> scripts.Cut | scripts.Grant:
    """Every 0.1 s for ``seconds``: a permit for each attempt, ``served`` successes and
    ``refused`` 429s reported (a worker reports 429s as they come, successes with a lease)."""
    reply: scripts.Cut | scripts.Grant | None = None
    for _ in range(round(seconds / 0.1)):
        fleet.clock.now += 0.1
        reply = fleet.acquire(successes=served, want=served + refused)
        if refused:
            reply = fleet.throttle(refused=refused, limited=False)
    assert reply is not None
    return reply


def _cut_at_a_fifth_refused() -> Fleet:
    """3 s of 50 answers/s, a fifth of them 429s (under the fleet's quarter), then a worker
    that reads its 429s as a limit's cuts the rate."""
    fleet = Fleet()
    _answered(fleet, 3.0, served=4, refused=1)
    cut = fleet.throttle(refused=1, limited=True)
    assert cut.cut and cut.since_cut == 0.0 and cut.acquitted == -1.0
    return fleet


def test_a_fleet_cut_after_which_the_same_share_is_refused_is_undone() -> None:
    """After the cut the fleet answers 40/s, a quarter of them 429s: a limit the fleet had
    been 10/s above would refuse none at 40/s, so the share is refused at any rate. The trial
    undoes the cut (the fleet is unpaced again, nobody remembers a cut), and for a minute a
    worker's reading of its 429s as a limit's cuts nothing; a share 0.1 above the one found
    does."""
    fleet = _cut_at_a_fifth_refused()
    assert fleet.acquire().rate > 0  # paced at the cut
    cut = _answered(fleet, 0.5 + 1.0, served=3, refused=1)  # the lag, then 40 answers
    assert cut.acquitted >= 0.0 and cut.since_cut == -1.0 and not cut.refusing
    assert fleet.acquire().rate == -1.0  # unpaced, as before the cut
    fleet.clock.now += tuning.THROTTLE_COOLDOWN
    assert not fleet.throttle(refused=1, limited=True).cut
    assert fleet.throttle(refused=1, shown=True).cut  # the headers say the limit is spent
    fleet.clock.now += tuning.REFUSAL_MEMORY
    assert fleet.throttle(refused=1, limited=True).cut  # the acquittal was forgotten


def test_a_fleet_cut_after_which_429s_stop_stands() -> None:
    """The same cut, after which the 40 answers a second are all served: a limit's answers.
    The trial ends without undoing it; the next overshoot cuts again."""
    fleet = _cut_at_a_fifth_refused()
    cut = _answered(fleet, 0.5 + 1.0, served=4, refused=0)
    assert cut.acquitted == -1.0 and cut.since_cut > 0.0
    assert fleet.acquire().rate > 0
    fleet.clock.now += tuning.THROTTLE_COOLDOWN
    assert fleet.throttle(refused=1, limited=True).cut


def test_while_a_fleet_cut_is_tried_no_other_cut_is_made_unless_the_headers_say_so() -> None:
    fleet = _cut_at_a_fifth_refused()
    fleet.clock.now += tuning.THROTTLE_COOLDOWN + 0.1  # the trial has 11 answers: not over
    _answered(fleet, 0.2, served=4, refused=2)
    assert not fleet.throttle(refused=1, limited=True).cut
    assert fleet.throttle(refused=1, shown=True).cut


def test_an_empty_lease_says_when_the_next_permit_fits_not_a_whole_lease() -> None:
    """40/s learned: once the window is spent, a worker asking for 20 permits is told to come
    back when one fits (about 1/38 s), not when 20 would (about 0.5 s): told the latter, every
    worker of a fleet often slept together while permits went unused."""
    fleet = Fleet()
    learned = ("40", "40", "", "")
    while fleet.acquire(learned=learned, want=20).granted:
        pass
    empty = fleet.acquire(learned=learned, want=20)
    assert empty.granted == 0
    assert 0.0 < empty.wait <= 1.5 / (tuning.HEADROOM * 40)


def test_the_fleets_trial_reads_its_answers_as_one_process_reads_its_own() -> None:
    """Random trials set in the rate hash, then read by the script: it ends them when
    ``trial_verdict`` can tell (or after four times ``TRIAL_SENDS`` answers), and undoes the
    cut exactly when the verdict acquits."""
    from resilient_llm.engine.refusals import trial_verdict

    rng = random.Random(11)
    seen = set()
    for _ in range(200):
        fleet = Fleet()
        sent = rng.uniform(20.0, 80.0)
        accepted = rng.uniform(0.3, 0.95) * sent
        rate = rng.uniform(0.3, 0.84) * sent
        answered = rng.randint(tuning.TRIAL_SENDS, 5 * tuning.TRIAL_SENDS)
        if answered / rate > tuning.TRIAL_STALE:
            continue
        refused = rng.randint(0, answered)
        now = fleet.clock.now
        fleet.model.command("HSET", fleet.keys[0], "ts", f"{now - answered / rate:.6f}",
                            "tn", str(answered), "tq", str(refused), "tbs", f"{sent:.6f}",
                            "tba", f"{accepted:.6f}", "lc", f"{now - 1:.6f}",
                            "ct", f"{now - 1:.6f}", "ck", "1", "cw", "40")
        verdict = trial_verdict(float(f"{sent:.6f}"), float(f"{accepted:.6f}"), rate,
                                answered, refused)
        cut = fleet.throttle(refused=0, limited=False)
        ended = fleet.model.command("HGET", fleet.keys[0], "ts") is None
        assert ended is (verdict.apart or answered >= 4 * tuning.TRIAL_SENDS)
        assert (cut.acquitted >= 0) is verdict.acquit
        assert (cut.since_cut == -1.0) is verdict.acquit
        seen.add((verdict.apart, verdict.acquit))
    assert seen == {(False, False), (True, False), (True, True)}
