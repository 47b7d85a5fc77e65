"""Simulated providers: how a model endpoint answers, on virtual time.

One :class:`ProviderModel` combines the shapes the matrix needs: a concurrency cap × service
time, an enforced token bucket (rate R, burst B) whose headers may describe a much larger
per-minute budget ("quantized" enforcement), a token-per-minute limit, an outage window (503,
connection refused, or no answer), a brownout (latency × factor), scripted transient faults,
partial failure, and absurd rate-limit headers. Each attempt gets a :class:`Reply`; the
provider frees the slot it used when the reply's latency has passed.
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Literal

from .loop import Loop

__all__ = ["Fault", "ProviderModel", "Reply"]

#: A scripted transient fault: an HTTP status or a connection reset.
Fault = Literal["429", "503", "529", "500", "reset"]
_WALL_EPOCH = 1_780_000_000.0  # virtual wall clock (Date / RFC 3339 headers), a 2026 instant


@dataclass(frozen=True, slots=True)
class Reply:
    """One attempt's answer: after ``latency`` s, an HTTP ``status`` or a connection ``fault``."""

    latency: float
    status: int | None
    headers: dict[str, str]
    fault: Literal["refused", "reset", "silent"] | None = None
    #: A streamed answer: seconds from its first output (``latency``) to its end.
    tail: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status is not None and self.status < 400


@dataclass
class ProviderModel:
    """A model endpoint; times (``outage``, ``brownout``) are seconds from the run's start."""

    service_time: float = 0.2
    #: Latency is ``service_time · U(1 − jitter, 1 + jitter)``.
    jitter: float = 0.2
    #: Requests in service at once; beyond it the answer is ``overload_status``.
    concurrency: int | None = None
    #: Answers are streamed: the first output comes after the latency, the rest over this
    #: many seconds more, the request holding its slot (and the caller reading) until then.
    stream_tail: float = 0.0
    overload_status: int = 429
    #: Enforced request bucket: ``rate`` per second, ``burst`` deep (``None`` = unlimited).
    rate: float | None = None
    burst: float | None = None
    #: Enforced tokens per second (each request costs ``tokens_per_request``).
    token_rate: float | None = None
    tokens_per_request: float = 100.0
    #: The per-minute request limit the headers describe (``None`` = no rate-limit headers).
    header_limit: float | None = None
    #: Headers describe the concurrency cap as the fault provider does: limit = slots,
    #: remaining = free slots, reset = time until every request in service has finished.
    capacity_headers: bool = False
    header_style: Literal["openai", "anthropic"] = "openai"
    #: Headers (OpenAI's) describe the enforced token bucket as it is: limit = ``token_rate``,
    #: remaining = tokens left, reset = time until it is full again.
    token_headers: bool = False
    #: ``Retry-After`` on 429/503/529: seconds, absent (``None``) or ``"auto"`` (time to capacity).
    retry_after: float | Literal["auto"] | None = "auto"
    #: (start, end, kind): 503s, refused connections, no answer at all, or a throttle episode
    #: (every request answered 429 or 529, with ``retry_after`` as configured).
    outage: tuple[float, float, Literal["503", "refused", "silent", "429", "529"]] | None = None
    #: (start, end, factor): latency × factor.
    brownout: tuple[float, float, float] | None = None
    #: The first attempts fail, in order, with these faults.
    transient: tuple[Fault, ...] = ()
    #: Share of requests answered ``fail_status`` regardless of load.
    fail_ratio: float = 0.0
    fail_status: int = 503
    #: The attempt (0-based) whose answer carries absurd rate-limit headers.
    absurd_at: int | None = None
    seed: int = 0

    # run state
    started: float = 0.0
    inflight: int = 0
    attempts: int = 0
    _loop: Loop | None = None
    _rng: random.Random = field(default_factory=random.Random)
    _seed: int = 0
    _level: float = 0.0
    _tokens: float = 0.0
    _header_level: float = 0.0
    _updated: float = 0.0
    _ends: list[float] = field(default_factory=list)

    def start(self, loop: Loop, seed: int) -> None:
        """Bind to ``loop`` at its current time, with full buckets and a seeded random source."""
        self._loop = loop
        self._seed = seed * 7919 + self.seed
        self._rng = random.Random(self._seed)
        self.started = self._updated = loop.now
        self._level = self.burst if self.burst is not None else 0.0
        self._tokens = self.token_rate if self.token_rate is not None else 0.0
        self._header_level = self.header_limit or 0.0
        self.inflight = self.attempts = 0
        self._ends = []

    @property
    def capacity(self) -> float:
        """Requests per second this provider can serve when healthy (``inf`` = unbounded)."""
        limits = [math.inf]
        if self.rate is not None:
            limits.append(self.rate)
        if self.token_rate is not None:
            limits.append(self.token_rate / self.tokens_per_request)
        if self.concurrency is not None:
            limits.append(self.concurrency / (self.service_time + self.stream_tail))
        return min(limits)

    @property
    def episode_end(self) -> float | None:
        """When the outage, brownout or throttle episode ends (seconds from start), if any."""
        ends = [w[1] for w in (self.outage, self.brownout) if w is not None]
        return max(ends) if ends else None

    def serve(self, now: float, tokens: float | None = None,
              key: tuple[int, int] | None = None) -> Reply:
        """Answer one attempt arriving at ``now`` (of ``tokens``: ``tokens_per_request``);
        ``key``: its call's number and its own among the call's attempts."""
        assert self._loop is not None, "call start() first"
        t = now - self.started
        index = self.attempts
        self.attempts += 1
        self._refill(now)
        if index < len(self.transient):
            return self._fault(self.transient[index])
        if self.outage is not None and self.outage[0] <= t < self.outage[1]:
            kind = self.outage[2]
            if kind == "refused" or kind == "silent":
                return Reply(0.001 if kind == "refused" else math.inf, None, {}, kind)
            return self._status(int(kind), 0.01 if kind == "503" else 0.005)
        if self.fail_ratio and self._chance(key) < self.fail_ratio:
            return self._status(self.fail_status, self._latency(t) * 0.2)
        if self.concurrency is not None and self.inflight >= self.concurrency:
            # the hint, when given: until the next slot frees
            return self._status(self.overload_status, 0.005,
                                wait=max(0.001, self._ends[0] - now) if self._ends else None)
        if self.rate is not None and self._level < 1.0:
            return self._status(429, 0.005, wait=(1.0 - self._level) / self.rate)
        cost = self.tokens_per_request if tokens is None else tokens
        if self.token_rate is not None and self._tokens < cost:
            return self._status(429, 0.005, wait=(cost - self._tokens) / self.token_rate)
        if self.rate is not None:
            self._level -= 1.0
        if self.token_rate is not None:
            self._tokens -= cost
        if self.header_limit is not None:
            self._header_level = max(0.0, self._header_level - 1.0)
        latency = self._latency(t)
        self.inflight += 1
        end = now + latency + self.stream_tail
        heapq.heappush(self._ends, end)
        self._loop.at(end, self._done)
        headers = self._limit_headers(now, absurd=index == self.absurd_at)
        return Reply(latency, 200, headers, tail=self.stream_tail)

    # --- internals

    def _chance(self, key: tuple[int, int] | None) -> float:
        """A uniform draw; for a ``key`` the same whichever client sends that attempt (common
        random numbers: two clients that retry alike meet the same share refused alike, and
        a difference between them is their own, not the order their attempts drew in)."""
        if key is None:
            return self._rng.random()
        return random.Random(f"{self._seed}:{key[0]}:{key[1]}").random()

    def _done(self) -> None:
        self.inflight -= 1
        heapq.heappop(self._ends)

    def _latency(self, t: float) -> float:
        base = self.service_time * self._rng.uniform(1 - self.jitter, 1 + self.jitter)
        if self.brownout is not None and self.brownout[0] <= t < self.brownout[1]:
            base *= self.brownout[2]
        return base

    def _refill(self, now: float) -> None:
        elapsed = now - self._updated
        if elapsed <= 0:
            return
        self._updated = now
        if self.rate is not None:
            self._level = min(self.burst or 1.0, self._level + elapsed * self.rate)
        if self.token_rate is not None:
            self._tokens = min(self.token_rate, self._tokens + elapsed * self.token_rate)
        if self.header_limit is not None:
            self._header_level = min(self.header_limit,
                                     self._header_level + elapsed * self.header_limit / 60)

    def _fault(self, fault: Fault) -> Reply:
        if fault == "reset":
            return Reply(0.002, None, {}, "reset")
        return self._status(int(fault), 0.01)

    def _status(self, status: int, latency: float, *, wait: float | None = None) -> Reply:
        headers = {"content-type": "application/json"}
        hint = self.retry_after
        if status in (429, 503, 529) and hint is not None:
            seconds = (wait if wait is not None else 1.0) if hint == "auto" else hint
            headers["retry-after-ms"] = str(max(1, round(seconds * 1000)))
            headers["retry-after"] = str(max(0, math.ceil(seconds)))
        if (self.header_limit is not None or self.capacity_headers or self.token_headers) \
                and self._loop is not None:
            headers.update(self._limit_headers(self._loop.now, absurd=False))
        return Reply(latency, status, headers)

    def _limit_headers(self, now: float, *, absurd: bool) -> dict[str, str]:
        if self.token_headers and self.token_rate is not None and not absurd:
            left = max(0.0, self._tokens)
            return {
                "x-ratelimit-limit-tokens": str(int(self.token_rate)),
                "x-ratelimit-remaining-tokens": str(math.floor(left)),
                "x-ratelimit-reset-tokens": f"{(self.token_rate - left) / self.token_rate:.3f}s",
            }
        if self.capacity_headers and self.concurrency is not None:
            return {
                "x-ratelimit-limit-requests": str(self.concurrency),
                "x-ratelimit-remaining-requests": str(max(0, self.concurrency - self.inflight)),
                "x-ratelimit-reset-requests":
                    f"{max(0.0, max(self._ends, default=now) - now):.3f}s",
            }
        if self.header_limit is None and not absurd:
            return {}
        limit = self.header_limit or 1000.0
        remaining = math.floor(self._header_level) if self.header_limit else limit
        reset = (limit - remaining) * 60 / limit
        if self.header_style == "anthropic":
            wall = _WALL_EPOCH + (now - self.started)
            stamp = _rfc3339(wall + (1e9 if absurd else reset))
            return {
                "date": formatdate(wall, usegmt=True),
                "anthropic-ratelimit-requests-limit": str(int(limit)),
                "anthropic-ratelimit-requests-remaining": "0" if absurd else str(int(remaining)),
                "anthropic-ratelimit-requests-reset": stamp,
            }
        headers = {
            "x-ratelimit-limit-requests": str(int(limit)),
            "x-ratelimit-remaining-requests": str(int(remaining)),
            "x-ratelimit-reset-requests": f"{reset:.3f}s",
        }
        if absurd:
            headers.update({
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": "99999999h",
                "x-ratelimit-limit-tokens": "1000000",
                "x-ratelimit-remaining-tokens": "0",
                "x-ratelimit-reset-tokens": "99999999h",
            })
        return headers


def _rfc3339(wall: float) -> str:
    import datetime

    moment = datetime.datetime.fromtimestamp(wall, tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
