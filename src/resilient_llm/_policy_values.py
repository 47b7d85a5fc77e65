"""What each :class:`~resilient_llm.Policy` setting accepts: the words of its errors, the
parsers that turn environment text into values, and the numeric bounds.

Kept apart from the model so that the rules read as one table and the model as one class.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, NoReturn, TypeVar

__all__ = [
    "ACCEPTED",
    "BOUNDS",
    "OPTIONAL_FILES",
    "OPTIONAL_PARSERS",
    "SECONDS_FIELDS",
    "STORE_SCHEMES",
    "URL_FIELDS",
    "FrozenMap",
    "as_seconds",
    "ascii_number",
    "json_mapping",
    "parse_chain_map",
    "parse_continuation",
    "parse_recovery",
    "region_name",
]

K = TypeVar("K")
V = TypeVar("V")


class FrozenMap(dict[K, V]):
    """A mapping setting of a :class:`~resilient_llm.Policy`: a dict (so it serializes as one)
    that cannot change. A policy is shared by every call of its clients; an edit in place
    would change all of them, past the validation that built it."""

    __slots__ = ()

    def _refuse(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError("a Policy's settings cannot change in place: build another with "
                        "policy.replace(...)")

    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(frozenset(self.items()))

    def __reduce__(self) -> tuple[type[FrozenMap[K, V]], tuple[dict[K, V]]]:
        return type(self), (dict(self),)

    def __copy__(self) -> FrozenMap[K, V]:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> FrozenMap[K, V]:
        return self  # its keys and values are strings and tuples of them


MAX_DEADLINE = 24 * 3600.0
_MIN_DEADLINE = 0.01
#: Longest path through fallback chains (a chain's fallback may have its own chain).
_MAX_CHAIN_DEPTH = 32
_REGION = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}", re.ASCII)
_INT_TEXT = re.compile(r"[+-]?[0-9]+", re.ASCII)
_FLOAT_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
#: Fields that hold URLs (or a mapping of URLs): shown only through ``redact_url``.
URL_FIELDS = ("idempotency_store", "redis_url", "region_endpoints")
STORE_SCHEMES = ("memory", "sqlite:///", "redis://", "rediss://")

# What each setting accepts, in words: used in every ConfigError.
ACCEPTED: dict[str, str] = {
    "enabled": "expected true or false",
    "deadline": f"expected seconds, a number from {_MIN_DEADLINE:g} to {MAX_DEADLINE:g}",
    "max_attempts": "expected a whole number from 1 to 20 (attempts per call across all targets)",
    "fallbacks": (
        'expected a JSON object mapping a model to a list of fallback models, e.g. '
        '{"gpt-4.1": ["gpt-4.1-mini"]} ("*" for any model), with no cycles'
    ),
    "context_fallbacks": (
        'expected a JSON object mapping a model to a list of larger-context models, e.g. '
        '{"gpt-4.1-mini": ["gpt-4.1"]} ("*" for any model), with no cycles'
    ),
    "first_token_timeout": "expected seconds, a number > 0",
    "stream_idle_timeout": "expected seconds, a number > 0",
    "stream_recovery": ("expected continue or off (resume a stream that broke after its first "
                        "output, or raise StreamInterrupted)"),
    "stream_continuation": (
        'expected a JSON object mapping a model name, a name prefix ending in "*" or "*" to '
        'prefill or restart, e.g. {"deepseek-*": "prefill", "*": "restart"}'
    ),
    "priority": "expected interactive or batch",
    "idempotency_store": "expected memory, sqlite:///PATH or redis://HOST:PORT/DB",
    "redis_url": "expected redis://HOST:PORT/DB or rediss://...",
    "cache_namespace": (
        "expected a non-empty tenant name of at most 128 characters, without control characters"
    ),
    "allowed_regions": (
        "expected a comma-separated list of region names (letters, digits, - and _), e.g. us,eu"
    ),
    "region": (
        "expected a region name of letters, digits, - and _ such as us or eu-west-1 "
        "(where this client's endpoint is)"
    ),
    "region_endpoints": (
        'expected a JSON object mapping a region name to an http(s) base URL with a host, e.g. '
        '{"eu": "https://eu.api.openai.com/v1"}'
    ),
    "max_backoff": "expected seconds, a number > 0 and ≤ 300",
    "max_response_bytes": (
        "expected a whole number of bytes from 65536 (64 KiB) to 17179869184 (16 GiB), "
        "e.g. 67108864 (64 MiB)"
    ),
    "hedge": "expected true or false",
    "hedge_budget": "expected a share of requests from 0.001 to 0.5, e.g. 0.05",
    "hedge_delay": "expected seconds, a number > 0 (unset: twice the p90 time to first output)",
    "idempotency_secret": "expected a secret of at least 16 characters",
    "idempotency_on_expired_lease": "expected at_most_once or at_least_once",
    "idempotency_fail_open": "expected true or false",
    "tool_reserve": "expected seconds, a number ≥ 0",
    "cache_secret": "expected a secret of at least 16 characters",
    "prompt_cache_key": "expected true or false",
    "cache_breakpoint": "expected true or false",
    "lint_prompts": "expected off, warn or strict",
    "stable_tool_order": "expected true or false",
    "response_cache": "expected true or false",
    "response_cache_ttl": "expected seconds, a number > 0",
    "response_cache_size": "expected a whole number from 1 to 1000000",
    # Telemetry (owner: _telemetry.py, _capture.py, _pricing.py).
    "telemetry": "expected true or false",
    "capture_content": "expected true or false",
    "capture_file": "expected a file path in an existing directory (JSON lines are appended)",
    "prices": (
        'expected a JSON object of USD prices per million tokens, e.g. '
        '{"gpt-4.1": {"input": 2.0, "output": 8.0, "cache_read": 0.5}}'
    ),
    "prices_file": "expected the path of a readable JSON price file (same format as PRICES)",
}


def as_seconds(value: Any) -> Any:
    if isinstance(value, timedelta):
        return value.total_seconds()
    return value


def ascii_number(value: Any, *, integer: bool) -> Any:
    """Numbers in text are ASCII decimals: ``float("٣")`` is 3.0, which no one meant."""
    if isinstance(value, bool):  # an int to Python, never a number of seconds or attempts
        raise ValueError("a number, not true or false")
    pattern = _INT_TEXT if integer else _FLOAT_TEXT
    if isinstance(value, str) and value.strip() and not pattern.fullmatch(value.strip()):
        raise ValueError("not a plain ASCII decimal number")
    return value


def _positive_finite(value: float) -> float:
    if not math.isfinite(value) or value <= 0:
        raise ValueError("must be > 0 and finite")
    return value


def json_mapping(value: Any) -> Mapping[Any, Any]:
    """A mapping setting: a mapping, a JSON object in text, or unset (``None``/``""``) as ``{}``."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        value = json.loads(value)
    if not isinstance(value, Mapping):
        raise ValueError("not a mapping")
    return value


def parse_chain_map(value: Any) -> Any:
    value = json_mapping(value)
    chains: dict[str, tuple[str, ...]] = {}
    for model, chain in value.items():
        if not isinstance(model, str) or not model.strip():
            raise ValueError("model names must be non-empty strings")
        if isinstance(chain, str) or not isinstance(chain, (list, tuple)):
            raise ValueError(f"the chain of {model!r} must be a list of model names")
        if not all(isinstance(m, str) and m.strip() for m in chain):
            raise ValueError(f"the chain of {model!r} holds an empty or non-string name")
        if model in chain or len(set(chain)) != len(chain):
            raise ValueError(f"the chain of {model!r} repeats a model")
        # Entries that can never apply: chains are looked up by the model name alone.
        if not chain:
            raise ValueError(f"the chain of {model!r} is empty, so it would never apply")
        if "@" in model:
            raise ValueError(
                f"{model!r} would never apply: chains are keyed by model name, without @region"
            )
        if "*" in chain:
            raise ValueError(f"the chain of {model!r} names '*', which would never apply")
        chains[model] = tuple(chain)
    _reject_cycles(chains)
    return chains


def _reject_cycles(chains: Mapping[str, tuple[str, ...]]) -> None:
    """A chain may not lead back to where it started, nor run deeper than ``_MAX_CHAIN_DEPTH``.

    Iterative, so a hostile chain of any length is a clear error, never a ``RecursionError``.
    """
    done: set[str] = set()
    for start in chains:
        if start in done:
            continue
        path: list[str] = [start]
        on_path = {start}
        pending: list[list[str]] = [list(reversed(chains.get(start, ())))]
        while pending:
            if not pending[-1]:
                pending.pop()
                finished = path.pop()
                on_path.discard(finished)
                done.add(finished)
                continue
            nxt = pending[-1].pop()
            if nxt in on_path:
                cycle = " → ".join([*path[path.index(nxt):], nxt])
                raise ValueError(f"fallback cycle {cycle}")
            if nxt in done:
                continue
            if len(path) >= _MAX_CHAIN_DEPTH:
                raise ValueError(
                    f"fallback chains nest too deep (more than {_MAX_CHAIN_DEPTH} models "
                    f"from {start!r})"
                )
            path.append(nxt)
            on_path.add(nxt)
            pending.append(list(reversed(chains.get(nxt, ()))))


_CONTINUATIONS = ("prefill", "restart")


def parse_continuation(value: Any) -> Any:
    """Model patterns (a name, ``prefix*`` or ``*``) to ``prefill`` or ``restart``."""
    modes: dict[str, str] = {}
    for model, mode in json_mapping(value).items():
        if not isinstance(model, str) or not model.strip():
            raise ValueError("model patterns must be non-empty strings")
        if "*" in model[:-1]:
            raise ValueError(f"{model!r}: '*' is only accepted at the end of a pattern")
        if "@" in model:
            raise ValueError(f"{model!r} would never apply: patterns match model names, "
                             "without @region")
        if mode not in _CONTINUATIONS:
            raise ValueError(f"the mode of {model!r} must be prefill or restart")
        modes[model] = mode
    return modes


def parse_recovery(value: Any) -> Any:
    if isinstance(value, bool):
        return "continue" if value else "off"
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("continue", "on", "true", "1"):  # "on": its name before 2026-12-07
            return "continue"
        if lowered in ("off", "false", "0"):
            return "off"
    raise ValueError("expected continue or off")


def _parse_hedge_delay(value: Any) -> float:
    return _positive_finite(float(as_seconds(ascii_number(value, integer=False))))


def _parse_region(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("bad region")
    return region_name(value)


def _parse_regions(value: Any) -> frozenset[str]:
    items = value.split(",") if isinstance(value, str) else list(value)
    regions = frozenset(region_name(str(r)) for r in items)
    if not regions:
        raise ValueError("empty region")
    return regions


def _parse_prices(value: Any) -> Any:
    from .telemetry.pricing import canonical_prices

    return canonical_prices(value)


def _check_capture_path(value: str) -> str:
    import os

    path = os.path.abspath(os.path.expanduser(value))
    if not os.path.isdir(os.path.dirname(path)):
        raise ValueError("the directory does not exist")
    if os.path.isdir(path):
        raise ValueError("a directory, not a file")
    return path


def _check_prices_path(value: str) -> str:
    from .telemetry.pricing import read_prices_file

    read_prices_file(value)  # fail at construction, not at the first call
    return value


#: Optional settings that ``None`` or ``""`` leaves unset; anything else goes to the parser.
OPTIONAL_PARSERS: dict[str, Callable[[Any], Any]] = {
    "hedge_delay": _parse_hedge_delay,
    "region": _parse_region,
    "allowed_regions": _parse_regions,
    "prices": _parse_prices,
}
#: Optional file paths that ``None`` or blank text leaves unset; anything else is checked.
OPTIONAL_FILES: dict[str, Callable[[str], str]] = {
    "capture_file": _check_capture_path,
    "prices_file": _check_prices_path,
}
#: Settings given in seconds (a number or a ``timedelta``).
SECONDS_FIELDS = ("deadline", "first_token_timeout", "stream_idle_timeout", "max_backoff",
                   "tool_reserve", "response_cache_ttl")
#: Numeric ranges: (low, high, low excluded). Infinity means "no upper bound" but a finite value.
BOUNDS: dict[str, tuple[float, float, bool]] = {
    "deadline": (_MIN_DEADLINE, MAX_DEADLINE, False),
    "first_token_timeout": (0.0, math.inf, True),
    "stream_idle_timeout": (0.0, math.inf, True),
    "max_backoff": (0.0, 300.0, True),
    "tool_reserve": (0.0, math.inf, False),
    "response_cache_ttl": (0.0, math.inf, True),
    "response_cache_size": (1, 1_000_000, False),
    "hedge_budget": (0.001, 0.5, False),
    "max_attempts": (1, 20, False),
    "max_response_bytes": (64 * 1024, 16 * 1024**3, False),
}

def region_name(text: str) -> str:
    name = text.strip().lower()
    if not _REGION.fullmatch(name):
        raise ValueError(f"{name[:40]!r} is not a region name")
    return name
