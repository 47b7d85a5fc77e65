"""Pressure control over real loopback HTTP with the official SDKs: symptoms of the pressure
issue reproduced against the fault server, and shown gone.

Each test takes real (short) time: it proves wall-clock behaviour the simulator models.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import anthropic
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from resilient_llm import Policy, outcome
from resilient_llm.anthropic import Anthropic
from resilient_llm.openai import OpenAI
from resilient_llm.testing import Fault, FaultProvider, FaultServer

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]

pytestmark = pytest.mark.slow


def _from_threads(threads: int, calls: int, call: Callable[[], None]) -> None:
    """Make ``calls`` calls one after another in each of ``threads`` threads at once."""
    def caller() -> None:
        for _ in range(calls):
            call()

    workers = [threading.Thread(target=caller) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)


@pytest.fixture
def provider() -> FaultProvider:
    return FaultProvider()


@pytest.fixture
def server(provider: FaultProvider) -> Iterator[FaultServer]:
    with provider.serve() as running:
        yield running


@pytest.mark.parametrize("fault", [
    Fault.status(429, headers={"retry-after": "1"}),
    Fault.status(503),
])
def test_one_transient_fault_under_a_two_second_deadline_is_retried(
    provider: FaultProvider, server: FaultServer, monkeypatch: pytest.MonkeyPatch,
    fault: Fault,
) -> None:
    """Symptom 1: the call used to raise DeadlineExceeded after one attempt in ~0 s."""
    monkeypatch.setenv("RESILIENT_LLM_DEADLINE", "2")
    for _ in range(2):  # the second call runs on the state the first one left
        provider.script(fault, Fault.ok(text="done"))
        with OpenAI(base_url=server.openai_base_url, api_key="sk-test") as client:
            start = time.monotonic()
            answer = client.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
            took = time.monotonic() - start
        assert answer.choices[0].message.content == "done"
        assert took < 2.0
        assert [a.status for a in outcome(answer).attempts][-1] == 200
    official = openai.OpenAI(base_url=server.openai_base_url, api_key="sk-test", max_retries=2)
    provider.script(fault, Fault.ok(text="done"))
    with official:
        assert official.chat.completions.create(
            model="gpt-4.1", messages=MESSAGES).choices[0].message.content == "done"


def test_one_anthropic_529_under_a_two_second_deadline_is_retried(
    provider: FaultProvider, server: FaultServer,
) -> None:
    provider.script(Fault.status(529), Fault.ok(text="done"))
    with Anthropic(base_url=server.anthropic_base_url, api_key="sk-ant-test",
                   policy=Policy(deadline=2)) as client:
        start = time.monotonic()
        message = client.messages.create(model="claude-test", max_tokens=16,
                                         messages=[{"role": "user", "content": "hello"}])
        assert time.monotonic() - start < 2.0
    block = message.content[0]
    assert isinstance(block, anthropic.types.TextBlock) and block.text == "done"


def test_an_idle_provider_does_not_look_saturated_to_batch_calls(
    provider: FaultProvider, server: FaultServer,
) -> None:
    """Symptom 3: the third batch call used to go to the fallback with reason ``saturated``."""
    policy = Policy(priority="batch", fallbacks={"gpt-4.1": ("gpt-4.1-mini",)}, deadline=10)
    with OpenAI(base_url=server.openai_base_url, api_key="sk-test", policy=policy) as client:
        for _ in range(8):
            answer = client.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
            assert outcome(answer).served_by == "gpt-4.1"
    assert all(r.model == "gpt-4.1" for r in provider.requests)


def test_one_absurd_rate_limit_header_does_not_block_the_target(
    provider: FaultProvider, server: FaultServer,
) -> None:
    """Symptom 5: one response with remaining 0 and a reset of 99999999h used to fail the next
    19 of 20 calls in ~1 ms."""
    absurd = {"x-ratelimit-limit-tokens": "1000000", "x-ratelimit-remaining-tokens": "0",
              "x-ratelimit-reset-tokens": "99999999h", "x-ratelimit-limit-requests": "1000",
              "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "99999999h",
              "retry-after": "0"}
    provider.script(Fault.status(429, headers=absurd))
    with OpenAI(base_url=server.openai_base_url, api_key="sk-test",
                policy=Policy(deadline=5)) as client:
        start = time.monotonic()
        for _ in range(5):
            answer = client.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
            assert answer.choices
        assert time.monotonic() - start < 5.0


def test_a_recovered_provider_is_served_again_and_nobody_waits_on_the_down_primary(
    provider: FaultProvider, server: FaultServer,
) -> None:
    """Symptom 2: with a fallback ready, calls during an outage used to wait ~2 s each on the
    dead primary's pacer, and ~2 s each after it recovered (paced at 0.5 requests/s)."""
    policy = Policy(fallbacks={"gpt-4.1": ("gpt-4.1-mini",)}, deadline=10)
    served: list[tuple[float, str | None, float]] = []
    with OpenAI(base_url=server.openai_base_url, api_key="sk-test", policy=policy) as client:
        start = time.monotonic()
        provider.set_default(Fault.status(503), model="gpt-4.1")  # the outage
        while (now := time.monotonic() - start) < 10.0:
            if now >= 1.5:
                provider.set_default(Fault.ok(), model="gpt-4.1")  # recovered
            began = time.monotonic()
            answer = client.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
            result = outcome(answer)
            # what the call spent in the client: queued for admission, backing off
            held = result.queue_wait + sum(a.waited_before for a in result.attempts)
            served.append((began - start, result.served_by, held))
            time.sleep(0.2)
    assert all(held <= 0.05 for _, _, held in served)  # nobody waits on the down primary
    # Within one break of the breaker (5–7.5 s) after the outage, the primary serves again,
    # and every later call goes to it at once.
    back = [at for at, by, _ in served if by == "gpt-4.1" and at >= 1.5]
    assert back and back[0] <= 1.5 + 7.5 + 0.5
    assert all(by == "gpt-4.1" for at, by, _ in served if at > back[0])


def test_quantized_limits_with_misleading_headers_are_met_by_pacing() -> None:
    """Symptom 4: headers describe 3000 requests a minute, the provider enforces 50 a second
    with a burst of 5. Calls used to see 9–13 % 429s throughout; after the first 429s the
    headers' burst is not believed and the pacer holds the rate."""
    import concurrent.futures

    provider = FaultProvider(rate_limit_rps=50, rate_limit_burst=5, advertised_rpm=3000)
    with provider.serve() as server, OpenAI(base_url=server.openai_base_url,
                                            api_key="sk-test",
                                            policy=Policy(deadline=30)) as client:
        start = time.monotonic()

        failed: list[openai.RateLimitError] = []

        def work() -> int:
            done = 0
            while time.monotonic() - start < 8.0:
                try:
                    client.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
                except openai.RateLimitError as exc:  # four 429s in a row: the attempt cap
                    failed.append(exc)
                else:
                    done += 1
            return done

        with concurrent.futures.ThreadPoolExecutor(64) as pool:
            done = sum(pool.map(lambda _: work(), range(64)))
    # A call fails only when each of its attempts met a 429 (the official client: nearly all).
    assert len(failed) <= 0.01 * (done + len(failed)), f"{len(failed)} of {done} calls failed"
    late = [r for r in provider.requests if r.started_at - start >= 3.0]
    throttled = sum(r.status == 429 for r in late)
    # The symptom was 9–13 % throughout (the official client: nearly all); 8 s of wall time
    # on a shared machine is a short window, the simulator asserts <= 1 % after 10 s.
    assert throttled <= 0.08 * len(late), f"{throttled} of {len(late)} late attempts were 429s"
    # Pacing must not collapse the rate (the simulator holds goodput >= 0.9 R over 20 s of
    # virtual time; 8 s of wall time on a shared machine includes the learning).
    assert done >= 0.4 * 50 * 8


def test_the_demos_brownout_is_served_in_full_within_the_deadline(
    provider: FaultProvider, server: FaultServer
) -> None:
    """The README's main job, resilient half: 40 calls, 10 at a time, a 3 s deadline, a
    primary in a brownout (429 bursts with Retry-After 1, 503s, 6 s answers, cut streams, hung
    requests) and a healthy fallback. A call that queued behind slots held by hung attempts
    used to wait until 50 ms before its deadline and fail instead of moving to the fallback."""
    from concurrent.futures import ThreadPoolExecutor

    from resilient_llm._demo import FALLBACK, PRIMARY, _resilient_call, brownout

    provider.set_default(Fault.ok(delay=0.05), model=FALLBACK)
    provider.script(*brownout(7, 240), model=PRIMARY)
    policy = Policy(deadline=3.0, fallbacks={PRIMARY: [FALLBACK]})
    with OpenAI(base_url=server.openai_base_url, api_key="sk-test", policy=policy) as client:
        call = _resilient_call(client)

        def timed(index: int) -> tuple[float, BaseException | None]:
            started = time.monotonic()
            try:
                call(index)
            except Exception as exc:  # every failure is reported below
                return time.monotonic() - started, exc
            return time.monotonic() - started, None

        with ThreadPoolExecutor(max_workers=10) as pool:
            results = list(pool.map(timed, range(40)))
    failures = [repr(error) for _, error in results if error is not None]
    assert failures == []
    assert max(seconds for seconds, _ in results) <= 3.0 + 0.3


def test_overload_answers_at_random_do_not_hold_calls_in_the_client(
    provider: FaultProvider, server: FaultServer,
) -> None:
    """Anthropic answers 529 to a share of requests whatever the load (an overloaded pool
    others share). Cutting the concurrency limit for each, as for a provider full up, held the
    caller's own requests back until its calls ran out of time: 30 % refused at random, 20
    calls/s, a 2 s deadline, served 72 % of the calls (the official client: 92 %). A refusal
    of a request sent with no more in flight than the provider just served cuts nothing:
    calls are not held in the client (only until the first answers, at most one round trip)."""
    ok, refused = Fault.ok(text="done", delay=0.1), Fault.status(529)
    provider.script(*([ok, ok, ok, refused] * 80))
    waits: list[float] = []
    failures: list[anthropic.APIStatusError] = []
    with Anthropic(base_url=server.anthropic_base_url, api_key="sk-ant-test",
                   policy=Policy(deadline=5)) as client:
        def call() -> None:
            try:
                message = client.messages.create(
                    model="claude-test", max_tokens=16,
                    messages=[{"role": "user", "content": "hello"}])
            except anthropic.APIStatusError as error:  # four 529s in a row: the provider's
                failures.append(error)
            else:
                waits.append(outcome(message).queue_wait)

        _from_threads(8, 6, call)
    assert len(waits) + len(failures) == 48
    assert all(error.status_code == 529 for error in failures)
    assert len(failures) <= 2
    held = [wait for wait in waits if wait > 0.05]
    # At most the first wave (a call per thread) waits, and for one round trip at most: a
    # limit the first refusals engaged lets go once the first answers came.
    assert len(held) <= 8 and max(waits) < 0.3, f"calls waited in the client: {held}"


def test_429s_a_provider_gives_at_random_are_retried_not_paced(
    provider: FaultProvider, server: FaultServer,
) -> None:
    """A provider refuses one request in ten with ``429`` and ``Retry-After: 1`` whatever the
    rate (a quota a neighbour spends). Read as a rate limit, each 429 cut the send rate and
    the concurrency limit, and the calls queued in the client until their deadline: at 20
    calls/s with a 2 s deadline, 34 % were served (the official client, retrying the refused
    ones, 99 %). Below a quarter of the answers, a 429 is retried as the official client
    retries it: every call is served and none waits in the client for admission."""
    ok, refused = Fault.ok(text="done", delay=0.1), Fault.status(429, headers={"retry-after": "1"})
    provider.script(*([ok] * 9 + [refused]) * 12)
    waits: list[float] = []
    failures: list[Exception] = []
    with OpenAI(base_url=server.openai_base_url, api_key="sk-test",
                policy=Policy(deadline=5)) as client:
        def call() -> None:
            try:
                completion = client.chat.completions.create(model="gpt-test",
                                                            messages=MESSAGES)
            except openai.APIError as error:
                failures.append(error)
            else:
                waits.append(outcome(completion).queue_wait)

        _from_threads(8, 12, call)
    assert failures == []
    assert len(waits) == 96
    held = [wait for wait in waits if wait > 0.05]
    assert len(held) <= 2, f"calls waited in the client: {held}"
