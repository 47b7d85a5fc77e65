"""A call waiting in a target's admission queue, and how it is woken."""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Callable
from typing import Any

from .._policy import Priority

__all__ = ["Waiter"]

_arrivals = itertools.count()


class Waiter:
    """One call waiting for admission; woken when a slot frees (thread- and task-safe).

    A sync caller waits on ``event``. An async caller waits on ``async_event``, which a
    release on its own loop's thread sets at once; a release on another thread goes through
    ``notify`` when the driver could set one up (else the caller notices at its next poll).
    """

    __slots__ = ("async_event", "cost", "event", "loop_thread", "notify", "priority", "seq",
                 "since")

    def __init__(self, priority: Priority, cost: float, since: float = math.inf) -> None:
        self.priority = priority
        self.since = since
        self.seq = next(_arrivals)
        self.cost = cost
        self.event = threading.Event()
        self.async_event: Any = None
        self.loop_thread: int | None = None
        self.notify: Callable[[], None] | None = None

    def wake(self) -> None:
        self.event.set()
        if self.async_event is not None and threading.get_ident() == self.loop_thread:
            self.async_event.set()  # same event loop: wake the task at once
        else:
            notify = self.notify  # read once: the driver clears it when it stops waiting
            if notify is not None:
                notify()  # another thread: ask the task's loop to wake it

    @property
    def rank(self) -> tuple[int, float, int]:
        """Interactive before batch, then the call that began first (a retry is not sent to
        the back of the line), then first come first served."""
        return (0 if self.priority == "interactive" else 1, self.since, self.seq)
