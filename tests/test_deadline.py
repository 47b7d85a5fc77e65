"""Deadline scopes: absolute instants that nest by taking the earlier, in sync and async code."""

from __future__ import annotations

import math
from datetime import timedelta

import anyio
import pytest

from resilient_llm import DeadlineExceeded, deadline, remaining
from resilient_llm.context.deadline import current_deadline, to_seconds
from resilient_llm.testing import FakeClock


@pytest.mark.parametrize("bad", [0, -1, math.inf, math.nan, timedelta(0)])
def test_a_deadline_must_be_positive_and_finite(bad: float | timedelta) -> None:
    with pytest.raises(ValueError, match="positive, finite number of seconds"):
        deadline(bad)


@pytest.mark.parametrize("bad", ["10", True, None])
def test_a_deadline_must_be_a_number_or_a_timedelta(bad: object) -> None:
    with pytest.raises(TypeError, match="number of seconds or a timedelta"):
        to_seconds(bad, name="deadline")  # type: ignore[arg-type]


def test_without_a_scope_nothing_is_bounded() -> None:
    assert remaining() is None and current_deadline() is None


def test_nested_scopes_take_the_earlier_instant_and_restore_on_exit() -> None:
    with deadline(timedelta(seconds=10)):
        outer = current_deadline()
        with deadline(60):  # cannot extend the budget
            assert current_deadline() == outer
        with deadline(1):
            inner = current_deadline()
            assert inner is not None and outer is not None and inner < outer
            left = remaining()
            assert left is not None and 0 < left <= 1
        assert current_deadline() == outer
    assert current_deadline() is None


def test_the_deadline_reads_on_an_injected_clock() -> None:
    clock = FakeClock()
    with deadline(5):
        left = remaining(clock=clock)
        assert left is not None and 4 < left <= 5
        at = current_deadline(clock=clock)
        assert at is not None and at == pytest.approx(clock.now() + left, abs=0.01)


def test_a_scope_cannot_be_entered_twice() -> None:
    scope = deadline(1)
    with scope, pytest.raises(RuntimeError, match="cannot be entered twice"), scope:
        pass


def test_the_decorator_starts_the_clock_at_each_call() -> None:
    @deadline(2)
    def budget() -> float | None:
        return remaining()

    first, second = budget(), budget()
    assert first is not None and second is not None and 1.5 < first <= 2 and 1.5 < second <= 2
    assert remaining() is None


@pytest.mark.anyio
async def test_an_async_scope_cancels_the_await_and_raises_deadline_exceeded() -> None:
    with pytest.raises(DeadlineExceeded) as info:
        async with deadline(0.05):
            await anyio.sleep(5)
    assert isinstance(info.value, TimeoutError) and info.value.budget == 0.05


@pytest.mark.anyio
async def test_an_enclosing_anyio_deadline_counts() -> None:
    with anyio.fail_after(1):
        left = remaining()
        assert left is not None and left <= 1
        async with deadline(30):
            inner = remaining()
            assert inner is not None and inner <= 1


def test_sync_code_asks_anyio_nothing_when_trio_is_merely_imported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """httpcore imports trio whenever it is installed: outside any event loop the deadline is
    still read without asking anyio (whose answer there is an exception raised and caught)."""
    import trio  # noqa: F401 - imported, not running

    asked: list[bool] = []

    def effective_deadline() -> float:
        asked.append(True)
        return math.inf

    monkeypatch.setattr(anyio, "current_effective_deadline", effective_deadline)
    assert current_deadline() is None
    with deadline(5):
        left = remaining()
        assert left is not None and 4 < left <= 5
    assert not asked


def test_an_enclosing_deadline_of_a_trio_run_counts() -> None:
    import trio

    async def main() -> float | None:
        with trio.fail_after(1):
            await trio.lowlevel.checkpoint()
            return remaining()

    left = trio.run(main)
    assert left is not None and left <= 1
