"""Backoff: full jitter, floored by server hints, spread after them, widened by pressure."""

from __future__ import annotations

import pytest

from resilient_llm import Failure, FailureClass
from resilient_llm.engine.backoff import backoff_delay
from resilient_llm.testing import FakeRandom

THROTTLE = Failure(FailureClass.RATE_LIMITED, True, status=429)
TRANSIENT = Failure(FailureClass.SERVER_ERROR, True, status=500)


@pytest.mark.parametrize("u", [0.0, 0.5, 0.999])
def test_full_jitter_bounds(u: float) -> None:
    rng = FakeRandom(fixed=u)
    for retry, cap in [(1, 0.25), (2, 0.5), (3, 1.0), (6, 8.0), (40, 8.0)]:
        delay = backoff_delay(retry=retry, failure=TRANSIENT, rng=rng, max_backoff=8.0)
        assert delay == pytest.approx(u * cap)


def test_throttles_use_the_longer_base() -> None:
    rng = FakeRandom(fixed=0.999)
    assert backoff_delay(retry=1, failure=THROTTLE, rng=rng, max_backoff=8) == pytest.approx(
        0.4995)
    assert backoff_delay(retry=2, failure=THROTTLE, rng=rng, max_backoff=8) == pytest.approx(
        1.998)


def test_retry_after_is_a_floor_with_positive_spread() -> None:
    hinted = Failure(FailureClass.RATE_LIMITED, True, status=429, retry_after=30.0)
    low = backoff_delay(retry=1, failure=hinted, rng=FakeRandom(fixed=0.0), max_backoff=8)
    high = backoff_delay(retry=1, failure=hinted, rng=FakeRandom(fixed=0.999), max_backoff=8)
    assert low == 30.0
    assert 32.9 < high < 33.0  # the first retry: a tenth of the hint at most
    later = backoff_delay(retry=2, failure=hinted, rng=FakeRandom(fixed=0.999), max_backoff=8)
    assert 31.9 < later < 32.0  # later ones: up to the window (2 s)


def test_the_first_retry_is_never_slower_than_the_official_sdks() -> None:
    """0.375–0.5 s for a 429 or 529 without a hint (openai and anthropic), exactly the hint
    with one: from a calm target the first retry waits at most 0.5 s, or the hint and a tenth
    of it (whatever the pressure, with a hint)."""
    for u in (0.0, 0.5, 0.999):
        bare = backoff_delay(retry=1, failure=THROTTLE, rng=FakeRandom(fixed=u), max_backoff=8)
        assert bare <= 0.5
        hinted = Failure(FailureClass.RATE_LIMITED, True, status=429, retry_after=1.0)
        delay = backoff_delay(retry=1, failure=hinted, rng=FakeRandom(fixed=u), max_backoff=8,
                              pressure=1.0)
        assert 1.0 <= delay <= 1.1


def test_pacer_floor_acts_like_a_hint() -> None:
    delay = backoff_delay(retry=1, failure=TRANSIENT, rng=FakeRandom(fixed=0.0), max_backoff=8,
                          floor=2.0)
    assert delay == 2.0


def test_pressure_widens_the_window() -> None:
    calm = backoff_delay(retry=2, failure=THROTTLE, rng=FakeRandom(fixed=0.5), max_backoff=8)
    pressed = backoff_delay(retry=2, failure=THROTTLE, rng=FakeRandom(fixed=0.5), max_backoff=8,
                            pressure=1.0)
    assert pressed == pytest.approx(2 * calm)


def test_retry_numbers_start_at_one() -> None:
    with pytest.raises(ValueError, match="start at 1"):
        backoff_delay(retry=0, failure=TRANSIENT, rng=FakeRandom(), max_backoff=8)
