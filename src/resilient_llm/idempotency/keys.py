"""Idempotency keys: canonical arguments and the HMAC that turns them into a key.

Canonical arguments: the call is bound to the signature with defaults applied (``f(1)`` and
``f(x=1)`` agree), then every value is reduced to its JSON form: dict keys in any order are
the same; ``list`` and ``tuple`` are the same; numbers compare by exact value (``1``, ``1.0``,
``Decimal("1.00")`` and ``Fraction(2, 2)`` agree; ``0.1`` and ``Decimal("0.1")`` do not, as in
Python; ``-0.0`` is ``0``; ``bool`` is not a number; NaN equals NaN); strings are NFC-normalised
(a precomposed ``é`` and ``e`` + combining accent agree; compatibility forms such as ``ﬁ`` do
not, since NFKC would change meaning); pydantic models, dataclasses and enums reduce to their
JSON values (a model's secret fields, masked there, by their values: two models that differ
only in a password are two actions); ``SecretStr``/``SecretBytes`` to their values;
``datetime``, ``date``, ``time`` and ``UUID`` to their ISO/str form; sets are unordered.
Anything else raises ``TypeError``: pass ``key=`` or ``ignore=``.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import enum
import hashlib
import hmac
import inspect
import json
import math
import numbers
import unicodedata
import uuid
from collections.abc import Mapping, Sequence, Set
from decimal import Decimal
from fractions import Fraction
from typing import Any, Literal

from pydantic import BaseModel, SecretBytes, SecretStr

__all__ = ["arguments_digest", "canonical_arguments", "canonical_json", "derive_key"]

_VERSION = b"resilient-llm/idempotency/v1"


# --- canonical arguments -------------------------------------------------------------------------


def _number(value: Any) -> str:
    """The exact value of a real number as text: ``12``, ``125e-2``, ``1/3``, ``NaN``."""
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, Decimal):
        if value.is_nan():
            return "NaN"
        if value.is_infinite():
            return "-Infinity" if value < 0 else "Infinity"
        frac = Fraction(value)
    elif isinstance(value, numbers.Rational):
        frac = Fraction(int(value.numerator), int(value.denominator))
    else:
        real = float(value)
        if math.isnan(real):
            return "NaN"
        if math.isinf(real):
            return "-Infinity" if real < 0 else "Infinity"
        frac = Fraction(real)
    if frac.denominator == 1:
        return str(frac.numerator)
    rest, twos, fives = frac.denominator, 0, 0
    while rest % 2 == 0:
        rest, twos = rest // 2, twos + 1
    while rest % 5 == 0:
        rest, fives = rest // 5, fives + 1
    if rest != 1:
        return f"{frac.numerator}/{frac.denominator}"
    digits = max(twos, fives)
    return f"{frac.numerator * 10**digits // frac.denominator}e-{digits}"


def _canon(value: Any, where: str) -> Any:
    """``value`` as a tagged JSON structure: strings stay strings, everything else is tagged."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return unicodedata.normalize("NFC", value)
    if isinstance(value, enum.Enum):
        return _canon(value.value, where)
    if isinstance(value, numbers.Real):
        return ["n", _number(value)]
    if isinstance(value, Decimal):
        return ["n", _number(value)]
    if isinstance(value, (SecretStr, SecretBytes)):
        return ["secret", _canon(value.get_secret_value(), where)]
    if isinstance(value, BaseModel):
        dumped = _canon(value.model_dump(mode="json"), where)
        hidden = _secrets_of(value, where)
        # A secret field's JSON is a mask ("**********"): two models that differ only there
        # are two actions, so their values count too (a model without one keeps its form).
        return ["m", dumped, hidden] if hidden else dumped
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _canon({f.name: getattr(value, f.name) for f in dataclasses.fields(value)}, where)
    if isinstance(value, Mapping):
        pairs = []
        seen = set()
        for key, item in value.items():
            encoded = _dumps(_canon(key, where))
            if encoded in seen:
                raise ValueError(
                    f"argument {where!r} holds two keys that are equal once canonicalised "
                    "(e.g. 1 and 1.0, or the NFC and NFD forms of a string)"
                )
            seen.add(encoded)
            pairs.append((encoded, _canon(item, where)))
        pairs.sort(key=lambda pair: pair[0])
        return ["d", [[json.loads(k), v] for k, v in pairs]]
    if isinstance(value, (list, tuple)):
        return ["l", [_canon(item, where) for item in value]]
    if isinstance(value, Set):
        items = sorted(_dumps(_canon(item, where)) for item in value)
        return ["s", [json.loads(item) for item in items]]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return ["b", base64.b64encode(bytes(value)).decode("ascii")]
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(
        f"argument {where!r} holds a {type(value).__qualname__}, which has no canonical form; "
        "pass key= to derive the key yourself, or ignore= to leave the argument out"
    )


def _secrets_of(model: BaseModel, where: str) -> list[Any]:
    """The values of a model's secret fields, nested models' included, by field path."""
    found: list[Any] = []

    def walk(value: Any, path: str) -> None:
        if isinstance(value, (SecretStr, SecretBytes)):
            found.append([path, _canon(value, where)])
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name, None), f"{path}.{name}")
        elif isinstance(value, Mapping):
            for key in sorted(value, key=str):
                walk(value[key], f"{path}[{key!r}]")
        elif isinstance(value, (list, tuple)):
            for n, item in enumerate(value):
                walk(item, f"{path}[{n}]")

    walk(model, "")
    return found


def _dumps(structure: Any) -> str:
    return json.dumps(structure, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def canonical_json(value: Any) -> str:
    """The canonical text of one value (rules in the module docstring): stable across runs."""
    return _dumps(_canon(value, "value"))


def canonical_arguments(
    signature: inspect.Signature, args: Sequence[Any], kwargs: Mapping[str, Any],
    *, ignore: Set[str] = frozenset(),
) -> str:
    """The canonical text of a call's arguments, bound by name with defaults applied."""
    bound = signature.bind(*args, **kwargs)
    bound.apply_defaults()
    named = {
        name: _canon(value, name)
        for name, value in bound.arguments.items()
        if name not in ignore
    }
    return _dumps(["d", [[name, named[name]] for name in sorted(named)]])


def arguments_digest(
    signature: inspect.Signature, args: Sequence[Any], kwargs: Mapping[str, Any],
    *, ignore: Set[str] = frozenset(),
) -> str:
    """SHA-256 (hex) of :func:`canonical_arguments`."""
    text = canonical_arguments(signature, args, kwargs, ignore=ignore)
    return hashlib.sha256(_VERSION + b"\0args\0" + text.encode("utf-8")).hexdigest()


def _frame(*parts: str | bytes) -> bytes:
    out = bytearray()
    for part in parts:
        data = part.encode("utf-8") if isinstance(part, str) else part
        out += len(data).to_bytes(4, "big") + data
    return bytes(out)


def derive_key(
    secret: bytes, *, run: Sequence[str], tool: str,
    kind: Literal["call", "key", "args"], identity: str,
) -> str:
    """The idempotency key (64 hex characters) for one action; formula in the module docstring."""
    message = _frame(_VERSION, "run", str(len(run)), *run, "tool", tool, kind, identity)
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def _fingerprint(secret: bytes, tool: str, digest: str) -> str:
    message = _frame(_VERSION, "fingerprint", tool, digest)
    return hmac.new(secret, message, hashlib.sha256).hexdigest()
