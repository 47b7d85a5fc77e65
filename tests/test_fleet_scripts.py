"""The fleet's Lua scripts as package resources, and their replies decoded by name."""

from __future__ import annotations

from importlib import resources

import pytest

from resilient_llm.fleet import scripts, tuning


def test_every_lua_resource_is_a_script_or_the_prelude() -> None:
    lua = resources.files("resilient_llm.fleet").joinpath("lua")
    files = {entry.name for entry in lua.iterdir() if entry.name.endswith(".lua")}
    assert files == {f"{script.name}.lua" for script in scripts.SCRIPTS} | {"prelude.lua"}


@pytest.mark.parametrize("script", scripts.SCRIPTS, ids=lambda s: s.name)
def test_a_script_renders_with_the_tuning_constants(script: scripts.Script[object]) -> None:
    source = script.source()
    assert "$" not in source  # every placeholder filled
    assert "return" in source
    uses_prelude = f"local HEADROOM, BUDGET, TAU_MAX, TAU_UNKNOWN = {tuning.HEADROOM}, " in source
    assert uses_prelude is script.prelude


def test_the_acquire_reply_is_read_by_name() -> None:
    raw = [3, "0.010000", "0.100000", "0.900000", "40.000000", 2, "0.000000", "0.000000",
           "1.500000", 1, "-0.050000", "0.025000", 1, "-1.000000", "2.500000"]
    grant = scripts.ACQUIRE.decode(raw)
    assert grant == scripts.Grant(granted=3, first=0.01, spacing=0.1, tau=0.9, rate=40.0,
                                  active=2, wait=0.0, open_left=0.0, failures=1.5,
                                  tokens_paced=True, void_first=-0.05, void_spacing=0.025,
                                  refusing=True, since_cut=-1.0, acquitted=2.5)


def test_the_breaker_replies_are_read_by_name() -> None:
    assert scripts.FAIL.decode(["0.500000", "3.000000"]) == scripts.BreakerView(0.5, 3.0)
    assert scripts.STATE.decode(["0.000000", "1.500000", "2.250000", 49]) == scripts.BreakerView(
        open_left=0.0, failures=1.5, served_ago=2.25, answers=49)
    assert scripts.OPEN.decode(["0.250000", "5.000000", "-1.000000", 5]) == scripts.BreakerView(
        open_left=0.25, failures=5.0, served_ago=-1.0, answers=5)
    assert scripts.STATE.decode(["0.000000", "0.000000"]).failures == 0.0
    assert scripts.PROBE.decode(["held", "0.250000"]) == scripts.ProbeVerdict("held", 0.25)
    assert scripts.RESULT.decode(["ignored"]).verdict == "ignored"
    assert scripts.RELEASE.decode([1]).freed and not scripts.RELEASE.decode([0]).freed
    assert scripts.THROTTLE.decode([0, "-1", 0, "-1", "-1"]) == scripts.Cut(
        cut=False, rate=-1.0, refusing=False, since_cut=-1.0, acquitted=-1.0)
