"""The fleet's Redis link: one client per URL per process, bounded operations, outages survived.

Redis failure is not the app's failure: every operation is bounded by ``OP_TIMEOUT`` (and
skipped when the call has less left); on a timeout or a disconnect the link is down, logs one
WARNING per outage, and tries Redis again every ``PROBE_EVERY`` seconds to rejoin. ``redis``
is imported only when the first link connects.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import secrets
import socket
import threading
import time
from typing import Any, TypeVar

from .._errors import ConfigError
from .._instances import Instances
from .scripts import SCRIPTS, Script
from .stats import COUNTERS
from .tuning import CONNECT_SHARE, CONNECT_WAIT, OP_TIMEOUT, PROBE_EVERY

__all__ = ["Link", "call_budget", "link_for", "reset_links", "warm_link"]

logger = logging.getLogger("resilient_llm")

R = TypeVar("R")

#: What :meth:`Link._run` returns when Redis gave no reply (down, or it failed now).
UNANSWERED: Any = object()


class _Connecting(Exception):
    """Another caller is connecting the link (see ``Link._connected``)."""


def call_budget() -> float | None:
    """Seconds the current call has left (the tighter of its own deadline and any scope)."""
    from ..context.deadline import remaining
    from ..engine.call import current_call

    left = remaining()
    call = current_call()
    if call is not None:
        own = call.remaining()
        if own is not None:
            left = own if left is None else min(left, own)
    return left


class Link:
    """One Redis client per URL per process, with outage detection and rejoining.

    Every operation is bounded by ``OP_TIMEOUT`` (socket connect and read timeouts, no client
    retries) and is skipped when the current call has less than that left. The first failure
    marks the link down (one WARNING, ``fallbacks`` + 1); while down, operations return
    ``None`` at once except one every ``PROBE_EVERY`` seconds, whose success brings it back.
    """

    def __init__(self, url: str, *, timeout: float = OP_TIMEOUT) -> None:
        from .._redis import parse_redis_url

        self.url = url
        self.target = parse_redis_url(url, setting="RESILIENT_LLM_REDIS_URL")
        self.label = self.target.label
        self.timeout = timeout
        self.worker = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.up = True
        #: Jitter for the targets on this link (a simulated link seeds its own).
        self.rng = random.Random()
        self._lock = threading.Lock()
        self._retry_at = 0.0
        self._probing = False
        self._down_since = 0.0
        self._client: Any = None
        self._scripts: dict[str, Any] = {}
        #: The connect in flight: when it started, and set when it ended (either way).
        self._connecting: tuple[float, threading.Event] | None = None
        #: A URL the node contradicts, found by a connect no caller waited for: the next
        #: caller raises it (it is the caller's to fix, not an outage).
        self._misconfigured: ConfigError | None = None
        #: A client given up after a failure, closed by the next connect (not under callers
        #: whose operations may still be running on it).
        self._dropped: Any = None
        self._generation = 0

    def _connect(self) -> None:
        try:
            from redis.backoff import NoBackoff
            from redis.retry import Retry
        except ImportError:
            raise _missing_redis(self.target.setting, self.label) from None

        from .._redis import open_redis

        # One redirection (MOVED/ASK while a slot moves) is followed at once; nothing else is
        # retried: an operation must fit in ``timeout``.
        client = open_redis(
            self.target,
            socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
            decode_responses=True,
            protocol=2,
        )
        self._scripts = {script.name: client.register_script(script.source())
                         for script in SCRIPTS}
        self._client = client

    def now(self) -> float:
        """The clock round trips are timed on (a simulated link's is virtual)."""
        return time.monotonic()

    @property
    def serving(self) -> bool:
        """Up, and not waiting for a connect that outlasted ``CONNECT_WAIT`` (a name server
        slow to answer): meanwhile the targets pace locally, as while the link is down (the
        calls waited for the whole connect, one refill after another)."""
        if not self.up:
            return False
        connecting = self._connecting
        return self._client is not None or connecting is None \
            or time.monotonic() - connecting[0] <= CONNECT_WAIT

    def usable(self) -> bool:
        """False while Redis is known to be down and no re-probe is due."""
        if self.up:
            return True
        return time.monotonic() >= self._retry_at and not self._probing

    def call(self, script: Script[R], keys: list[str], args: list[Any]) -> R | None:
        """Run ``script`` and decode its reply; ``None`` when Redis is down, failed now, or
        the call has too little time left."""
        left = call_budget()
        if left is not None and left < self.timeout:
            COUNTERS.add("skipped")
            return None
        result = self._run(script, keys, args)
        if result is UNANSWERED:
            return None
        return script.decode(list(result) if isinstance(result, list) else [result])

    def _run(self, script: Script[Any], keys: list[str], args: list[Any]) -> Any:
        """``script``'s raw reply, or ``UNANSWERED`` when Redis is down or failed now."""
        probe = False
        with self._lock:
            if not self.up:
                if self._probing or time.monotonic() < self._retry_at:
                    return UNANSWERED
                self._probing = probe = True
        # (No ``import redis`` on this path: the connect imports it on a thread of its own,
        # and an import here while that one runs would wait for it, past any deadline.)
        try:
            result = self._connected()[script.name](keys=keys, args=args)
        except _Connecting:
            return UNANSWERED  # another caller is connecting: pace locally meanwhile
        except ConfigError:
            raise  # the URL contradicts the node (names it): the caller's to fix
        except Exception as exc:  # redis-py's errors, OSError, and its failures beyond them
            self._failed(exc)     # (a cluster node that served no slot yet: IndexError)
            return UNANSWERED
        finally:
            if probe:
                with self._lock:
                    self._probing = False
        COUNTERS.add("round_trips")
        if not self.up:
            self._rejoined()
        return result

    def _connected(self) -> dict[str, Any]:
        """The scripts; connecting first if needed. Connecting is I/O (the name lookup, which
        no socket timeout covers, then the node is asked whether it is a cluster node), so it
        runs on a thread of its own: callers wait for it at most ``CONNECT_WAIT`` from its
        start (and at most ``CONNECT_SHARE`` of their time left), then get
        :class:`_Connecting` and pace locally meanwhile. A name server slow to answer held
        the caller, and on an event loop every call of the loop, for the whole lookup."""
        with self._lock:
            scripts = self._ready()
            if scripts is not None:
                return scripts
            started, done = self._start_connect()
        wait = started + CONNECT_WAIT - time.monotonic()
        left = call_budget()
        if left is not None:  # a short call keeps most of its time for its attempt
            wait = min(wait, left * CONNECT_SHARE)
        if wait <= 0 or not done.wait(wait):
            raise _Connecting
        with self._lock:
            scripts = self._ready()
        if scripts is not None:
            return scripts
        raise _Connecting  # it failed: the connect reported the outage itself

    def warm(self) -> None:
        """Start connecting now (a client was built for this URL), so that its first call
        finds the link ready; never waits for the connect."""
        with self._lock:
            if self._client is None and self.up:
                self._start_connect()

    def _start_connect(self) -> tuple[float, threading.Event]:
        """Under the lock: the connect in flight, started on a thread of its own if none is.
        A thread that cannot start (a process at its thread limit) fails this operation, and
        the next one tries again: no connect is left pending."""
        if self._connecting is None:
            attempt = (time.monotonic(), threading.Event())
            threading.Thread(target=self._connect_in_background,
                             args=(attempt, self._generation),
                             name="resilient-llm-redis-connect", daemon=True).start()
            self._connecting = attempt
        return self._connecting

    def _ready(self) -> dict[str, Any] | None:
        """Under the lock: the scripts once connected, else ``None``; a contradiction the
        connect found is raised (once)."""
        if self._client is not None:
            return self._scripts
        misconfigured, self._misconfigured = self._misconfigured, None
        if misconfigured is not None:
            raise misconfigured
        return None

    def _connect_in_background(self, attempt: tuple[float, threading.Event],
                               generation: int) -> None:
        """Connect; on failure the link is down (reported here, once: the callers that waited
        only pace locally). A link closed meanwhile discards what it made."""
        with self._lock:
            dropped, self._dropped = self._dropped, None
        if dropped is not None:
            with contextlib.suppress(Exception):
                dropped.close()
        failure: BaseException | None = None
        try:
            self._connect()
        except ConfigError as exc:
            with self._lock:
                self._misconfigured = exc
        except Exception as exc:  # redis-py's errors, OSError, and its failures beyond them
            failure = exc
        with self._lock:
            if self._connecting is attempt:
                self._connecting = None
            stale = generation != self._generation
            client = self._client if stale else None
            if stale:
                self._client = None
        if client is not None:
            client.close()
        if failure is not None and not stale:
            self._failed(failure)
        attempt[1].set()

    def _failed(self, exc: BaseException) -> None:
        COUNTERS.add("errors")
        now = time.monotonic()
        with self._lock:
            self._retry_at = now + PROBE_EVERY
            # Reconnecting resolves the name again: the probe does it on the connect thread.
            if self._client is not None:
                self._dropped, self._client = self._client, None
            if not self.up:
                return
            self.up = False
            self._down_since = now
        COUNTERS.link_state(self, up=False)
        COUNTERS.add("fallbacks")
        from .._redis import describe_redis_failure

        logger.warning(
            "resilient-llm: Redis at %s cannot serve the fleet: %s; pacing locally at each "
            "target's fair share of its limits until it is back (retrying every %.0f s)",
            self.label, describe_redis_failure(exc, self.target), PROBE_EVERY,
        )

    def _rejoined(self) -> None:
        with self._lock:
            if self.up:
                return
            self.up = True
            down_for = time.monotonic() - self._down_since
        COUNTERS.link_state(self, up=True)
        COUNTERS.add("rejoins")
        logger.info("resilient-llm: Redis at %s is back after %.1f s; fleet coordination resumed",
                    self.label, down_for)

    def close(self) -> None:
        with self._lock:
            self._generation += 1  # a connect in flight discards its client
            clients = [self._client, self._dropped]
            self._client = self._dropped = None
        for client in clients:
            if client is not None:
                client.close()


_LINKS: Instances[tuple[str, int], Link] = Instances(lambda slot: Link(slot[0]))


def warm_link(url: str) -> None:
    """A client was built to share its limits through ``url``: import the Redis client here
    (once per process, on the constructing thread: an import on a call's path, while another
    thread runs the same import, waits for it past the call's deadline; not installed, a
    :class:`ConfigError` now rather than at the first call) and start connecting in the
    background."""
    link = link_for(url)
    try:
        import redis  # noqa: F401
    except ImportError:
        raise _missing_redis(link.target.setting, link.label) from None
    link.warm()


def _missing_redis(setting: str, label: str) -> ConfigError:
    return ConfigError(setting, label,
                       "the redis package is needed: pip install 'resilient-llm[redis]'")


def link_for(url: str) -> Link:
    """The process's link for ``url`` (a forked child gets its own: sockets are not shared)."""
    return _LINKS.get((url, os.getpid()))


def reset_links() -> None:
    """Close every link and zero the counters (tests)."""
    for link in _LINKS.drain():
        link.close()
    COUNTERS.reset()
