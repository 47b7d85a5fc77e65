"""The fault-injecting provider: scripted faults, capacity limits and the request log.

One ``FaultProvider`` decides what happens to each request (``_begin`` returns a ``Plan``) and
records it; two drivers carry plans out: the in-process transport (``_transport.py``) and the
loopback HTTP server (``_server.py``). Deciding here keeps both drivers byte-for-byte alike.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Generic, Literal, TypeVar

from . import _clouds, _wire
from ._faults import (
    ErrorEvent,
    Fault,
    FirstTokenDelay,
    Hang,
    MalformedChunk,
    MissingTerminator,
    Ok,
    Reset,
    Status,
    StreamCut,
    StreamStall,
    Usage,
)
from ._plan import CUT, Plan, RecordedRequest, Step, _Entry

if TYPE_CHECKING:
    from ._server import FaultServer
    from ._transport import FaultTransport

__all__ = ["FaultProvider", "PrefillMode", "RecordedRequest"]

PrefillMode = Literal["continue", "ignore", "reject"]
"""What the provider does with a request whose last turn is the assistant's (a prefill).

``continue`` answers only what follows the prefill in the scripted text (Anthropic Messages
does this; it also rejects a prefill that ends in white space, as the real API does);
``ignore`` answers the whole text as a new turn (OpenAI chat completions treat a final
assistant message as context, not a prefix); ``reject`` answers 400, as models that do not
support prefill do. ``None`` (the default) behaves like the real API of the request's flavor.
"""

_PREFILL_MODES: Final = ("continue", "ignore", "reject")

T = TypeVar("T")


class _PerModel(Generic[T]):
    """A setting with one value for every model and overrides for some: what the setters'
    ``model=`` argument chooses between (``None``: the value for every model)."""

    __slots__ = ("everywhere", "models")

    def __init__(self, everywhere: T) -> None:
        self.everywhere = everywhere
        self.models: dict[str, T] = {}

    def set(self, value: T, model: str | None) -> None:
        if model is None:
            self.everywhere = value
        else:
            self.models[model] = value

    def get(self, model: str | None) -> T:
        return self.everywhere if model is None else self.models.get(model, self.everywhere)


@dataclass(slots=True)
class _RateView:
    limit: int
    remaining: int
    reset: float


_NOMINAL_REQUESTS = _RateView(10_000, 9_999, 0.006)
_NOMINAL_TOKENS = 2_000_000


@dataclass(frozen=True, slots=True)
class _LimitConfig:
    """The limits a provider enforces (``advertised``: only claims in its headers); ``None``
    is no such limit, and ``burst`` defaults to the rate (at least 1)."""

    capacity: int | None = None
    rps: float | None = None
    tpm: int | None = None
    burst: float | None = None
    advertised: int | None = None


class _Limits:
    """Capacity, request-rate and token-rate limits; used only under the provider lock."""

    def __init__(self, config: _LimitConfig, now: float) -> None:
        self.config = config
        rps = config.rps
        self.inflight: dict[int, float] = {}  # entry index -> expected end (monotonic)
        self.burst = (config.burst if config.burst is not None else max(1.0, rps)) if rps else 0.0
        self.req_tokens = self.burst
        self.tok_tokens = float(config.tpm or 0)
        self.shown = float(config.advertised or 0)
        self.last = now

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self.last)
        self.last = now
        if advertised := self.config.advertised:
            self.shown = min(float(advertised), self.shown + elapsed * advertised / 60.0)
        if rps := self.config.rps:
            self.req_tokens = min(self.burst, self.req_tokens + elapsed * rps)
        if tpm := self.config.tpm:
            self.tok_tokens = min(float(tpm), self.tok_tokens + elapsed * tpm / 60.0)

    def _capacity_view(self, now: float) -> _RateView:
        assert self.config.capacity is not None
        remaining = max(0, self.config.capacity - len(self.inflight))
        # As OpenAI documents its reset: the time until the limit is back to its initial
        # state, here when every request in flight has finished.
        ends = [end for end in self.inflight.values() if math.isfinite(end)]
        reset = max(0.0, max(ends) - now) if ends else 0.0
        return _RateView(self.config.capacity, remaining, reset)

    def _rps_view(self) -> _RateView:
        assert self.config.rps
        missing = self.burst - self.req_tokens
        return _RateView(int(self.burst), int(self.req_tokens), missing / self.config.rps)

    def requests_view(self, now: float) -> _RateView:
        if advertised := self.config.advertised:  # what the headers claim, not what is enforced
            self._refill(now)
            missing = advertised - self.shown
            return _RateView(advertised, int(self.shown), missing * 60.0 / advertised)
        views = []
        if self.config.capacity is not None:
            views.append(self._capacity_view(now))
        if self.config.rps:
            views.append(self._rps_view())
        if not views:
            return _NOMINAL_REQUESTS
        return min(views, key=lambda v: v.remaining / max(1, v.limit))

    def tokens_view(self, cost: int) -> _RateView:
        if not self.config.tpm:
            return _RateView(_NOMINAL_TOKENS, _NOMINAL_TOKENS - min(cost, _NOMINAL_TOKENS), 0.0)
        missing = self.config.tpm - self.tok_tokens
        return _RateView(self.config.tpm, int(self.tok_tokens), missing / (self.config.tpm / 60.0))

    def admit(self, index: int, now: float, cost: int, expected: float) -> tuple[str, float] | None:
        """Admit the request (and hold a slot) or return (fault name, seconds to wait)."""
        self._refill(now)
        if self.config.capacity is not None and len(self.inflight) >= self.config.capacity:
            ends = [end for end in self.inflight.values() if math.isfinite(end)]
            return "capacity", (max(0.0, min(ends) - now) if ends else 1.0)
        if self.config.rps and self.req_tokens < 1.0:
            return "rate_limit", (1.0 - self.req_tokens) / self.config.rps
        if self.config.tpm and self.tok_tokens < cost:
            rate = self.config.tpm / 60.0
            return "token_limit", (min(cost, self.config.tpm) - self.tok_tokens) / rate
        if self.config.rps:
            self.req_tokens -= 1.0
        if self.config.advertised:
            self.shown = max(0.0, self.shown - 1.0)
        if self.config.tpm:
            self.tok_tokens -= cost
        if self.config.capacity is not None:
            self.inflight[index] = now + expected
        return None


_APIS: Final = (
    ("/chat/completions", "chat", "openai"),
    ("/responses", "responses", "openai"),
    ("/embeddings", "embeddings", "openai"),
    ("/messages", "messages", "anthropic"),
)


class FaultProvider:
    """A scriptable fake of the OpenAI and Anthropic HTTP APIs for testing resilience (and of
    Anthropic's Messages on Bedrock and Vertex, by their paths: see ``_clouds.py``).

    Each request takes the next fault from the per-model queue (matched on the body's
    ``model``), else the global queue, else the per-model default, else ``default``. Capacity
    and rate limits (when configured) are checked first and answer 429 without consuming a
    scripted fault. Use ``transport()`` in-process or ``serve()`` for a real loopback server.
    Thread-safe: both drivers and many client threads may share one provider.

    Args:
        capacity: requests admitted in flight at once; beyond that 429 with rate-limit headers.
        service_time: seconds each admitted request takes before its headers (added to delay).
        retry_after_header: send ``retry-after`` (whole seconds) on limit 429s.
        rate_limit_rps: token-bucket request rate (burst = rate), 429 when empty.
        rate_limit_burst: the bucket's depth when it is not the rate (a "quantized" limit:
            providers may enforce a per-minute limit over much shorter windows).
        advertised_rpm: the per-minute request limit the rate-limit headers describe instead
            of the enforced one (remaining counts down from it and refills over a minute), as
            a provider whose headers speak of a budget larger than the burst it allows.
        tokens_per_minute: token-bucket on estimated tokens (body bytes / 4 + max tokens).
        default: what to answer when every queue is empty.
        prefill: what to do with a final assistant turn (see ``PrefillMode``); ``None``
            behaves like the real API of the request's flavor.
        log_limit: keep only the latest N requests in the log (long benchmarks); indexes
            keep counting.
    """

    def __init__(
        self,
        *,
        capacity: int | None = None,
        service_time: float = 0.0,
        retry_after_header: bool = False,
        rate_limit_rps: float | None = None,
        rate_limit_burst: float | None = None,
        advertised_rpm: int | None = None,
        tokens_per_minute: int | None = None,
        default: Fault | None = None,
        prefill: PrefillMode | None = None,
        log_limit: int | None = None,
    ) -> None:
        if log_limit is not None and log_limit < 1:
            raise ValueError(f"log_limit must be >= 1, got {log_limit!r}")
        if capacity is not None and capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity!r}")
        if not (math.isfinite(service_time) and service_time >= 0):
            raise ValueError(f"service_time must be finite and >= 0, got {service_time!r}")
        if rate_limit_rps is not None and not (0 < rate_limit_rps < math.inf):
            raise ValueError(f"rate_limit_rps must be finite and > 0, got {rate_limit_rps!r}")
        if rate_limit_burst is not None and (rate_limit_rps is None
                                             or not 1 <= rate_limit_burst < math.inf):
            raise ValueError("rate_limit_burst needs rate_limit_rps and must be >= 1, got "
                             f"{rate_limit_burst!r}")
        if advertised_rpm is not None and advertised_rpm < 1:
            raise ValueError(f"advertised_rpm must be >= 1, got {advertised_rpm!r}")
        for name, count in (("capacity", capacity), ("advertised_rpm", advertised_rpm),
                            ("tokens_per_minute", tokens_per_minute), ("log_limit", log_limit)):
            if count is not None and (isinstance(count, bool) or not isinstance(count, int)):
                raise TypeError(f"{name} must be a whole number, got {count!r}")
        if tokens_per_minute is not None and tokens_per_minute < 1:
            raise ValueError(f"tokens_per_minute must be >= 1, got {tokens_per_minute!r}")
        if default is not None and not isinstance(default, Fault):
            raise TypeError(f"default must be a Fault (Fault.ok(), Fault.status(503), ...), "
                            f"got {default!r}")
        _check_prefill(prefill)
        self._defaults = _PerModel(default if default is not None else Fault.ok())
        self._prefill: _PerModel[PrefillMode | None] = _PerModel(prefill)
        self.service_time = service_time
        self.retry_after_header = retry_after_header
        self._config = _LimitConfig(capacity, rate_limit_rps, tokens_per_minute,
                                    rate_limit_burst, advertised_rpm)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._queue: deque[Fault] = deque()
        self._model_queues: dict[str, deque[Fault]] = {}
        self._log: deque[_Entry] = deque(maxlen=log_limit)
        self._count = 0
        self._release = threading.Event()
        self._limits = self._new_limits()

    def _new_limits(self) -> _Limits:
        return _Limits(self._config, now=time.monotonic())

    def __repr__(self) -> str:
        c = self._config
        return (
            f"FaultProvider(capacity={c.capacity!r}, rate_limit_rps={c.rps!r}, "
            f"rate_limit_burst={c.burst!r}, advertised_rpm={c.advertised!r}, "
            f"tokens_per_minute={c.tpm!r}, requests={self._count})"
        )

    @property
    def default(self) -> Fault:
        """What every model is answered when the queues are empty (see :meth:`set_default`)."""
        return self._defaults.everywhere

    @default.setter
    def default(self, fault: Fault) -> None:
        self.set_default(fault)

    @property
    def prefill(self) -> PrefillMode | None:
        """How every model answers a prefill (see :meth:`set_prefill`)."""
        return self._prefill.everywhere

    @prefill.setter
    def prefill(self, mode: PrefillMode | None) -> None:
        self.set_prefill(mode)

    # ------------------------------------------------------------------ scripting

    def script(self, *faults: Fault, model: str | None = None) -> None:
        """Queue faults, one per request in order; with ``model`` only for that model."""
        _check_model(model)
        for fault in faults:
            _check_fault(fault)
        with self._lock:
            if model is None:
                self._queue.extend(faults)
            else:
                self._model_queues.setdefault(model, deque()).extend(faults)

    def set_default(self, fault: Fault, *, model: str | None = None) -> None:
        """What to answer when the queues are empty (for one model, or for all)."""
        _check_model(model)
        _check_fault(fault)
        with self._lock:
            self._defaults.set(fault, model)

    def set_prefill(self, mode: PrefillMode | None, *, model: str | None = None) -> None:
        """How requests ending with an assistant turn are answered (for one model, or all)."""
        _check_prefill(mode)
        with self._lock:
            self._prefill.set(mode, model)

    def pending(self, *, model: str | None = None) -> int:
        """How many scripted faults are still queued (global, or for ``model``)."""
        _check_model(model)
        with self._lock:
            queue = self._queue if model is None else self._model_queues.get(model, ())
            return len(queue)

    def reset(self) -> None:
        """Clear queues, per-model defaults, limits and the log; free in-process hangs."""
        with self._lock:
            self._queue.clear()
            self._model_queues.clear()
            self._defaults.models.clear()
            self._prefill.models.clear()
            self._log.clear()
            self._count = 0
            self._limits = self._new_limits()
            self._release.set()
            self._release = threading.Event()
            self._changed.notify_all()

    # ------------------------------------------------------------------ the log

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request so far, in arrival order."""
        with self._lock:
            return [entry.snapshot() for entry in self._log]

    def wait_for(
        self,
        condition: Callable[[list[RecordedRequest]], bool],
        *,
        timeout: float = 2.0,
    ) -> list[RecordedRequest]:
        """Block until ``condition(requests)`` holds, then return that snapshot.

        Server-side events (a disconnect noticed, a stream finished) happen after the client
        call returns; this waits for them without sleeping in a loop. Raises ``TimeoutError``.
        """
        if not math.isfinite(timeout):  # (nan never ends the wait; a negative one at once)
            raise ValueError(f"timeout must be a finite number of seconds, got {timeout!r}")
        end = time.monotonic() + timeout
        with self._changed:
            while True:
                snapshot = [entry.snapshot() for entry in self._log]
                if condition(snapshot):
                    return snapshot
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"condition not met within {timeout} s: {snapshot!r}")
                self._changed.wait(left)

    # ------------------------------------------------------------------ drivers

    def transport(self) -> FaultTransport:
        """An httpx2 transport (sync and async) answering from this provider, no sockets."""
        from ._transport import FaultTransport

        return FaultTransport(self)

    def serve(self, *, host: str = "127.0.0.1", port: int = 0) -> FaultServer:
        """Start a real HTTP/1.1 server on a background thread; use as a context manager."""
        from ._server import FaultServer

        return FaultServer(self, host=host, port=port)

    # ------------------------------------------------------------------ planning (drivers only)

    def _begin(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Plan:
        """Record a request and decide what to do with it."""
        now = time.monotonic()
        path = path.split("?", 1)[0]
        api, flavor = "unknown", "anthropic" if "anthropic-version" in headers else "openai"
        for suffix, name, fl in _APIS:
            if path.endswith(suffix):
                api, flavor = name, fl
                break
        cloud = _clouds.route(path)  # Bedrock and Vertex: Messages, the model in the path
        if cloud is not None:
            api, flavor = "messages", "anthropic"
        data: Any = None
        bad_json = False
        if body:
            try:
                data = json.loads(body)
            except ValueError:
                bad_json = True
        obj: Mapping[str, Any] = data if isinstance(data, dict) else {}
        model = obj.get("model") if cloud is None else cloud.model
        model = model if isinstance(model, str) else None
        stream = obj.get("stream") is True or (cloud is not None and cloud.stream)
        options = obj.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        cost = len(body) // 4 + _max_tokens(obj)

        with self._lock:
            entry = _Entry(RecordedRequest(
                index=self._count, method=method, path=path, headers=headers, json=data,
                model=model, stream=stream, started_at=now, ended_at=None, status=None,
                fault="ok", client_disconnected=False,
            ))
            self._log.append(entry)
            self._count += 1
            x = _wire.Exchange(
                api=api,
                flavor=flavor,
                model=model or "unknown-model",
                index=entry.asked.index,
                stream=stream and api != "embeddings",
                include_usage=include_usage,
                body_size=len(body),
                body=data,
            )
            if method != "POST" or api == "unknown":
                entry.fault = "not_found"
                fault: Fault = Status(
                    code=404,
                    error_type=None,
                    message=f"Unknown request URL: {method} {path}.",
                    error_code="unknown_url" if flavor == "openai" else None,
                )
                plan = self._plan(entry, x, fault, 0.0, self._limits.requests_view(now), cost)
            elif bad_json:
                entry.fault = "bad_request"
                fault = Status(
                    code=400, message="We could not parse the JSON body of your request."
                )
                plan = self._plan(entry, x, fault, 0.0, self._limits.requests_view(now), cost)
            elif (refusal := self._refuse_prefill(entry, x)) is not None:
                # An invalid request is refused before any scripted fault is consumed.
                entry.fault = "prefill_rejected"
                view = self._limits.requests_view(now)
                plan = self._plan(entry, x, refusal, 0.0, view, cost)
            else:
                fault, source = self._next_fault(model)
                expected = (
                    math.inf
                    if isinstance(fault, Hang)
                    else fault.delay + self.service_time + _stream_time(fault)
                )
                rejected = self._limits.admit(entry.asked.index, now, cost, expected)
                if rejected is not None:
                    if source is not None:  # a limit 429 must not consume the script
                        source.appendleft(fault)
                    entry.fault = rejected[0]
                    plan = self._limit_plan(entry, x, rejected, now, cost)
                else:
                    entry.fault = fault.kind
                    view = self._limits.requests_view(now)
                    plan = self._plan(entry, x, fault, self.service_time, view, cost)
            if cloud is not None:
                plan = _clouds.adapt(plan, x.request_id, cloud, x.stream)
            plan.release = self._release
            self._changed.notify_all()
        return plan

    def _prefill_mode(self, x: _wire.Exchange) -> PrefillMode:
        mode = self._prefill.get(x.model)
        if mode is None:
            return "continue" if x.flavor == "anthropic" else "ignore"
        return mode

    def _refuse_prefill(self, entry: _Entry, x: _wire.Exchange) -> Status | None:
        """Record the request's prefill; the 400 the API would answer for it, if any."""
        entry.prefill = x.prefill = _wire.prefill_of(x)
        if x.prefill is None:
            return None
        mode = self._prefill_mode(x)
        if mode == "reject":
            return Status(
                code=400,
                error_type="invalid_request_error",
                message=(
                    "This model does not support assistant message prefill. "
                    "The conversation must end with a user message."
                ),
            )
        if mode == "continue" and x.flavor == "anthropic" and x.prefill != x.prefill.rstrip():
            return Status(
                code=400,
                error_type="invalid_request_error",
                message="messages: final assistant content cannot end with trailing whitespace",
            )
        if mode == "ignore":
            x.prefill = None  # answered as a new turn
        return None

    def _next_fault(self, model: str | None) -> tuple[Fault, deque[Fault] | None]:
        """The fault for this request and the queue it came from (None for a default)."""
        if model is not None:
            queue = self._model_queues.get(model)
            if queue:
                return queue.popleft(), queue
        if self._queue:
            return self._queue.popleft(), self._queue
        return self._defaults.get(model), None

    def _answering(self, plan: Plan) -> None:
        """Called by a driver just before the status line goes out: the log shows the status
        from then on, so a client that has read the answer never finds it missing."""
        with self._lock:
            plan.entry.status = plan.status
            self._changed.notify_all()

    def _finish(self, plan: Plan, *, answered: bool, disconnected: bool) -> None:
        """Called once by a driver when the exchange is over, whichever way."""
        with self._lock:
            if plan.finished:
                return
            plan.finished = True
            entry = plan.entry
            entry.ended_at = time.monotonic()
            if answered:
                entry.status = plan.status
            entry.client_disconnected = disconnected
            self._limits.inflight.pop(entry.asked.index, None)
            self._changed.notify_all()

    # ------------------------------------------------------------------ plans

    def _headers(
        self,
        x: _wire.Exchange,
        *,
        sse: bool,
        delay: float,
        requests: _RateView,
        tokens: _RateView,
    ) -> list[tuple[str, str]]:
        ctype = "text/event-stream; charset=utf-8" if sse else "application/json"
        headers = [("content-type", ctype)]
        if sse:
            headers.append(("cache-control", "no-cache"))
        if x.flavor == "anthropic":
            headers += [
                ("request-id", x.request_id),
                ("anthropic-organization-id", "00000000-0000-4000-8000-00000000fa17"),
                ("anthropic-ratelimit-requests-limit", str(requests.limit)),
                ("anthropic-ratelimit-requests-remaining", str(requests.remaining)),
                ("anthropic-ratelimit-requests-reset", _wire.rfc3339_after(requests.reset)),
                ("anthropic-ratelimit-tokens-limit", str(tokens.limit)),
                ("anthropic-ratelimit-tokens-remaining", str(tokens.remaining)),
                ("anthropic-ratelimit-tokens-reset", _wire.rfc3339_after(tokens.reset)),
            ]
        else:
            headers += [
                ("x-request-id", x.request_id),
                ("openai-organization", "org-fault"),
                ("openai-processing-ms", str(int(delay * 1000))),
                ("openai-version", "2020-10-01"),
                ("x-ratelimit-limit-requests", str(requests.limit)),
                ("x-ratelimit-limit-tokens", str(tokens.limit)),
                ("x-ratelimit-remaining-requests", str(requests.remaining)),
                ("x-ratelimit-remaining-tokens", str(tokens.remaining)),
                ("x-ratelimit-reset-requests", _wire.go_duration(requests.reset)),
                ("x-ratelimit-reset-tokens", _wire.go_duration(tokens.reset)),
            ]
        return headers

    def _limit_plan(
        self,
        entry: _Entry,
        x: _wire.Exchange,
        rejected: tuple[str, float],
        now: float,
        cost: int,
    ) -> Plan:
        reason, wait = rejected
        requests = self._limits.requests_view(now)
        tokens = self._limits.tokens_view(cost)
        if reason == "token_limit":
            tokens = _RateView(tokens.limit, 0, max(tokens.reset, wait))
            what = "tokens per min (TPM)"
        else:
            requests = _RateView(requests.limit, 0, max(wait, 0.001))
            what = "requests per min (RPM)"
        headers = self._headers(x, sse=False, delay=0.0, requests=requests, tokens=tokens)
        if self.retry_after_header:
            headers.append(("retry-after", str(max(1, math.ceil(wait)))))
        if x.flavor == "anthropic":
            message = (
                "This request would exceed the rate limit for your organization. "
                f"Please try again in {wait:.3f}s."
            )
            fault = Status(code=429, message=message)
        else:
            message = (
                f"Rate limit reached for {x.model} in organization org-fault on {what}: "
                f"Limit {tokens.limit if reason == 'token_limit' else requests.limit}. "
                f"Please try again in {_wire.go_duration(wait)}."
            )
            error_type = "tokens" if reason == "token_limit" else "requests"
            fault = Status(
                code=429, error_type=error_type, error_code="rate_limit_exceeded", message=message
            )
        return Plan(entry, "respond", 0.0, 429, headers, _wire.error_body(x, fault))

    def _plan(
        self,
        entry: _Entry,
        x: _wire.Exchange,
        fault: Fault,
        extra_delay: float,
        requests: _RateView,
        cost: int,
    ) -> Plan:
        delay = fault.delay + extra_delay
        if isinstance(fault, Hang):
            return Plan(entry, "hang", delay)
        if isinstance(fault, Reset):
            return Plan(entry, "reset", delay)

        tokens = self._limits.tokens_view(cost)
        if isinstance(fault, ErrorEvent) and not x.stream:
            # No stream to break: the same failure arrives as an HTTP error status.
            etype = fault.error_type
            code = 529 if x.flavor == "anthropic" and etype in (None, "overloaded_error") else 500
            fault = Status(code=code, error_type=etype, message=fault.message, delay=fault.delay)
        if isinstance(fault, Status):
            headers = self._headers(x, sse=False, delay=delay, requests=requests, tokens=tokens)
            if fault.headers:
                names = {name.lower() for name, _ in fault.headers}
                headers = [h for h in headers if h[0] not in names]
                headers += [(name.lower(), value) for name, value in fault.headers]
            return Plan(entry, "respond", delay, fault.code, headers, _wire.error_body(x, fault))
        if not isinstance(
            fault,
            (
                Ok,
                StreamCut,
                StreamStall,
                MalformedChunk,
                MissingTerminator,
                FirstTokenDelay,
                ErrorEvent,
            ),
        ):
            raise TypeError(f"unsupported fault {fault!r}; build faults with Fault.*")

        tools = fault.tool_calls
        text = fault.text if fault.text is not None else "" if tools else _wire.DEFAULT_TEXT
        if x.prefill and text.startswith(x.prefill):
            text = text[len(x.prefill):]  # continue the answer the prefill began
        usage: Usage | None = fault.usage if isinstance(fault, Ok) else None
        headers = self._headers(x, sse=x.stream, delay=delay, requests=requests, tokens=tokens)
        if not x.stream:
            body = _wire.json_body(x, text, usage, tools)
            if isinstance(fault, FirstTokenDelay):
                return Plan(entry, "respond", delay + fault.seconds, 200, headers, body)
            if isinstance(fault, StreamCut):
                headers.append(("content-length", str(len(body))))
                steps: list[Step] = [body[: len(body) // 2], CUT]
                return Plan(entry, "respond", delay, 200, headers, steps=steps)
            if isinstance(fault, StreamStall):
                headers.append(("content-length", str(len(body))))
                steps = [fault.seconds, body]
                return Plan(entry, "respond", delay, 200, headers, steps=steps)
            if isinstance(fault, MalformedChunk):
                body = body[: len(body) // 2]
            return Plan(entry, "respond", delay, 200, headers, body)

        script = _wire.sse_script(x, text, usage, tools)
        events = script.events
        after = fault.after_events if not isinstance(fault, Ok) else None
        n = len(events) if after is None else min(after, len(events))
        if isinstance(fault, Ok):
            if fault.chunk_delay > 0:
                steps = []
                for i, event in enumerate(events):
                    if i:
                        steps.append(fault.chunk_delay)
                    steps.append(event)
            else:
                steps = list(events)
        elif isinstance(fault, StreamCut):
            steps = [*events[:n], CUT]
        elif isinstance(fault, StreamStall):
            steps = [*events[:n], fault.seconds, *events[n:]]
        elif isinstance(fault, MalformedChunk):
            steps = [*events[:n], _wire.malformed_event(x), *events[n:]]
        elif isinstance(fault, MissingTerminator):
            body_events = events[: len(events) - script.terminal]
            steps = list(body_events[:n])
        elif isinstance(fault, ErrorEvent):
            steps = [*events[:n], _wire.error_event(x, fault.error_type, fault.message, n)]
        else:
            first = script.first_content
            steps = [*events[:first], fault.seconds, *events[first:]]
        return Plan(entry, "respond", delay, 200, headers, steps=steps, chunked=True)


def _check_model(model: object) -> None:
    if model is not None and not isinstance(model, str):
        raise TypeError(f"model must be a model name (a string), got {model!r}")


def _check_prefill(mode: object) -> None:
    if mode is not None and mode not in _PREFILL_MODES:
        raise ValueError(f"prefill must be one of {_PREFILL_MODES} or None, got {mode!r}")


def _check_fault(fault: object) -> None:
    if not isinstance(fault, Fault) or fault.kind == "fault":
        raise TypeError(f"expected a fault built with Fault.*(), got {fault!r}")


def _max_tokens(obj: Mapping[str, Any]) -> int:
    for name in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
        value = obj.get(name)
        if isinstance(value, int) and value > 0:
            return value
    return 16


def _stream_time(fault: Fault) -> float:
    if isinstance(fault, StreamStall):
        return fault.seconds
    if isinstance(fault, FirstTokenDelay):
        return fault.seconds
    return 0.0
