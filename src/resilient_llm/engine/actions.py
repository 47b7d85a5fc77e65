"""The messages between a :class:`~resilient_llm.engine.plan.Plan` and the driver that runs it.

Actions go from the plan to the driver (``Admit``, ``Return``, ``Raise``; ``Send`` and ``Wait``
are the call's own, in ``engine.call``); replies come back (``Admitted``, ``Refused``,
``Served``, ``Failed``). Plain values: no I/O, no behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._fastinit import fast_frozen_init
from .call import Send, Wait
from .classify import Failure

if TYPE_CHECKING:
    from .pressure import TargetPressure

__all__ = ["Action", "Admit", "Admitted", "Failed", "Raise", "Refused", "Reply", "Return",
           "Served"]


# --- actions (plan → driver) ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Admit:
    """Queue for admission to ``state`` (its pacer and concurrency limit), with ``cost`` as the
    request's token estimate. The uncontended case never gets here: the plan admits it itself."""

    state: TargetPressure
    cost: float


@dataclass(frozen=True, slots=True)
class Return:
    """The request is over: hand ``value`` (the response) back to the caller."""

    value: object


@dataclass(frozen=True, slots=True)
class Raise:
    """The request is over: raise ``error``."""

    error: BaseException


#: What ``Plan.run`` yields: ``Send`` and ``Wait`` are the call's own decisions.
Action = Admit | Send | Wait | Return | Raise


# --- replies (driver → plan) ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Admitted:
    """Admission was granted at this ``pressure`` after ``waited`` seconds in the queue
    (``None``: it never had to wait)."""

    pressure: float
    waited: float | None = None


@dataclass(frozen=True, slots=True)
class Refused:
    """The queue stopped waiting: admission cannot come in time for this call (``reason``:
    ``paced`` when the pacer, ``saturated`` when the concurrency limit holds it)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Served:
    """The attempt produced the response to hand back (a stream: its first output arrived)."""

    response: object


@dataclass(frozen=True, slots=True)
class Failed:
    """The attempt failed as ``failure``. ``last`` is what the caller would see if this were
    the end (an error response to hand back, or an exception to raise); ``error`` is the same
    as an exception, kept as the cause of whatever error ends the call."""

    failure: Failure
    last: object
    error: BaseException


Reply = Admitted | Refused | Served | Failed | None

for _message in (Admit, Return, Raise, Admitted, Refused, Served, Failed):
    fast_frozen_init(_message)  # built on every call: see ``_fastinit``
