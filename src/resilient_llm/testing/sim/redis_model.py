"""Redis modelled in memory, on virtual time, running the fleet's own Lua scripts.

The simulator's fleets share one :class:`RedisModel`: the real ``fleet/lua/*.lua`` sources run
in an embedded Lua 5.1 (Redis's Lua version, through ``lupa``), with ``redis.call`` served by a
small command set — just what the scripts use — whose ``TIME`` reads the simulator's clock and
whose keys expire on virtual time. Replies follow Redis's conversions (a Lua number becomes an
integer, a table an array cut at its first nil, ``false`` a nil), so a script answers here what
it answers a real ``redis-server`` (``tests/test_redis_model.py`` checks it side by side).

:class:`ModelLink` is the fleet's ``Link`` for a simulated process: the same bounded-operation
rule (skipped when the call has less left than ``OP_TIMEOUT``), no sockets, a round trip that
takes no virtual time.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ...fleet.link import Link
from ...fleet.scripts import Script
from ...fleet.tuning import OP_TIMEOUT

__all__ = ["ModelLink", "RedisError", "RedisModel"]

Reply = int | str | list[Any] | None


class RedisError(Exception):
    """A command the model refuses, worded as Redis words it (``WRONGTYPE``, ``ERR ...``)."""


def _number_arg(value: float) -> str:
    """A Lua number as Redis passes it to a command: ``%.17g`` (integers without a point)."""
    return f"{value:.17g}"


def _score(text: str) -> tuple[float, bool]:
    """A sorted-set range bound: ``(value, exclusive)``."""
    exclusive = text.startswith("(")
    body = text[1:] if exclusive else text
    lowered = body.lower()
    if lowered in ("-inf", "+inf", "inf"):
        return (-math.inf if lowered == "-inf" else math.inf), exclusive
    try:
        return float(body), exclusive
    except ValueError:
        raise RedisError("ERR min or max is not a float") from None


class RedisModel:
    """An in-memory Redis whose time is ``clock()`` (virtual seconds).

    Hashes, sorted sets, strings and lists; ``TIME``, ``HGETALL``, ``HGET``, ``HMGET``,
    ``HSET``, ``HDEL``, ``HINCRBY``, ``ZADD``, ``ZREMRANGEBYSCORE``, ``ZCARD``, ``EXISTS``,
    ``PEXPIRE``, ``PTTL``, ``DEL``, ``GET``, ``SET``. A key past its expiry is gone (checked
    lazily, as Redis does on access); a hash or set left empty is deleted with its expiry.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        from lupa.lua51 import LuaRuntime

        self._clock = clock
        self._data: dict[str, Any] = {}
        self._expires: dict[str, float] = {}
        self._lua = LuaRuntime(unpack_returned_tuples=False, register_eval=False)
        self._compiled: dict[str, Any] = {}
        self._lua.execute(
            "redis = {}\n"
            "function redis.call(...) return __rllm_call(...) end\n"
        )
        self._lua.globals()["__rllm_call"] = self._from_lua
        #: Scripts run, for the simulator's reports.
        self.evals = 0

    # --- the scripts

    def eval(self, source: str, keys: Sequence[str], args: Sequence[Any]) -> Reply:
        """Run a script as ``EVAL``: ``KEYS`` and ``ARGV`` as strings, its reply as redis-py
        (``decode_responses``) hands it back."""
        body = self._compiled.get(source)
        if body is None:
            body = self._compiled[source] = self._lua.execute(
                f"return function()\n{source}\nend")
        lua_globals = self._lua.globals()
        lua_globals["KEYS"] = self._lua.table_from([str(k) for k in keys])
        lua_globals["ARGV"] = self._lua.table_from([self._arg(a) for a in args])
        self.evals += 1
        return self._reply(body())

    @staticmethod
    def _arg(value: Any) -> str:
        """An argument as redis-py encodes it."""
        if isinstance(value, bool):
            raise RedisError("invalid argument type bool: redis-py refuses booleans")
        if isinstance(value, float):
            return repr(value)
        return str(value)

    def _reply(self, value: Any) -> Reply:
        """A script's return value as Redis converts it (Lua → RESP → redis-py)."""
        if value is None or value is False:
            return None
        if value is True:
            return 1
        if isinstance(value, (int, float)):
            return int(value)  # Redis truncates a Lua number to an integer reply
        if isinstance(value, str):
            return value
        items: list[Any] = []
        index = 1
        while True:  # an array ends at its first nil
            item = value[index]
            if item is None:
                break
            items.append(self._reply(item))
            index += 1
        return items

    def _from_lua(self, name: Any, *args: Any) -> Any:
        """``redis.call`` from a script: Lua arguments in, a Lua value out."""
        words = [_number_arg(a) if isinstance(a, (int, float)) and not isinstance(a, bool)
                 else str(a) for a in args]
        reply = self.command(str(name), *words)
        return self._to_lua(reply)

    def _to_lua(self, reply: Reply) -> Any:
        if reply is None:
            return False
        if isinstance(reply, list):
            return self._lua.table_from([self._to_lua(item) for item in reply])
        return reply

    # --- the commands

    def command(self, name: str, *args: str) -> Reply:
        """Run one command (what a script's ``redis.call`` does), with string arguments."""
        handler = getattr(self, f"_cmd_{name.lower()}", None)
        if handler is None:
            raise RedisError(f"ERR unknown command '{name}' (the model implements only what the "
                             "fleet's scripts use)")
        result: Reply = handler(*args)
        return result

    def now(self) -> float:
        """The model's time, virtual seconds."""
        return self._clock()

    def _live(self, key: str) -> Any:
        at = self._expires.get(key)
        if at is not None and self._clock() >= at:
            del self._expires[key]
            self._data.pop(key, None)
        return self._data.get(key)

    def _typed(self, key: str, kind: type, create: bool = False) -> Any:
        value = self._live(key)
        if value is None:
            if not create:
                return None
            value = self._data[key] = kind()
        if not isinstance(value, kind):
            raise RedisError("WRONGTYPE Operation against a key holding the wrong kind of value")
        return value

    def _drop_if_empty(self, key: str) -> None:
        value = self._data.get(key)
        if value is not None and not isinstance(value, str) and not value:
            del self._data[key]
            self._expires.pop(key, None)

    def _cmd_time(self) -> Reply:
        now = self._clock()
        seconds = math.floor(now)
        micros = min(999_999, math.floor((now - seconds) * 1_000_000))
        return [str(seconds), str(micros)]

    def _cmd_hgetall(self, key: str) -> Reply:
        found = self._typed(key, dict) or {}
        return [item for pair in found.items() for item in pair]

    def _cmd_hget(self, key: str, field: str) -> Reply:
        found = self._typed(key, dict) or {}
        value: str | None = found.get(field)
        return value

    def _cmd_hmget(self, key: str, *fields: str) -> Reply:
        found = self._typed(key, dict) or {}
        return [found.get(field) for field in fields]

    def _cmd_hset(self, key: str, *pairs: str) -> Reply:
        if not pairs or len(pairs) % 2:
            raise RedisError("ERR wrong number of arguments for 'hset' command")
        return self._put(key, zip(pairs[::2], pairs[1::2], strict=True))

    def _put(self, key: str, entries: Iterable[tuple[str, Any]]) -> int:
        """Set ``entries`` in the hash or sorted set at ``key``: how many were new."""
        found = self._typed(key, dict, create=True)
        added = 0
        for name, value in entries:
            added += name not in found
            found[name] = value
        return added

    def _cmd_hdel(self, key: str, *fields: str) -> Reply:
        found = self._typed(key, dict)
        if found is None:
            return 0
        removed = sum(found.pop(field, None) is not None for field in fields)
        self._drop_if_empty(key)
        return removed

    def _cmd_hincrby(self, key: str, field: str, by: str) -> Reply:
        found = self._typed(key, dict, create=True)
        try:
            value = int(found.get(field, "0")) + int(by)
        except ValueError:
            raise RedisError("ERR hash value is not an integer") from None
        found[field] = str(value)
        return value

    def _cmd_zadd(self, key: str, *pairs: str) -> Reply:
        if not pairs or len(pairs) % 2:
            raise RedisError("ERR syntax error")
        return self._put(key, ((member, _score(score)[0])
                               for score, member in zip(pairs[::2], pairs[1::2], strict=True)))

    def _cmd_zremrangebyscore(self, key: str, low: str, high: str) -> Reply:
        found = self._typed(key, dict)
        if found is None:
            return 0
        (lo, lo_x), (hi, hi_x) = _score(low), _score(high)
        doomed = [m for m, s in found.items()
                  if (s > lo if lo_x else s >= lo) and (s < hi if hi_x else s <= hi)]
        for member in doomed:
            del found[member]
        self._drop_if_empty(key)
        return len(doomed)

    def _cmd_zcard(self, key: str) -> Reply:
        return len(self._typed(key, dict) or {})

    def _cmd_exists(self, *keys: str) -> Reply:
        return sum(self._live(key) is not None for key in keys)

    def _cmd_pexpire(self, key: str, ms: str) -> Reply:
        if self._live(key) is None:
            return 0
        self._expires[key] = self._clock() + int(ms) / 1000
        if int(ms) <= 0:
            self._live(key)
        return 1

    def _cmd_pttl(self, key: str) -> Reply:
        if self._live(key) is None:
            return -2
        at = self._expires.get(key)
        return -1 if at is None else round((at - self._clock()) * 1000)

    def _cmd_del(self, *keys: str) -> Reply:
        removed = 0
        for key in keys:
            removed += self._live(key) is not None
            self._data.pop(key, None)
            self._expires.pop(key, None)
        return removed

    def _cmd_get(self, key: str) -> Reply:
        value: str | None = self._typed(key, str)
        return value

    def _cmd_set(self, key: str, value: str) -> Reply:
        self._data[key] = value
        self._expires.pop(key, None)
        return "OK"


#: Each script's rendered source (rendering reads the package's resources).
_SOURCES: dict[str, str] = {}


class ModelLink(Link):
    """The fleet's ``Link`` for one simulated process, talking to a :class:`RedisModel`.

    As the real link does, an operation is skipped when the current call has less than
    ``OP_TIMEOUT`` left; the model never fails, so the link is always up.
    """

    def __init__(self, model: RedisModel, *, worker: str, seed: int = 0) -> None:
        # Not the real link's constructor: no URL, no client, no sockets.
        self.model = model
        self.url = self.label = "model"
        self.timeout = OP_TIMEOUT
        self.worker = worker
        self.up = True
        self.rng = random.Random(seed)

    def now(self) -> float:
        return self.model.now()

    @property
    def serving(self) -> bool:
        return True

    def usable(self) -> bool:
        return True

    def _run(self, script: Script[Any], keys: list[str], args: list[Any]) -> Any:
        source = _SOURCES.get(script.name)
        if source is None:
            source = _SOURCES[script.name] = script.source()
        return self.model.eval(source, keys, args)

    def close(self) -> None:
        return None
