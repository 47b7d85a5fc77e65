"""Virtual time for the simulator: a heap of timed steps and generator processes.

A process is a generator that yields the seconds it wants to sleep; the loop resumes it when
virtual time reaches that point. Nothing here sleeps or reads a clock: thousands of simulated
seconds take as long as the decisions made in them.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Generator
from typing import Any

__all__ = ["Loop", "Process", "SimClock", "SimEvent"]

#: A simulated process: yields seconds to sleep, returns its result.
Process = Generator[float, None, Any]


class _Proc:
    """A running process: its generator, and the epoch that tells a live resume from a stale one."""

    __slots__ = ("done", "epoch", "gen")

    def __init__(self, gen: Process, done: Callable[[Any], None] | None) -> None:
        self.gen = gen
        self.done = done
        self.epoch = 0


class Loop:
    """Discrete-event loop over virtual seconds (starting at ``start``)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self.current: _Proc | None = None

    def at(self, when: float, step: Callable[[], None]) -> None:
        """Run ``step`` when virtual time reaches ``when`` (never in the past)."""
        heapq.heappush(self._heap, (max(when, self.now), next(self._seq), step))

    def spawn(self, process: Process, *, at: float | None = None,
              done: Callable[[Any], None] | None = None) -> None:
        """Start ``process`` at ``at`` (default: now); ``done`` receives its return value."""
        proc = _Proc(process, done)
        self._resume(proc, self.now if at is None else at)

    def wake(self, proc: _Proc) -> None:
        """Resume ``proc`` now, cutting its current sleep short (an event was set)."""
        self._resume(proc, self.now)

    def _resume(self, proc: _Proc, when: float) -> None:
        epoch = proc.epoch
        self.at(when, lambda: self._step(proc, epoch))

    def _step(self, proc: _Proc, epoch: int) -> None:
        if epoch != proc.epoch:
            return  # a wake already resumed it
        proc.epoch += 1
        self.current = proc
        try:
            delay = next(proc.gen)
        except StopIteration as stop:
            if proc.done is not None:
                proc.done(stop.value)
            return
        finally:
            self.current = None
        if delay < 0 or delay != delay:
            raise ValueError(f"a simulated process asked to sleep {delay!r} s")
        self._resume(proc, self.now + delay)

    def run(self, until: float | None = None, *, max_steps: int = 20_000_000) -> None:
        """Advance until nothing is left to run (or ``until``), bounded by ``max_steps``."""
        steps = 0
        heap = self._heap
        while heap and (until is None or heap[0][0] <= until):
            when, _, step = heapq.heappop(heap)
            self.now = when
            step()
            steps += 1
            if steps >= max_steps:
                raise RuntimeError(f"simulation did not settle within {max_steps} steps")
        if until is not None:
            self.now = max(self.now, until)


class SimEvent:
    """An event a sleeping process waits on: ``set()`` resumes it at once.

    It stands in for the asyncio event an admission waiter is woken with, so a simulated call
    queued for admission resumes when a slot frees, as the drivers' calls do. It wakes the
    process only while it sleeps on it (:meth:`arm`); set at any other time (say by the
    process itself, while it asks for admission) it stays ``pending``, as an event set before
    a wait makes the wait return at once, and never cuts a later, unrelated sleep short.
    """

    __slots__ = ("_armed", "_loop", "_proc", "pending")

    def __init__(self, loop: Loop) -> None:
        if loop.current is None:
            raise RuntimeError("a SimEvent belongs to a running process")
        self._loop = loop
        self._proc = loop.current
        self._armed = False
        self.pending = False

    def arm(self) -> None:
        """The process is about to sleep on this event."""
        self._armed = True

    def disarm(self) -> None:
        """The process is awake again (woken, or its sleep ended)."""
        self._armed = False
        self.pending = False

    def set(self) -> None:
        if self._armed:
            self._armed = False
            self._loop.wake(self._proc)
        else:
            self.pending = True


class SimClock:
    """The engine's ``Clock`` on virtual time. Sleeping is the loop's job, never the clock's."""

    __slots__ = ("_loop",)

    def __init__(self, loop: Loop) -> None:
        self._loop = loop

    def now(self) -> float:
        return self._loop.now

    def sleep(self, seconds: float) -> None:
        raise RuntimeError("simulated code must yield its waits to the loop, not sleep")

    async def asleep(self, seconds: float) -> None:
        raise RuntimeError("simulated code must yield its waits to the loop, not sleep")
