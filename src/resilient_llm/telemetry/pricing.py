"""Token usage in one shape, and an optional price table that turns it into cost per call.

Providers count tokens differently: OpenAI's ``prompt_tokens`` include cached tokens, Anthropic's
``input_tokens`` exclude them. :class:`TokenUsage` follows the OpenTelemetry convention (input
includes cache reads and writes), so metrics, spans and cost agree across providers.

Prices come only from configuration (``RESILIENT_LLM_PRICES`` JSON or
``RESILIENT_LLM_PRICES_FILE``), never from the network: a price list fetched at run time would
make cost figures change without a deploy. Amounts are per million tokens, as on the providers'
pricing pages::

    {"gpt-4.1": {"input": 2.0, "output": 8.0, "cache_read": 0.5},
     "claude-sonnet-4-6": {"input": 3, "output": 15, "cache_read": 0.3, "cache_write": 3.75},
     "gpt-4.1-mini*": {"input": 0.4, "output": 1.6}}

``cache_read`` and ``cache_write`` default to ``input`` (an upper bound when they are unknown);
a trailing ``*`` matches a model-name prefix (the longest prefix wins, an exact name first).
Only the attempt that served the answer is billed: failed attempts return no usage, so they
never count as completions.
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Cost",
    "Price",
    "PriceTable",
    "TokenUsage",
    "canonical_prices",
    "load_prices",
    "read_prices_file",
    "token_usage",
]

_PER = 1_000_000
_FIELDS = ("input", "output", "cache_read", "cache_write")
_MAX_MODELS = 10_000


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Billable tokens of one call; ``input_tokens`` includes cache reads and cache writes."""

    input_tokens: int
    output_tokens: int
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def uncached_input_tokens(self) -> int:
        """Input tokens billed at the plain input price."""
        return max(0, self.input_tokens - self.cache_read_tokens - self.cache_write_tokens)


def _get(obj: Any, name: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0
    return max(0, int(value))


def token_usage(usage: Any, provider: str | None = None) -> TokenUsage | None:
    """Normalise a provider's usage (SDK object or parsed JSON) to :class:`TokenUsage`.

    Understands OpenAI chat completions and embeddings (``prompt_tokens``), the Responses API
    (``input_tokens`` with ``input_tokens_details``) and Anthropic messages (``input_tokens``
    excluding ``cache_read_input_tokens`` and ``cache_creation_input_tokens``). ``None`` when
    ``usage`` carries no token counts.
    """
    if usage is None:
        return None
    prompt = _get(usage, "prompt_tokens")
    if prompt is not None:  # OpenAI chat completions / embeddings
        details = _get(usage, "prompt_tokens_details")
        out_details = _get(usage, "completion_tokens_details")
        return TokenUsage(
            input_tokens=_int(prompt),
            output_tokens=_int(_get(usage, "completion_tokens")),
            cache_read_tokens=_int(_get(details, "cached_tokens")) if details else 0,
            cache_write_tokens=_int(_get(details, "cache_write_tokens")) if details else 0,
            reasoning_tokens=_int(_get(out_details, "reasoning_tokens")) if out_details else 0,
        )
    raw_input = _get(usage, "input_tokens")
    output = _get(usage, "output_tokens")
    if raw_input is None and output is None:
        return None
    read = _get(usage, "cache_read_input_tokens")
    write = _get(usage, "cache_creation_input_tokens")
    if provider == "anthropic" or read is not None or write is not None:
        read_n, write_n = _int(read), _int(write)
        return TokenUsage(
            input_tokens=_int(raw_input) + read_n + write_n,
            output_tokens=_int(output),
            cache_read_tokens=read_n,
            cache_write_tokens=write_n,
        )
    details = _get(usage, "input_tokens_details")  # OpenAI Responses API
    out_details = _get(usage, "output_tokens_details")
    return TokenUsage(
        input_tokens=_int(raw_input),
        output_tokens=_int(output),
        cache_read_tokens=_int(_get(details, "cached_tokens")) if details else 0,
        cache_write_tokens=_int(_get(details, "cache_write_tokens")) if details else 0,
        reasoning_tokens=_int(_get(out_details, "reasoning_tokens")) if out_details else 0,
    )


@dataclass(frozen=True, slots=True)
class Price:
    """Prices in USD per million tokens."""

    input: float
    output: float
    cache_read: float
    cache_write: float


@dataclass(frozen=True, slots=True)
class Cost:
    """What one call cost, in ``currency``, split by kind of token."""

    model: str
    total: float
    input: float
    output: float
    cache_read: float
    cache_write: float
    currency: str = "USD"


def _price_value(model: str, name: str, value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(
            f"{where}: price {name!r} of {model!r} must be a number (USD per million "
            f"tokens), not {type(value).__name__}"
        )
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{where}: price {name!r} of {model!r} must be finite and ≥ 0")
    return number


def _parse(data: Any, where: str) -> dict[str, Price]:
    if not isinstance(data, Mapping):
        raise ValueError(
            f"{where}: expected a JSON object mapping model names to prices, e.g. "
            '{"gpt-4.1": {"input": 2.0, "output": 8.0, "cache_read": 0.5}}'
        )
    if len(data) > _MAX_MODELS:
        raise ValueError(f"{where}: {len(data)} models; at most {_MAX_MODELS} are accepted")
    table: dict[str, Price] = {}
    for model, entry in data.items():
        if not isinstance(model, str) or not model.strip() or model.strip() == "*":
            raise ValueError(f"{where}: model names must be non-empty strings, got {model!r}")
        if "*" in model[:-1]:
            raise ValueError(f"{where}: {model!r}: '*' is only accepted at the end of a name")
        if not isinstance(entry, Mapping):
            raise ValueError(
                f"{where}: the prices of {model!r} must be an object with input and output"
            )
        unknown = sorted(set(entry) - set(_FIELDS))
        if unknown:
            raise ValueError(
                f"{where}: {model!r} has unknown price fields {unknown}; accepted: "
                f"{', '.join(_FIELDS)}"
            )
        missing = [name for name in ("input", "output") if name not in entry]
        if missing:
            raise ValueError(f"{where}: {model!r} lacks {' and '.join(missing)}")
        values = {name: _price_value(model, name, entry[name], where) for name in entry}
        table[model] = Price(
            input=values["input"],
            output=values["output"],
            cache_read=values.get("cache_read", values["input"]),
            cache_write=values.get("cache_write", values["input"]),
        )
    return table


def canonical_prices(value: Any, *, where: str = "prices") -> str:
    """Validate a price table (JSON text or a mapping) and return it as canonical JSON."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: not valid JSON ({exc.msg} at position {exc.pos})") from None
    table = _parse(value, where)
    return json.dumps(
        {model: {name: getattr(p, name) for name in _FIELDS} for model, p in table.items()},
        sort_keys=True,
        separators=(",", ":"),
    )


#: The largest price file read (bytes): a price table is kilobytes; a bigger file is a mistake.
MAX_PRICES_FILE = 4 * 1024 * 1024


def read_prices_file(path: str) -> str:
    """Read and validate a price file; return its table as canonical JSON.

    Only a regular file of at most ``MAX_PRICES_FILE`` bytes is read: a device such as
    ``/dev/urandom`` would never end, and opening a FIFO blocks until a writer appears, so
    both are refused before they are opened for reading.
    """
    where = f"price file {path}"
    full = os.path.expanduser(path)
    try:
        info = os.stat(full)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"{where}: not a regular file (a directory, device or pipe)")
        # O_NONBLOCK: should the path be swapped for a FIFO after the check, open() still
        # returns at once and the check on the open descriptor refuses it.
        fd = os.open(full, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with open(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise ValueError(f"{where}: not a regular file (a directory, device or pipe)")
            data = handle.read(MAX_PRICES_FILE + 1)
    except OSError as exc:
        raise ValueError(f"{where}: cannot be read ({exc.strerror or exc})") from None
    if len(data) > MAX_PRICES_FILE:
        raise ValueError(f"{where}: larger than {MAX_PRICES_FILE // (1024 * 1024)} MiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{where}: not UTF-8 text") from None
    return canonical_prices(text, where=where)


class PriceTable:
    """Look up a model's price and compute the cost of a call's usage."""

    __slots__ = ("_exact", "_prefixes")

    def __init__(self, prices: Mapping[str, Price]) -> None:
        self._exact = {m: p for m, p in prices.items() if not m.endswith("*")}
        self._prefixes = sorted(
            ((m[:-1], p) for m, p in prices.items() if m.endswith("*")),
            key=lambda item: -len(item[0]),
        )

    @classmethod
    def from_json(cls, text: str, *, where: str = "prices") -> PriceTable:
        """A table from JSON text (raises ``ValueError`` naming ``where`` and the entry)."""
        return cls(_parse(json.loads(canonical_prices(text, where=where)), where))

    def __len__(self) -> int:
        return len(self._exact) + len(self._prefixes)

    def lookup(self, model: str) -> Price | None:
        """The price of ``model``: its exact entry, else the longest matching ``prefix*``."""
        price = self._exact.get(model)
        if price is not None:
            return price
        for prefix, candidate in self._prefixes:
            if model.startswith(prefix):
                return candidate
        return None

    def cost(self, model: str | None, usage: TokenUsage | None) -> Cost | None:
        """The cost of ``usage`` on ``model``, or ``None`` when either is unknown or unpriced."""
        if model is None or usage is None:
            return None
        price = self.lookup(model)
        if price is None:
            return None
        parts = (
            usage.uncached_input_tokens * price.input,
            usage.output_tokens * price.output,
            usage.cache_read_tokens * price.cache_read,
            usage.cache_write_tokens * price.cache_write,
        )
        inp, out, read, write = (part / _PER for part in parts)
        return Cost(model=model, total=inp + out + read + write, input=inp, output=out,
                    cache_read=read, cache_write=write)


_tables: dict[tuple[str | None, str | None], PriceTable | None] = {}


def load_prices(prices: str | None, prices_file: str | None) -> PriceTable | None:
    """The table for a policy's ``prices`` / ``prices_file`` (inline entries win); cached.

    ``prices`` is canonical JSON (``Policy`` validated it); the file is read once per process.
    """
    if prices is None and prices_file is None:
        return None
    key = (prices, prices_file)
    if key in _tables:
        return _tables[key]
    merged: dict[str, Any] = {}
    if prices_file is not None:
        merged.update(json.loads(read_prices_file(prices_file)))
    if prices is not None:
        merged.update(json.loads(canonical_prices(prices)))
    table = PriceTable(_parse(merged, "prices")) if merged else None
    if len(_tables) > 64:
        _tables.clear()
    _tables[key] = table
    return table
