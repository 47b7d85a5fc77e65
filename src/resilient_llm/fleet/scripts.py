"""The fleet's Lua scripts: where they live, the keys they touch, and what they answer.

The scripts are package resources (``lua/*.lua``), read when the first Redis link connects;
every script but ``release`` is prefixed by ``lua/prelude.lua``, whose constants are filled
from :mod:`.tuning`. Each :class:`Script` decodes its raw reply into a named tuple, so no
caller reads a reply by position.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from string import Template
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

from . import tuning

if TYPE_CHECKING:
    from ..engine.pressure import TargetKey

__all__ = [
    "ACQUIRE",
    "FAIL",
    "OPEN",
    "PROBE",
    "RELEASE",
    "RESULT",
    "SCRIPTS",
    "STATE",
    "THROTTLE",
    "BreakerView",
    "Cut",
    "Grant",
    "ProbeOutcome",
    "ProbeVerdict",
    "Released",
    "Script",
    "fleet_keys",
]

R = TypeVar("R")


def fleet_keys(key: TargetKey) -> tuple[str, str, str]:
    """``rllm:v1:{<credential hash>}:<target id>:{rate,brk,who}`` for one target.

    The credential hash is the Redis Cluster hash tag: a credential's targets share a slot, so
    one script may touch all three keys. The target id hashes the endpoint and the model (the
    rate hash also stores both in clear, as ``ep`` and ``md``, for operators).
    """
    target = hashlib.sha256(f"{key.endpoint}|{key.model or '-'}".encode()).hexdigest()[:12]
    base = f"rllm:v1:{{{key.credential}}}:{target}"
    return f"{base}:rate", f"{base}:brk", f"{base}:who"


# --- replies -------------------------------------------------------------------------------------


class Grant(NamedTuple):
    """``acquire``: a lease of ``granted`` permits (or, at 0, how long to ``wait``) and the fleet's
    view. Permit ``j`` may be used from ``first + j·spacing`` and is void after ``void_first +
    j·void_spacing + tau`` (seconds after the server's now); ``rate`` is ``-1`` while unpaced.
    ``refusing``: the fleet's 429s are, with confidence, more than a quarter of its answers
    (``engine.refusals.over_share``); ``since_cut``: seconds since a 429 last cut the
    fleet's rate (``-1``: never); ``acquitted``: seconds since a trial of such a cut found the
    fleet's 429s refused at any rate and undid it (``-1``: never)."""

    granted: int
    first: float
    spacing: float
    tau: float
    rate: float
    active: int
    wait: float
    open_left: float
    failures: float
    tokens_paced: bool
    void_first: float
    void_spacing: float
    refusing: bool
    since_cut: float
    acquitted: float


class Cut(NamedTuple):
    """``throttle``: whether this report cut the fleet's rate (at most one per cooldown, and
    only as a rate limit's answer), and the fleet's ``refusing``, ``since_cut`` and
    ``acquitted`` (as in :class:`Grant`)."""

    cut: bool
    rate: float
    refusing: bool
    since_cut: float
    acquitted: float


class BreakerView(NamedTuple):
    """``fail``, ``open`` and ``state``: seconds the fleet's circuit stays open, the fleet's
    weighted failure count, seconds since a worker last reported a success (negative:
    never) and how many answers the workers ever reported."""

    open_left: float
    failures: float | None
    served_ago: float | None = None
    answers: int | None = None


class ProbeVerdict(NamedTuple):
    """``probe``: ``closed`` (go ahead), ``open`` (for ``seconds``), ``held`` (another worker
    probes; ask again within ``seconds``) or ``probe`` (this worker holds the fleet's probe)."""

    verdict: str
    seconds: float


class ProbeOutcome(NamedTuple):
    """``result``: ``closed``, ``open`` or ``ignored`` (this worker no longer held the probe)."""

    verdict: str


class Released(NamedTuple):
    """``release``: whether this worker held the probe it gave back."""

    freed: bool


def _grant(raw: list[Any]) -> Grant:
    return Grant(int(raw[0]), float(raw[1]), float(raw[2]), float(raw[3]), float(raw[4]),
                 int(raw[5]), float(raw[6]), float(raw[7]), float(raw[8]), int(raw[9]) == 1,
                 float(raw[10]), float(raw[11]), int(raw[12]) == 1, float(raw[13]),
                 float(raw[14]))


def _cut(raw: list[Any]) -> Cut:
    return Cut(int(raw[0]) == 1, float(raw[1]), int(raw[2]) == 1, float(raw[3]),
               float(raw[4]))


def _breaker_view(raw: list[Any]) -> BreakerView:
    return BreakerView(float(raw[0]), float(raw[1]) if len(raw) > 1 else None,
                       float(raw[2]) if len(raw) > 2 else None,
                       int(raw[3]) if len(raw) > 3 else None)


def _probe_verdict(raw: list[Any]) -> ProbeVerdict:
    return ProbeVerdict(str(raw[0]), float(raw[1]))


def _probe_outcome(raw: list[Any]) -> ProbeOutcome:
    return ProbeOutcome(str(raw[0]))


def _released(raw: list[Any]) -> Released:
    return Released(int(raw[0]) == 1)


# --- scripts -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Script(Generic[R]):
    """One Lua script: its resource name, whether it uses the prelude, and its reply decoder."""

    name: str
    decode: Callable[[list[Any]], R]
    prelude: bool = True

    def source(self) -> str:
        """The script's Lua, prelude (with the constants filled in) first."""
        body = _read(f"{self.name}.lua")
        return _prelude() + body if self.prelude else body


def _read(name: str) -> str:
    package = __name__.rpartition(".")[0]
    return resources.files(package).joinpath("lua").joinpath(name).read_text(encoding="utf-8")


def _prelude() -> str:
    return Template(_read("prelude.lua")).substitute(
        headroom=tuning.HEADROOM, budget=tuning.BUDGET, tau_max=tuning.TAU_MAX,
        tau_unknown=tuning.TAU_UNKNOWN, cubic_c=tuning.CUBIC_C, cubic_beta=tuning.CUBIC_BETA,
        min_rate=tuning.MIN_RATE, active=tuning.ACTIVE_WINDOW,
        reserve=tuning.INTERACTIVE_RESERVE, burst_seconds=tuning.BURST_SECONDS,
        refusal_weight=tuning.REFUSAL_WEIGHT, refusal_share=tuning.REFUSAL_SHARE,
        refusal_z=tuning.REFUSAL_Z, refusal_least=tuning.REFUSAL_LEAST,
        refusal_memory=tuning.REFUSAL_MEMORY, trial_sends=tuning.TRIAL_SENDS,
        trial_time=tuning.TRIAL_TIME, trial_drop=tuning.TRIAL_DROP,
        trial_stale=tuning.TRIAL_STALE, trial_margin=tuning.TRIAL_MARGIN,
        trial_lag=tuning.TRIAL_LAG, cooldown=tuning.TRIAL_COOLDOWN,
    )


#: KEYS rate, brk, who. Leases permits, learns limits, registers the worker, counts successes.
ACQUIRE = Script("acquire", _grant)
#: KEYS rate. A 429's report: counts the answers, cuts the fleet's rate (CUBIC) when limited.
THROTTLE = Script("throttle", _cut)
#: KEYS brk. A health failure into the fleet's window; trips the fleet's circuit.
FAIL = Script("fail", _breaker_view)
#: KEYS brk. Publishes a circuit this worker's window tripped (and counts the failure that did).
OPEN = Script("open", _breaker_view)
#: KEYS brk. Asks for the fleet's one half-open probe.
PROBE = Script("probe", _probe_verdict)
#: KEYS brk. The probe's outcome: closes or reopens the fleet's circuit.
RESULT = Script("result", _probe_outcome)
#: KEYS brk. Gives back a probe that was never sent.
RELEASE = Script("release", _released, prelude=False)
#: KEYS brk. Reads the fleet's circuit and failure count.
STATE = Script("state", _breaker_view)

SCRIPTS: tuple[Script[Any], ...] = (ACQUIRE, THROTTLE, FAIL, OPEN, PROBE, RESULT, RELEASE, STATE)
