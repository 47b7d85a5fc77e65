"""What a policy asks of telemetry: on or off, content on spans, a capture file, a price table.

Resolved once per policy object and cached (a call only looks its policy up). A call with no
policy (a record built outside the engine) reads the environment's. A price table that fails to
load is reported once as a WARNING and the calls go on unpriced: a bad price list must never
fail a call (the drop-in clients already refuse it at construction with a ``ConfigError``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .capture import Sink, sink_for
from .pricing import PriceTable, load_prices

if TYPE_CHECKING:
    from .._policy import Policy

__all__ = ["Settings", "settings_for"]

log = logging.getLogger("resilient_llm.calls")


@dataclass(frozen=True, slots=True)
class Settings:
    """Telemetry's reading of one policy."""

    enabled: bool
    capture_content: bool
    sink: Sink | None
    prices: PriceTable | None

    @property
    def keeps_stream_bytes(self) -> bool:
        """Does a call need a copy of streamed bytes (capture file or content on spans)?"""
        return self.sink is not None or self.capture_content


_cache: dict[int, tuple[Any, Settings]] = {}
_MAX_CACHED = 256
_env_policy: tuple[tuple[str | None, ...], Any] | None = None
_ENV_KEYS = ("RESILIENT_LLM_TELEMETRY", "RESILIENT_LLM_CAPTURE_CONTENT",
             "RESILIENT_LLM_CAPTURE_FILE", "RESILIENT_LLM_PRICES", "RESILIENT_LLM_PRICES_FILE")
_price_errors: set[str] = set()


def _policy_from_env() -> Any:
    """The environment's policy (for calls made outside a drop-in client), cached."""
    global _env_policy
    key = tuple(os.environ.get(name) for name in _ENV_KEYS)
    if _env_policy is None or _env_policy[0] != key:
        from .._policy import Policy

        try:
            policy: Any = Policy.from_env()
        except ValueError:
            policy = None
        _env_policy = (key, policy)
    return _env_policy[1]


def settings_for(policy: Policy | None) -> Settings:
    """The settings of ``policy`` (``None``: of the environment's policy)."""
    if policy is None:
        policy = _policy_from_env()
    cached = _cache.get(id(policy))
    if cached is not None and cached[0] is policy:
        return cached[1]
    prices: PriceTable | None = None
    inline = getattr(policy, "prices", None)
    path = getattr(policy, "prices_file", None)
    if inline is not None or path is not None:
        try:
            prices = load_prices(inline, path)
        except ValueError as exc:
            message = str(exc)
            if message not in _price_errors:
                _price_errors.add(message)
                log.warning("resilient_llm: price table ignored: %s", message)
    capture_file = getattr(policy, "capture_file", None)
    settings = Settings(
        enabled=bool(getattr(policy, "telemetry", True)),
        capture_content=bool(getattr(policy, "capture_content", False)),
        sink=sink_for(capture_file) if capture_file else None,
        prices=prices,
    )
    if len(_cache) > _MAX_CACHED:
        _cache.clear()
    _cache[id(policy)] = (policy, settings)
    return settings
