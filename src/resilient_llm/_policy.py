"""``Policy``: the immutable resilience settings of a client, a decorator scope or a call.

Values come from three places, in rising precedence: the defaults below, ``RESILIENT_LLM_*``
environment variables (read by :meth:`Policy.from_env`), and keyword arguments. Invalid values
raise :class:`ConfigError` naming the variable (or argument), the value and what is accepted.
"""

from __future__ import annotations

import json
import math
import os
import unicodedata
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
)

from ._errors import ConfigError
from ._policy_values import (
    ACCEPTED,
    BOUNDS,
    OPTIONAL_FILES,
    OPTIONAL_PARSERS,
    SECONDS_FIELDS,
    STORE_SCHEMES,
    URL_FIELDS,
    FrozenMap,
    as_seconds,
    ascii_number,
    json_mapping,
    parse_chain_map,
    parse_continuation,
    parse_recovery,
    region_name,
)
from ._urls import check_http_url, redact_url

__all__ = ["ENV_PREFIX", "Policy", "Priority", "Source"]

ENV_PREFIX = "RESILIENT_LLM_"
Priority = Literal["interactive", "batch"]
Source = Literal["default", "environment", "argument"]

class Policy(BaseModel):
    """Immutable resilience settings.

    ``deadline`` is the total wall-clock budget of one call, across every attempt, backoff,
    fallback and stream read. ``max_attempts`` counts attempts across all targets.
    ``first_token_timeout`` bounds the wait for a stream's first output, from the send of each
    attempt (connecting, the response headers and the first event share it): the default of
    300 s lets reasoning models that think for minutes before their first token pass, while the
    deadline still bounds the whole call. ``stream_idle_timeout`` bounds the time between two
    stream events once output flows; SSE comments (``: keep-alive``) are not events.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=False)

    enabled: bool = True
    deadline: float = 600.0
    max_attempts: int = 4
    fallbacks: Mapping[str, tuple[str, ...]] = Field(default_factory=FrozenMap)
    context_fallbacks: Mapping[str, tuple[str, ...]] = Field(default_factory=FrozenMap)
    first_token_timeout: float = 300.0
    stream_idle_timeout: float = 90.0
    #: ``continue``: a stream that breaks after its first output is resumed on the same or
    #: the next target (``on`` is accepted as a synonym); ``off``: it raises StreamInterrupted.
    stream_recovery: Literal["continue", "off"] = "continue"
    #: Model patterns (exact name, ``prefix*``, ``*``) → ``prefill`` (the target continues a
    #: final partial assistant turn) or ``restart`` (regenerate and verify the delivered
    #: prefix). Unlisted: Anthropic Messages prefill, everything else restarts.
    stream_continuation: Mapping[str, Literal["prefill", "restart"]] = Field(
        default_factory=FrozenMap)
    priority: Priority = "interactive"
    idempotency_store: str = "memory"
    redis_url: str | None = None
    cache_namespace: str | None = None
    allowed_regions: frozenset[str] | None = None
    region: str | None = None
    region_endpoints: Mapping[str, str] = Field(default_factory=FrozenMap)
    max_backoff: float = 8.0
    #: The largest decoded response body the client reads into memory (a JSON answer, an
    #: error body) and the largest single stream event: a gzip bomb or a 100 GB
    #: ``Content-Length`` fails fast with :class:`ResponseTooLarge` instead of exhausting
    #: memory. Bodies the SDK streams to the caller itself (file downloads) are not capped.
    max_response_bytes: int = 64 * 1024 * 1024
    # Hedged first token (streams, async clients): opt-in, budgeted.
    hedge: bool = False
    hedge_budget: float = 0.05
    hedge_delay: float | None = None
    # Idempotent side effects (``@side_effect``).
    idempotency_secret: SecretStr | None = None
    idempotency_on_expired_lease: Literal["at_most_once", "at_least_once"] = "at_most_once"
    idempotency_fail_open: bool = False
    tool_reserve: float = 1.0
    # Prompt caching.
    cache_secret: SecretStr | None = None
    prompt_cache_key: bool = True
    cache_breakpoint: bool = True
    lint_prompts: Literal["off", "warn", "strict"] = "warn"
    stable_tool_order: bool = False
    response_cache: bool = False
    response_cache_ttl: float = 300.0
    response_cache_size: int = 1024
    # Telemetry: spans, metrics and log lines on by default (false: none from resilient-llm);
    # prompt/completion text only with capture_content; capture_file appends a replayable JSON
    # line per call; prices (inline JSON, wins) or prices_file turn usage into cost.
    telemetry: bool = True
    capture_content: bool = False
    capture_file: str | None = None
    prices: str | None = None
    prices_file: str | None = None

    _sources: dict[str, Source] = PrivateAttr(default_factory=dict)
    #: Made by :meth:`from_env`: the environment is already under its arguments.
    _over_env: bool = PrivateAttr(default=False)

    ENV_PREFIX: ClassVar[str] = ENV_PREFIX

    def __init__(self, **values: Any) -> None:
        error = None
        try:
            super().__init__(**values)
        except ValidationError as exc:
            error = _config_error(exc, values)
        if error is not None:  # raised here, so the error has no context that echoes a value
            raise error
        self._sources = dict.fromkeys(values, "argument")

    @field_validator(*SECONDS_FIELDS, mode="before")
    @classmethod
    def _accept_timedelta(cls, value: Any) -> Any:
        return as_seconds(value)

    @field_validator("enabled", "hedge", "idempotency_fail_open", "prompt_cache_key",
                     "cache_breakpoint", "stable_tool_order", "response_cache", "telemetry",
                     "capture_content", mode="before")
    @classmethod
    def _tidy_flag(cls, value: Any) -> Any:
        return value.strip() if isinstance(value, str) else value  # " true" from a template

    @field_validator("priority", "idempotency_on_expired_lease", "lint_prompts", mode="before")
    @classmethod
    def _tidy_choice(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value  # BATCH is batch

    @field_validator(*BOUNDS, mode="before")
    @classmethod
    def ascii_number(cls, value: Any, info: ValidationInfo) -> Any:
        return ascii_number(value, integer=info.field_name in (
            "max_attempts", "response_cache_size", "max_response_bytes"))

    @field_validator(*BOUNDS)
    @classmethod
    def _check_bounds(cls, value: float, info: ValidationInfo) -> float:
        low, high, low_open = BOUNDS[str(info.field_name)]
        if not math.isfinite(value) or value > high or value < low or (low_open and value == low):
            raise ValueError("out of range")
        return value

    @field_validator("idempotency_secret", "cache_secret")
    @classmethod
    def _check_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("too short")
        return value

    @field_validator(*OPTIONAL_PARSERS, mode="before")
    @classmethod
    def _parse_optional(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None or value == "":
            return None
        return OPTIONAL_PARSERS[str(info.field_name)](value)

    @field_validator(*OPTIONAL_FILES)
    @classmethod
    def _check_optional_file(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or not value.strip():
            return None
        return OPTIONAL_FILES[str(info.field_name)](value)

    @field_validator("fallbacks", "context_fallbacks", mode="before")
    @classmethod
    def _check_chains(cls, value: Any) -> Any:
        return parse_chain_map(value)

    @field_validator("fallbacks", "context_fallbacks", "stream_continuation",
                     "region_endpoints")
    @classmethod
    def _freeze(cls, value: Mapping[str, Any]) -> Mapping[str, Any]:
        return FrozenMap(value)

    @field_validator("stream_recovery", mode="before")
    @classmethod
    def _check_recovery(cls, value: Any) -> Any:
        return parse_recovery(value)

    @field_validator("stream_continuation", mode="before")
    @classmethod
    def _check_continuation(cls, value: Any) -> Any:
        return parse_continuation(value)

    @field_validator("idempotency_store")
    @classmethod
    def _check_store(cls, value: str) -> str:
        if value != "memory" and not value.startswith(STORE_SCHEMES[1:]):
            raise ValueError("unknown store")
        if value.startswith("sqlite:///") and len(value) == len("sqlite:///"):
            raise ValueError("missing path")
        if value.startswith(("redis://", "rediss://", "unix://")):
            _check_redis_url(value, "RESILIENT_LLM_IDEMPOTENCY_STORE")
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        assert value is not None
        _check_redis_url(value, "RESILIENT_LLM_REDIS_URL")
        return value

    @field_validator("cache_namespace")
    @classmethod
    def _check_namespace(cls, value: str | None) -> str | None:
        if value is None or value == "":  # unset, as an empty variable leaves the others
            return None
        if not value.strip() or len(value) > 128:
            raise ValueError("bad namespace")
        if any(unicodedata.category(ch).startswith("C") for ch in value):
            raise ValueError("it holds a control or invisible format character")
        return value

    @field_validator("region_endpoints", mode="before")
    @classmethod
    def _check_endpoints(cls, value: Any) -> Any:
        endpoints = {}
        for region, url in json_mapping(value).items():
            name = region_name(str(region))
            if not isinstance(url, str):
                raise ValueError(f"the endpoint of {name!r} is not an http(s) URL")
            try:
                check_http_url(url)
            except ValueError as exc:
                raise ValueError(f"the endpoint of {name!r}: {exc}") from None
            endpoints[name] = url.rstrip("/")
        return endpoints

    # --- construction -------------------------------------------------------------------------

    @classmethod
    def from_env(cls, **overrides: Any) -> Policy:
        """Defaults, overridden by ``RESILIENT_LLM_*`` variables, overridden by ``overrides``."""
        env = _read_env()
        report_unknown_env()
        values: dict[str, Any] = dict(env)
        values.update(overrides)
        try:
            policy = cls(**values)
        except ConfigError as exc:
            field = getattr(exc, "field", None)
            if field in env and field not in overrides:
                raise ConfigError(env_var(field), exc.value, exc.accepted) from None
            raise
        sources: dict[str, Source] = dict.fromkeys(env, "environment")
        sources.update(dict.fromkeys(overrides, "argument"))
        policy._sources = sources
        policy._over_env = True
        return policy

    def over_env(self) -> Policy:
        """This policy's own settings (those given as arguments) over the ``RESILIENT_LLM_*``
        variables, over the defaults: what a client built with ``policy=`` runs under, so the
        environment's kill switch, secrets, Redis URL and strict check still reach it."""
        if self._over_env:
            return self
        own = {name: getattr(self, name) for name, source in self._sources.items()
               if source == "argument"}
        layered = type(self).from_env(**own)
        same = all(getattr(layered, name) == getattr(self, name)
                   for name in type(self).model_fields)
        return self if same else layered  # nothing set in the environment: this very policy

    def replace(self, **changes: Any) -> Policy:
        """A validated copy with ``changes`` applied; it remembers where each value came from."""
        values = {name: getattr(self, name) for name in type(self).model_fields}
        values.update(changes)
        new = type(self)(**values)
        new._sources = {**self._sources, **dict.fromkeys(changes, "argument")}
        return new

    def continuation(self, model: str | None) -> Literal["prefill", "restart"] | None:
        """How ``stream_continuation`` says ``model`` resumes a stream: its exact entry, else
        the longest matching ``prefix*``, else ``*``; ``None`` when nothing matches (the
        provider's default applies)."""
        modes = self.stream_continuation
        if not modes:
            return None
        name = model or ""
        if name in modes:
            return modes[name]
        best: str | None = None
        for pattern in modes:
            if pattern.endswith("*") and name.startswith(pattern[:-1]) and (
                best is None or len(pattern) > len(best)
            ):
                best = pattern
        return modes[best] if best is not None else None

    def source(self, field: str) -> Source:
        """Where the value of ``field`` came from: ``default``, ``environment`` or ``argument``."""
        if field not in type(self).model_fields:
            raise KeyError(field)
        return self._sources.get(field, "default")

    def describe(self) -> list[tuple[str, str, str, Source]]:
        """Rows of (environment variable, field, shown value, source) for ``config`` output."""
        rows = []
        for field in type(self).model_fields:
            value = getattr(self, field)
            if isinstance(value, frozenset):
                shown = ",".join(sorted(value))
            elif field in URL_FIELDS and value:
                shown = _shown_urls(value) if isinstance(value, str) \
                    else json.dumps(_shown_urls(value))
            elif isinstance(value, Mapping):
                shown = json.dumps({k: v if isinstance(v, str) else list(v)
                                    for k, v in value.items()}) if value else "{}"
            elif isinstance(value, SecretStr):
                shown = "*** (set)"
            else:
                shown = "" if value is None else str(value).lower() if isinstance(value, bool) \
                    else str(value)
            rows.append((env_var(field), field, shown or "(none)", self.source(field)))
        return rows

    @field_serializer(*URL_FIELDS)
    def _dump_urls(self, value: Any) -> Any:
        """``model_dump()`` shows URLs without credentials (secrets dump as ``**********``)."""
        return _shown_urls(value)

    def __repr_args__(self) -> Any:
        """What ``repr()``, ``str()`` and pretty-printers show: set fields, URLs redacted."""
        for name in type(self).model_fields:
            if name in self._sources:
                value = getattr(self, name)
                yield name, _shown_urls(value) if name in URL_FIELDS else value

    def __repr__(self) -> str:
        changed = ", ".join(f"{name}={value!r}" for name, value in self.__repr_args__())
        return f"Policy({changed})"

    __str__ = __repr__


def env_var(field: str) -> str:
    """The environment variable that sets ``field``."""
    return ENV_PREFIX + field.upper()


def _shown_urls(value: Any) -> Any:
    """A URL, or a mapping of URLs, as it may be shown: credentials replaced by ``***``."""
    if isinstance(value, str):
        return redact_url(value)
    if isinstance(value, Mapping):
        return {k: redact_url(v) if isinstance(v, str) else v for k, v in value.items()}
    return value



_settings_cls: Any = None
#: The last reading of the environment: the ``RESILIENT_LLM_*`` variables as they were set,
#: and what pydantic-settings read from them.
_last_read: tuple[tuple[tuple[str, str], ...], dict[str, str]] | None = None


def _read_env() -> dict[str, str]:
    """The ``RESILIENT_LLM_*`` variables that are set, read through pydantic-settings.

    Every field is read as a string here; :class:`Policy` parses and validates it, so the
    environment and keyword arguments share one set of rules. Reading costs about 4 ms (a
    fifth of what building the official client costs): it is done again only when a
    variable of ours changed, so an application that builds a client per request does not
    pay it each time.
    """
    global _last_read
    ours = tuple(sorted((name, value) for name, value in os.environ.items()
                        if name.upper().startswith(ENV_PREFIX)))
    last = _last_read
    if last is not None and last[0] == ours:
        return dict(last[1])
    values = _read_env_afresh()
    _last_read = (ours, values)
    return dict(values)


def _read_env_afresh() -> dict[str, str]:
    global _settings_cls
    if _settings_cls is None:
        from pydantic import create_model
        from pydantic_settings import BaseSettings, SettingsConfigDict

        fields: Any = dict.fromkeys(Policy.model_fields, (str | None, None))
        _settings_cls = create_model(
            "_PolicyEnvironment",
            __base__=BaseSettings,
            __config__=None,
            **fields,
        )
        _settings_cls.model_config = SettingsConfigDict(
            env_prefix=ENV_PREFIX, extra="ignore", case_sensitive=False
        )
        _settings_cls.model_rebuild(force=True)
    settings = _settings_cls()
    return {
        name: getattr(settings, name)
        for name in settings.model_fields_set
        if getattr(settings, name) is not None
    }


def _check_redis_url(url: str, setting: str) -> None:
    """Parse a Redis URL fully now, so a typo fails here and not on a call."""
    from ._redis import parse_redis_url

    try:
        parse_redis_url(url, setting=setting)
    except ConfigError as exc:
        raise ValueError(exc.accepted) from None


#: What a :class:`ConfigError` shows for a value it must not echo (unknown settings may be
#: misspelled secrets).
NOT_SHOWN = "(value not shown)"


def _config_error(exc: ValidationError, values: Mapping[str, Any]) -> ConfigError:
    first = exc.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else "?"
    if first["type"] == "extra_forbidden":
        # A misspelled secret is still a secret: its value is not shown.
        import difflib

        close = difflib.get_close_matches(field, list(Policy.model_fields), n=1)
        hint = f"did you mean {close[0]}?" if close else \
            f"known: {', '.join(Policy.model_fields)}"
        error = ConfigError(f"Policy({field}=...)", NOT_SHOWN, f"unknown setting; {hint}")
    else:
        accepted = ACCEPTED.get(field, first["msg"])
        ctx = first.get("ctx") or {}
        detail = str(ctx.get("error", ""))
        if detail and detail not in accepted and first["type"] == "value_error":
            accepted = f"{accepted} ({detail})"
        value = values.get(field)
        if field.endswith("_secret"):
            value = "***"  # never echo a credential
        elif field in URL_FIELDS:
            value = _shown_urls(value)
        error = ConfigError(f"Policy({field}=...)", value, accepted)
    error.field = field
    return error


# --- unknown variables ------------------------------------------------------------------------

#: Read by :func:`report_unknown_env`, not a :class:`Policy` field: ``1`` turns a misspelled or
#: unknown ``RESILIENT_LLM_*`` variable from a warning into a :class:`ConfigError`.
STRICT_VAR = ENV_PREFIX + "STRICT"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")
_warned_unknown: set[str] = set()


def known_env_vars() -> list[str]:
    """Every ``RESILIENT_LLM_*`` variable resilient-llm reads, sorted."""
    return sorted([*(env_var(field) for field in Policy.model_fields), STRICT_VAR])


def closest_env_var(name: str) -> str | None:
    """The known variable ``name`` most likely misspells, if any is close enough."""
    import difflib

    # Compare the part after the prefix: the shared prefix would make every name look close.
    suffixes = {var.removeprefix(ENV_PREFIX): var for var in known_env_vars()}
    matches = difflib.get_close_matches(name.upper().removeprefix(ENV_PREFIX), list(suffixes),
                                        n=1, cutoff=0.6)
    return suffixes[matches[0]] if matches else None


def unknown_env_vars(environ: Mapping[str, str] | None = None) -> list[str]:
    """The set ``RESILIENT_LLM_*`` variables that no setting reads (misspellings, old names)."""
    import os

    env = os.environ if environ is None else environ
    known = set(known_env_vars())
    return sorted(name for name in env
                  if name.upper().startswith(ENV_PREFIX) and name.upper() not in known)


def strict_env(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``RESILIENT_LLM_STRICT`` asks for unknown variables to be errors."""
    import os

    env = os.environ if environ is None else environ
    raw = env.get(STRICT_VAR, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigError(STRICT_VAR, raw, "expected true or false (1 or 0)")


def unknown_env_message(name: str) -> str:
    """One line naming an unknown variable and the closest known one (never its value)."""
    closest = closest_env_var(name)
    hint = f"did you mean {closest}?" if closest else \
        "`python -m resilient_llm config --markdown` lists every variable"
    return f"{name} is not a resilient-llm setting and is ignored; {hint}"


def report_unknown_env(*, strict: bool | None = None,
                       environ: Mapping[str, str] | None = None) -> list[str]:
    """Warn once per process about each unknown ``RESILIENT_LLM_*`` variable; in strict mode
    (``RESILIENT_LLM_STRICT=1`` or ``strict=True``) raise :class:`ConfigError` for the first.

    A misspelled variable would otherwise be silently ignored and its default used. Returns the
    unknown names. The value is never shown: a misspelled secret stays a secret.
    """
    import warnings

    strict = strict_env(environ) or bool(strict)
    unknown = unknown_env_vars(environ)
    if not unknown:
        return unknown
    if strict:
        name = unknown[0]
        closest = closest_env_var(name)
        hint = f"did you mean {closest}?" if closest else "it is not a resilient-llm setting"
        raise ConfigError(name, NOT_SHOWN,
                          f"unknown variable, an error in strict mode; {hint} "
                          "Rename or unset it")
    for name in unknown:
        if name not in _warned_unknown:
            _warned_unknown.add(name)
            warnings.warn(unknown_env_message(name), UserWarning, stacklevel=4)
    return unknown
