"""Traffic models: who calls, when, and through which client (process)."""

from __future__ import annotations

import random
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from ..._policy import Priority
from .clients import CallResult
from .loop import Loop

__all__ = ["Client", "Traffic"]

#: A closed-loop worker whose call failed in less than this pauses this long before the next.
_SPIN = 0.01


class Client(Protocol):
    """What a traffic model needs from a client: one call as a simulated process."""

    def call(self, model: str, priority: Priority = "interactive",
             tokens: float | None = None) -> Generator[float, None, CallResult]: ...


@dataclass(frozen=True, slots=True)
class Traffic:
    """A traffic shape over ``duration`` seconds.

    * ``sequential``: one caller per process, a call, then ``think`` seconds, again.
    * ``poisson``: open loop, ``rate`` calls per second in total, spread over the processes.
    * ``burst``: ``n`` calls at once.
    * ``bursts``: ``n`` calls at once every ``think`` seconds (a periodic batch: each burst
      meets the state the previous ones left).
    * ``workers``: ``n`` closed-loop workers (a call, at once the next; 10 ms after a call that
      failed at once), over the processes.
    * ``mix``: a burst of ``n`` batch calls plus one sequential interactive caller.

    ``tokens`` (low, high): each call's size in tokens, drawn uniformly; the client estimates
    it and the provider charges it (``None``: the provider's ``tokens_per_request``).
    """

    kind: Literal["sequential", "poisson", "burst", "bursts", "workers", "mix"]
    duration: float = 30.0
    rate: float = 0.0
    n: int = 1
    think: float = 0.25
    tokens: tuple[float, float] | None = None

    def offered(self, service_time: float) -> float:
        """Calls per second this shape asks for when nothing fails."""
        if self.kind == "poisson":
            return self.rate
        if self.kind == "workers":
            return self.n / service_time
        if self.kind == "burst":
            return self.n / self.duration
        if self.kind == "bursts":
            return self.n / self._period()
        if self.kind == "mix":
            return self.n / self.duration + 1 / (service_time + self.think)
        return 1 / (service_time + self.think)

    def _period(self) -> float:
        if self.think <= 0:
            raise ValueError(f"bursts traffic needs think > 0 (seconds between bursts), "
                             f"got {self.think!r}")
        return self.think

    def spawn(self, loop: Loop, clients: Sequence[Client], model: str,
              results: list[CallResult], rng: random.Random) -> None:
        """Start this traffic's processes on ``loop``; every finished call lands in ``results``."""
        t0 = loop.now
        end = t0 + self.duration
        record: Callable[[CallResult], None] = results.append

        def size() -> float | None:
            return None if self.tokens is None else rng.uniform(*self.tokens)

        def repeat(client: Client, priority: Priority, pause: float) -> Generator[float, None,
                                                                                  None]:
            while loop.now < end:
                result = yield from client.call(model, priority, size())
                record(result)
                if pause > 0:
                    yield pause
                elif not result.ok and result.latency < _SPIN:
                    yield _SPIN  # a worker failed at once: it would spin, not stall time

        def once(client: Client, priority: Priority,
                 tokens: float | None = None) -> Generator[float, None, None]:
            record((yield from client.call(model, priority, tokens)))

        if self.kind == "sequential":
            for client in clients:
                loop.spawn(repeat(client, "interactive", self.think))
        elif self.kind == "workers":
            for index in range(self.n):
                loop.spawn(repeat(clients[index % len(clients)], "interactive", 0.0),
                           at=t0 + rng.uniform(0, 0.01))
        elif self.kind == "burst":
            for index in range(self.n):
                loop.spawn(once(clients[index % len(clients)], "interactive"))
        elif self.kind == "bursts":
            when, period = t0, self._period()
            while when < end:
                for index in range(self.n):
                    loop.spawn(once(clients[index % len(clients)], "interactive"), at=when)
                when += period
        elif self.kind == "mix":
            for index in range(self.n):
                loop.spawn(once(clients[index % len(clients)], "batch"))
            loop.spawn(repeat(clients[0], "interactive", self.think), at=t0 + 0.5)
        else:
            when, index = t0, 0
            while True:
                when += rng.expovariate(self.rate)
                if when >= end:
                    break
                loop.spawn(once(clients[index % len(clients)], "interactive", size()), at=when)
                index += 1
