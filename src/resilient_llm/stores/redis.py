"""The Redis ledger: one ledger for a fleet of workers.

Each key is a hash ``PREFIX{KEY}`` (state, fingerprint, owner token, attempt, payload) kept for
the retention period, plus a lease ``PREFIX{KEY}:lease`` created with ``SET NX PX``: the lease
expires on the Redis server, so clients' clocks never matter. ``begin`` is one Lua script
(create-if-absent plus lease, or replay, or conflict, or takeover), so it is atomic across the
fleet. The ``{KEY}`` hash tag keeps both keys in one Redis Cluster slot.

``redis`` is imported when a ``RedisLedger`` is created, never by ``import resilient_llm``.
"""

from __future__ import annotations

import contextlib
import functools
import math
import secrets
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from .._errors import IdempotencyStoreUnavailable
from .._redis import describe_redis_failure, parse_redis_url
from .ledger import DEFAULT_RETENTION, Begin, decode_secret, io_timeout

__all__ = ["RedisLedger"]

_T = TypeVar("_T")

# KEYS: record, lease.  ARGV: fingerprint, token, lease ms, retention ms, takeover (0/1).
_BEGIN = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  redis.call('HSET', KEYS[1], 'state', 'running', 'fp', ARGV[1], 'token', ARGV[2], 'attempt', 1)
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3])
  return {'run', 1, ''}
end
local attempt = tonumber(redis.call('HGET', KEYS[1], 'attempt'))
if redis.call('HGET', KEYS[1], 'fp') ~= ARGV[1] then
  return {'conflict', attempt, ''}
end
if state ~= 'running' then
  return {state, attempt, redis.call('HGET', KEYS[1], 'payload')}
end
if redis.call('HGET', KEYS[1], 'token') == ARGV[2] then
  return {'run', attempt, ''}
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  return {'wait', attempt, ''}
end
if ARGV[5] ~= '1' then
  return {'expired', attempt, ''}
end
redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3])
attempt = redis.call('HINCRBY', KEYS[1], 'attempt', 1)
redis.call('HSET', KEYS[1], 'token', ARGV[2])
return {'run', attempt, ''}
"""

# KEYS: record, lease.  ARGV: token, new state ('' deletes the key), payload, retention ms.
# Returns 1 (recorded), 0 (another token took the key over) or -1 (the record is gone).
_FINISH = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  return -1
end
local token = redis.call('HGET', KEYS[1], 'token')
if token ~= ARGV[1] then
  return 0
end
if state ~= 'running' then
  return 1
end
redis.call('DEL', KEYS[2])
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
  return 1
end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'payload', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""

# KEYS: record, lease.  ARGV: token.
_ABANDON = """
if redis.call('HGET', KEYS[1], 'token') == ARGV[1]
   and redis.call('HGET', KEYS[1], 'state') == 'running' then
  redis.call('DEL', KEYS[2])
end
return 0
"""


class RedisLedger:
    """A ledger in Redis (``RESILIENT_LLM_IDEMPOTENCY_STORE=redis://HOST:PORT/DB``).

    Pass a URL (a single server, or any node of a Redis Cluster: see :mod:`resilient_llm._redis`),
    or an existing ``redis.Redis`` / ``redis.cluster.RedisCluster`` client as ``client=``. A
    connection failure is retried twice within about 0.1 s, then the store counts as
    unavailable.
    """

    blocking = True

    def __init__(
        self,
        url: str | None = None,
        *,
        client: Any = None,
        prefix: str = "resilient_llm:idem:",
        retention: float = DEFAULT_RETENTION,
        socket_timeout: float = 5.0,
    ) -> None:
        if (url is None) == (client is None):
            raise ValueError("pass exactly one of url= or client=")
        self._target = (
            parse_redis_url(url, setting="RESILIENT_LLM_IDEMPOTENCY_STORE")
            if url is not None else None
        )
        self._url = self._target.label if self._target is not None else repr(client)
        self._socket_timeout = socket_timeout
        self._client: Any = None
        self._prefix = prefix
        self._retention_ms = max(1, int(retention * 1000))
        self._secret: bytes | None = None
        self._epoch: str | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()
        self._connect_lock = threading.Lock()
        if client is not None:
            self._use(client)

    def _use(self, client: Any) -> None:
        self._begin = client.register_script(_BEGIN)
        self._finish_script = client.register_script(_FINISH)
        self._abandon = client.register_script(_ABANDON)
        self._client = client

    def _connect(self) -> None:
        """Open the client on first use: a cluster node is detected by asking it, which is I/O
        and fails like any operation (as ``IdempotencyStoreUnavailable``)."""
        with self._connect_lock:
            if self._client is not None or self._target is None:
                return
            from redis.backoff import ExponentialBackoff
            from redis.retry import Retry

            from .._redis import open_redis

            self._use(open_redis(
                self._target,
                socket_timeout=self._socket_timeout,
                socket_connect_timeout=min(self._socket_timeout, 2.0),
                retry=Retry(ExponentialBackoff(cap=0.1, base=0.02), retries=2),
                decode_responses=True,
                protocol=2,  # RESP2: also served by Redis < 6, which lacks HELLO
            ))

    def _keys(self, key: str) -> list[str]:
        record = f"{self._prefix}{{{key}}}"
        return [record, record + ":lease"]

    def _call(self, work: Callable[[], _T], *,
              late: Callable[[_T], None] | None = None) -> _T:
        """Run ``work`` against Redis, ending by the caller's deadline.

        redis-py's socket timeouts are fixed per connection, so under a deadline the work runs
        on a helper thread and the caller stops waiting when the deadline comes; the thread
        ends within the socket timeouts. ``late`` gets the answer the caller stopped waiting
        for, if one comes (on the helper thread): what the work did must not be lost.
        """
        from redis.exceptions import RedisError

        limit = io_timeout(math.inf)

        def connected_work() -> _T:
            if self._client is None:
                self._connect()
            return work()

        try:
            if limit == math.inf:
                return connected_work()
            if limit <= 0:
                raise IdempotencyStoreUnavailable(
                    f"idempotency store {self._url} was not asked: no time is left of the "
                    "caller's deadline"
                )
            future: Future[_T] = self._pool().submit(connected_work)
            try:
                return future.result(timeout=limit)
            except TimeoutError:
                if late is not None:
                    future.add_done_callback(functools.partial(_answered_late, late))
                raise IdempotencyStoreUnavailable(
                    f"idempotency store {self._url} did not answer within the {limit:.2f} s "
                    "left of the caller's deadline"
                ) from None
        except (RedisError, IndexError) as exc:  # (a cluster node serving no slot yet:
            # redis-py's IndexError; the ledger fails closed as for any unreachable store)
            assert self._target is not None or self._client is not None
            what = (describe_redis_failure(exc, self._target) if self._target is not None
                    else f"{type(exc).__name__}: {exc}")
            raise IdempotencyStoreUnavailable(
                f"idempotency store {self._url} is unavailable ({what})"
            ) from exc

    def _pool(self) -> ThreadPoolExecutor:
        with self._executor_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=8, thread_name_prefix="resilient-llm-redis-ledger"
                )
            return self._executor

    def begin(self, key: str, fingerprint: str, *, lease: float, takeover: bool) -> Begin:
        """See :meth:`~resilient_llm.stores.Ledger.begin`."""
        token = secrets.token_hex(16)
        lease_ms = max(1, int(lease * 1000))
        if not takeover:
            lost = self._call(self._lost_history)
            if lost is not None:
                return Begin("lost", detail=lost)

        def release(answer: tuple[Any, ...]) -> None:
            # The caller was told the effect did not run: a claim that came anyway is freed,
            # or it would hold the key until its lease ran out and then read as "outcome
            # unknown" although nothing ran.
            if answer[0] == "run":
                with contextlib.suppress(Exception):
                    self._finish_script(keys=self._keys(key),
                                        args=[token, "", "", self._retention_ms])

        action, attempt, payload = self._call(lambda: self._begin(
            keys=self._keys(key),
            args=[fingerprint, token, lease_ms, self._retention_ms, "1" if takeover else "0"],
        ), late=release)
        attempt = int(attempt)
        if action == "run":
            return Begin("run", token=token, attempt=attempt)
        if action in ("succeeded", "failed"):
            return Begin("replay", succeeded=action == "succeeded", payload=_text(payload),
                         attempt=attempt)
        if action in ("wait", "conflict", "expired"):
            return Begin(action, attempt=attempt)
        raise IdempotencyStoreUnavailable(f"idempotency store {self._url} answered {action!r}")

    @property
    def epoch_key(self) -> str:
        """The key of the epoch marker (delete it to accept a loss of history)."""
        return self._prefix + "epoch"

    def _lost_history(self) -> str | None:
        """Why Redis no longer holds the history this ledger saw, or ``None`` when it does.

        The epoch is a random id written at first use. Redis restarted without persistence
        (or flushed) has no epoch, or a new one: the first worker that notices writes
        ``lost`` there, so every worker, new ones too, fails closed until an operator deletes
        the key after checking the side effects in flight.
        """
        client, name = self._client, self.epoch_key
        # The epoch this ledger knew before reading: another thread may adopt one meanwhile,
        # and a marker read as absent before that is no marker that vanished (a fresh ledger
        # used by 16 threads at once marked itself lost, failing every worker closed).
        known = self._epoch
        stored = _text(client.get(name))
        if stored is None and known is None:
            client.set(name, secrets.token_hex(16), nx=True)
            stored = _text(client.get(name))
        if stored == "lost" or stored is None or (known not in (None, stored)):
            self._mark_lost()  # adopt the next epoch once an operator deleted the marker
            return ("Redis lost its history (restarted without persistence, flushed or "
                    f"replaced): the epoch marker {name} is gone or changed")
        self._epoch = stored
        return None

    def _finish(self, key: str, token: str, state: str, payload: str) -> bool:
        done = int(self._call(lambda: self._finish_script(
            keys=self._keys(key), args=[token, state, payload, self._retention_ms]
        )))
        if done < 0:
            # The record of an effect that was running is gone: Redis restarted empty (or was
            # flushed, or evicted it) during the body. A worker started after the restart would
            # see no epoch and no record and run the effect again: leave the tombstone now.
            self._call(self._mark_lost)
        return done > 0

    def _mark_lost(self) -> None:
        self._client.set(self.epoch_key, "lost")
        self._epoch = None

    def complete(self, key: str, token: str, result: str) -> bool:
        """See :meth:`~resilient_llm.stores.Ledger.complete`."""
        return self._finish(key, token, "succeeded", result)

    def fail(self, key: str, token: str, error: str, *, retryable: bool) -> bool:
        """See :meth:`~resilient_llm.stores.Ledger.fail`."""
        return self._finish(key, token, "" if retryable else "failed", error)

    def abandon(self, key: str, token: str) -> None:
        """See :meth:`~resilient_llm.stores.Ledger.abandon`."""
        self._call(lambda: self._abandon(keys=self._keys(key), args=[token]))

    def forget(self, key: str) -> None:
        """See :meth:`~resilient_llm.stores.Ledger.forget`."""
        self._call(lambda: self._client.delete(*self._keys(key)))

    def secret(self) -> bytes:
        """See :meth:`~resilient_llm.stores.Ledger.secret`: created once, kept in Redis."""
        if self._secret is None:
            name = self._prefix + "secret"

            def work() -> Any:
                self._client.set(name, secrets.token_hex(32), nx=True)
                return self._client.get(name)

            value = _text(self._call(work))
            if not value:
                raise IdempotencyStoreUnavailable(
                    f"idempotency store {self._url} lost its secret"
                )
            self._secret = decode_secret(value, self._url)
        return self._secret

    def close(self) -> None:
        """Close the connection pool."""
        if self._client is not None:
            with contextlib.suppress(Exception):  # closing is best effort
                self._client.close()
        if self._executor is not None:
            self._executor.shutdown(wait=False)

    def __repr__(self) -> str:
        return f"RedisLedger({self._url!r})"


def _answered_late(late: Callable[[Any], None], future: Future[Any]) -> None:
    if not future.cancelled() and future.exception() is None:
        late(future.result())


def _text(value: Any) -> str | None:
    if value is None or value is False:
        return None
    if isinstance(value, bytes):
        return value.decode()
    return str(value)
