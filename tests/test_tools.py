"""Deadline-aware tools: the limit is the caller's remaining time minus a reserve."""

from __future__ import annotations

import anyio
import pytest
from trio.testing import MockClock  # type: ignore[import-untyped, unused-ignore]

from resilient_llm import DeadlineExceeded, _clock, deadline, remaining
from resilient_llm.context import deadline as _deadline
from resilient_llm.context.tools import deadline_headers, tool, tool_limit
from resilient_llm.idempotency.side_effect import side_effect
from resilient_llm.stores import MemoryLedger
from resilient_llm.testing._fake_clock import FakeClock


@pytest.fixture
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """Deadlines measured on a FakeClock: time moves only when a test advances it."""
    clock = FakeClock()
    monkeypatch.setattr(_deadline, "SYSTEM_CLOCK", clock)
    monkeypatch.setattr(_clock, "SYSTEM_CLOCK", clock)
    return clock


class LoopClock:
    """The event loop's clock (trio's MockClock in these tests) as resilient-llm's clock."""

    def now(self) -> float:
        return anyio.current_time()

    def sleep(self, seconds: float) -> None:
        raise AssertionError("no blocking sleep inside the event loop")

    async def asleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


@pytest.fixture
def virtual_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Deadline scopes measured on the loop's (mock) clock, so limits are exact."""
    clock = LoopClock()
    monkeypatch.setattr(_deadline, "SYSTEM_CLOCK", clock)
    monkeypatch.setattr(_clock, "SYSTEM_CLOCK", clock)


# --- the rule, as a pure function ----------------------------------------------------------------


def test_tool_limit_is_remaining_minus_reserve() -> None:
    assert tool_limit(5.0, reserve=1.0) == 4.0
    assert tool_limit(5.0, reserve=0.0) == 5.0
    assert tool_limit(None, reserve=1.0) is None
    assert tool_limit(None, reserve=1.0, timeout=3.0) == 3.0
    assert tool_limit(5.0, reserve=1.0, timeout=2.0) == 2.0
    assert tool_limit(5.0, reserve=1.0, timeout=9.0) == 4.0
    assert tool_limit(0.5, reserve=1.0) == -0.5  # not started


# --- sync tools on the fake clock ----------------------------------------------------------------


def test_sync_tool_with_5s_left_and_1s_reserve_is_given_4s(fake_clock: FakeClock) -> None:
    seen: list[float | None] = []

    @tool(reserve=1.0)
    def lookup() -> str:
        seen.append(remaining())
        return "ok"

    @tool(reserve=1.0)
    def http_tool() -> dict[str, str]:
        return deadline_headers()

    with deadline(5):
        assert lookup() == "ok"
        assert http_tool() == {"Request-Timeout": "4.000"}
    # remaining() without a clock argument reads the real clock too: microseconds of drift.
    assert seen == [pytest.approx(4.0, abs=1e-3)]


def test_agent_deadline_never_fires_while_tool_is_inside_its_limit(fake_clock: FakeClock) -> None:
    @tool(reserve=1.0)
    def slow_tool() -> float | None:
        fake_clock.advance(3.9)  # the tool works for 3.9 s of its 4 s
        return remaining()

    with deadline(5):
        tool_left = slow_tool()
        agent_left = remaining()
    assert tool_left == pytest.approx(0.1, abs=1e-3)
    # The tool's limit ends `reserve` seconds before the agent's deadline, always.
    assert agent_left == pytest.approx(1.1, abs=1e-3)
    assert agent_left is not None and agent_left > 0


def test_tool_reserve_defaults_to_policy(
    fake_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESILIENT_LLM_TOOL_RESERVE", "2")

    @tool
    def lookup() -> float | None:
        return remaining()

    with deadline(5):
        assert lookup() == pytest.approx(3.0, abs=1e-3)


def test_tool_without_time_left_is_not_started(fake_clock: FakeClock) -> None:
    calls = []

    @tool(reserve=1.0)
    def lookup() -> None:
        calls.append(1)

    with deadline(5):
        fake_clock.advance(4.5)
        with pytest.raises(DeadlineExceeded, match="was not started"):
            lookup()
    assert calls == []


def test_tool_without_deadline_is_unbounded_unless_it_has_a_timeout(fake_clock: FakeClock) -> None:
    @tool
    def free() -> float | None:
        return remaining()

    @tool(timeout=3)
    def capped() -> float | None:
        return remaining()

    assert free() is None
    assert capped() == pytest.approx(3.0, abs=1e-3)
    with deadline(10):
        assert capped() == pytest.approx(3.0, abs=1e-3)


def test_sync_tool_is_cooperative_and_keeps_its_result(fake_clock: FakeClock) -> None:
    @tool(reserve=1.0)
    def overrun() -> str:
        fake_clock.advance(4.5)  # ignores its limit; Python cannot interrupt it
        return "done"

    with deadline(5):
        assert overrun() == "done"


def test_tool_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        tool(reserve=-1)
    with pytest.raises(ValueError):
        tool(timeout=0)


# --- async tools ---------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", [("trio", {"clock": MockClock(autojump_threshold=0)})])
async def test_async_tool_is_cancelled_at_its_limit_before_agent_deadline(
    anyio_backend: object, virtual_time: None
) -> None:
    @tool(reserve=1.0)
    async def hangs() -> str:
        await anyio.sleep(60)
        return "never"

    start = anyio.current_time()
    async with deadline(5):
        with pytest.raises(DeadlineExceeded, match="exceeded its limit of 4"):
            await hangs()
        stopped = anyio.current_time() - start
        # The agent still has its reserve to report the failure; its deadline has not fired.
        await anyio.sleep(0.9)
        after = anyio.current_time() - start
    assert stopped == pytest.approx(4.0, abs=1e-9)
    assert after == pytest.approx(4.9, abs=1e-9)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", [("trio", {"clock": MockClock(autojump_threshold=0)})])
async def test_async_tool_inside_its_limit_is_never_cut_by_the_agent(
    anyio_backend: object, virtual_time: None
) -> None:
    @tool(reserve=1.0)
    async def takes_3_9s() -> float | None:
        left = remaining()
        await anyio.sleep(3.9)
        return left

    async with deadline(5):
        given = await takes_3_9s()
        headers = deadline_headers()
    assert given == pytest.approx(4.0, abs=1e-3)  # read through the real clock: drift
    assert headers == {"Request-Timeout": "1.100"}


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_async_tool_is_cancelled_on_asyncio(anyio_backend: object) -> None:
    @tool(reserve=0.2)
    async def hangs() -> None:
        await anyio.Event().wait()

    async with deadline(0.3):
        with pytest.raises(DeadlineExceeded):
            await hangs()


# --- headers -------------------------------------------------------------------------------------


def test_deadline_headers(fake_clock: FakeClock) -> None:
    assert deadline_headers() == {}

    @tool(reserve=1.0)
    def http_tool() -> dict[str, str]:
        fake_clock.advance(0.0004)
        return deadline_headers(reserve=0.5)

    with deadline(5):
        assert deadline_headers() == {"Request-Timeout": "5.000"}
        # Rounded down to the millisecond: the server never thinks it has more than it does.
        assert http_tool() == {"Request-Timeout": "3.499"}


def test_deadline_headers_carry_the_idempotency_key(fake_clock: FakeClock) -> None:
    ledger = MemoryLedger(clock=fake_clock)

    @side_effect(store=ledger, reserve=1.0)
    def charge(order: str) -> dict[str, str]:
        return deadline_headers()

    with deadline(5):
        headers = charge("o-1")
        key = charge.key_for("o-1")
    assert headers == {"Request-Timeout": "4.000", "Idempotency-Key": f'"{key}"'}


def test_side_effect_runs_under_the_tool_limit(fake_clock: FakeClock) -> None:
    ledger = MemoryLedger(clock=fake_clock)

    @side_effect(store=ledger, reserve=1.0)
    def send(to: str) -> float | None:
        return remaining()

    with deadline(5):
        assert send("a@example.com") == pytest.approx(4.0, abs=1e-3)


def test_resilient_tool_reserve_in_a_block_is_the_reserve_of_the_tools_inside() -> None:
    """A ``with`` block has no function to make a tool: ``tool_reserve`` applies to the tools
    called inside, and ``tool=True`` is an error rather than nothing."""
    from resilient_llm import ConfigError, resilient

    @tool
    def inner() -> float | None:
        return remaining()

    @resilient(tool_reserve=3)
    def as_tool() -> tuple[float | None, float | None]:
        return inner(), remaining()

    with deadline(10):
        assert inner() == pytest.approx(9.0, abs=0.05)  # the policy's reserve: 1 s
        with resilient(tool_reserve=3):
            assert inner() == pytest.approx(7.0, abs=0.05)
        assert as_tool() == pytest.approx((6.0, 7.0), abs=0.05)  # decorated: itself a tool
        with pytest.raises(TypeError, match="a with block has no function"), \
                resilient(tool=True):
            pass

    async def main() -> None:
        with deadline(10):
            async with resilient(tool_reserve=4):
                assert inner() == pytest.approx(6.0, abs=0.05)
            with pytest.raises(TypeError, match="a with block has no function"):
                async with resilient(tool=True):
                    pass

    anyio.run(main)
    with pytest.raises(ConfigError, match="tool_reserve"):
        resilient(tool_reserve=-1)
