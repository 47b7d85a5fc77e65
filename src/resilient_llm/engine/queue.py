"""A request's place in a target's admission queue, without I/O.

The plan decides how long a queued request may wait (``patience``, ``give_up_in``); the
drivers and the simulator ask :meth:`AdmissionQueue.turn`, then sleep or wait to be woken as
it says.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from .._clock import Clock
from .._policy import Priority
from .actions import Admit, Admitted, Refused
from .target import Admission

__all__ = ["HEAD_POLL", "LINE_POLL", "AdmissionQueue"]

#: How often the first waiter in line asks again (seconds), and the others (a safety net: they
#: are woken when they reach the head).
HEAD_POLL = 0.05
LINE_POLL = 1.0


class AdmissionQueue:
    """One request's place in a target's admission queue, without I/O: the drivers and the
    simulator ask :meth:`turn`, then sleep or wait to be woken as it says, and call
    :meth:`leave` if they stop for any other reason (an exception, a cancellation).

    ``patience(admission, since)``: while not admitted, the seconds to sleep before asking
    again (``None``: until woken), or :class:`Refused` to stop waiting; ``give_up_in(since)``:
    seconds until the request stops waiting (``None``: never)."""

    __slots__ = ("_began", "_clock", "_give_up_in", "_patience", "_queued", "state", "waiter")

    def __init__(self, admit: Admit, priority: Priority, clock: Clock, *,
                 patience: Callable[[Admission, float], float | Refused | None],
                 give_up_in: Callable[[float], float | None],
                 since: float = math.inf) -> None:
        self._clock = clock
        self._patience = patience
        self._give_up_in = give_up_in
        self.state = admit.state
        self._began = clock.now()
        self._queued = False
        self.waiter = admit.state.enqueue(priority, admit.cost, since)

    def turn(self) -> Admitted | Refused | float | None:
        """Admitted or :class:`Refused`: the wait is over (a refused request has left the
        queue). A number: sleep that long, then ask again. ``None``: wait until woken by a
        release, at most :meth:`poll` seconds."""
        now = self._clock.now()
        admission = self.state.try_admit(self.waiter, now)
        if admission.granted:
            return Admitted(admission.pressure, now - self._began if self._queued else None)
        self._queued = True
        wait = self._patience(admission, self._began)
        if isinstance(wait, Refused):
            self.leave()
        return wait

    def poll(self, longest: float | None = None) -> float:
        """How long to wait for a wake-up before asking again, at most.

        The first in line asks every ``HEAD_POLL`` seconds: the clock alone can admit it (an
        attempt in flight too long stops holding its slot). The others are woken when they
        reach the head, so they ask every ``LINE_POLL`` seconds only as a safety net; a driver
        whose wake-ups cannot cross threads passes ``longest=HEAD_POLL``. Less when the
        request stops waiting sooner."""
        if longest is None:
            longest = HEAD_POLL if self.state.first_in_line(self.waiter) else LINE_POLL
        give_up_in = self._give_up_in(self._began)
        return longest if give_up_in is None else max(0.0, min(longest, give_up_in))

    def leave(self) -> None:
        """Stop waiting (idempotent)."""
        self.state.cancel(self.waiter)
