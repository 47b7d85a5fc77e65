"""The configuration reference: what each ``Policy`` setting means, rendered from ``Policy``.

Names, types, defaults and accepted ranges come from :class:`~resilient_llm.Policy` itself
(its fields and the ``accepted`` text of its :class:`ConfigError`); only the meaning and an
example live here, one entry per field. ``docs/configuration.md`` is the output of
:func:`render_markdown` (``python -m resilient_llm config --markdown``), and a test fails when
the committed page and the code disagree, or when a field has no entry here.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from ._policy import ENV_PREFIX, STRICT_VAR, Policy, env_var
from ._policy_values import ACCEPTED

__all__ = ["MEANINGS", "render_markdown", "rows"]

#: field → (meaning, example value as it would be written in the environment).
MEANINGS: dict[str, tuple[str, str]] = {
    "enabled": (("`false` makes the drop-in classes behave exactly like the official ones: "
                 "no deadline, no fallbacks, and no `RESILIENT_LLM_ALLOWED_REGIONS` check "
                 "either."), "false"),
    "deadline": (("Total wall-clock budget of one call across every attempt, backoff, "
                 "fallback and stream read."), "30"),
    "max_attempts": (("Attempts per call across all targets (fallbacks included). An explicit "
                     "`max_retries=N` on a client or request means N + 1 instead."), "3"),
    "fallbacks": (("Models to try, in order, when a model is down, overloaded or too slow for "
                  "the time left. `\"*\"` applies to any model."),
                  '{"gpt-4.1": ["gpt-4.1-mini"]}'),
    "context_fallbacks": (("Larger-context models to move to when a request does not fit the "
                          "model's context window."), '{"gpt-4.1-mini": ["gpt-4.1"]}'),
    "first_token_timeout": (("Wait for a stream's first output. Reasoning models think for "
                            "minutes; the deadline still bounds the whole call."), "120"),
    "stream_idle_timeout": ("Silence allowed between stream events once output flows.", "60"),
    "stream_recovery": (("`continue`: a stream that breaks after its first output (cut, stall, "
                        "truncation, malformed or error event) is resumed on the same or the "
                        "next target and your iterator keeps yielding the answer exactly once; "
                        "`off`: it raises `StreamInterrupted`."), "off"),
    "stream_continuation": (("How each model resumes a broken stream: `prefill` (the delivered "
                            "text is sent back as a final assistant turn to continue) or "
                            "`restart` (regenerate, verify the delivered text, yield only what "
                            "follows). Unlisted models: Anthropic Messages `prefill`, others "
                            "`restart`."), '{"deepseek-*": "prefill"}'),
    "priority": ("`batch` yields to `interactive` calls on the same target under pressure.",
                 "batch"),
    "idempotency_store": (("Ledger of `@side_effect` results: in-process, a SQLite file shared "
                          "by processes on one machine, or Redis for a fleet."),
                          "sqlite:///ledger.db"),
    "redis_url": ("Fleet-wide coordination (pressure, breakers, pacing) through Redis.",
                  "redis://localhost:6379/0"),
    "cache_namespace": (("Tenant scope folded into prompt-cache keys, so tenants never share a "
                        "cached prefix."), "acme"),
    "allowed_regions": (("Regions routing may use. Fails closed: a call whose only target is "
                        "elsewhere raises `ResidencyViolation`."), "eu"),
    "region": ("Where this client's endpoint is.", "eu"),
    "region_endpoints": ("Base URL of each region, for routing between regions.",
                         '{"eu": "https://eu.api.openai.com/v1"}'),
    "max_backoff": (("Cap of the exponential backoff between attempts, seconds, before it is "
                    "stretched under provider pressure. A provider's `Retry-After` may ask "
                    "for longer; the deadline bounds every wait."), "4"),
    "max_response_bytes": (("Largest response body, once decoded, and largest stream event, in "
                           "bytes; beyond it the call fails with `ResponseTooLarge` (a gzip "
                           "bomb or a huge `Content-Length` never fills memory)."), "16777216"),
    "hedge": (("Race a second stream when the first token is late (async clients), within "
              "`HEDGE_BUDGET`."), "true"),
    "hedge_budget": ("Extra attempts hedging may add, as a share of calls.", "0.02"),
    "hedge_delay": (("Fixed delay before hedging, seconds. Unset: twice the observed p90 time "
                    "to first output."), "1.5"),
    "idempotency_secret": (("HMAC key for idempotency keys derived from arguments; set the "
                           "same value on every worker of a fleet."), "(a random 32-byte hex)"),
    "idempotency_on_expired_lease": (("What a `@side_effect` does when another run's lease "
                                     "expired without an outcome: raise "
                                     "`IdempotencyOutcomeUnknown` (at most once) or run again "
                                     "(at least once)."), "at_least_once"),
    "idempotency_fail_open": (("Run the side effect anyway when the ledger cannot be reached "
                              "(`true`), instead of raising `IdempotencyStoreUnavailable`."),
                              "true"),
    "tool_reserve": ("Seconds of the caller's deadline a `@tool` leaves for the caller.", "2"),
    "cache_secret": (("HMAC key for prompt-cache keys; the same on every worker that should "
                     "share a cache."), "(a random 32-byte hex)"),
    "prompt_cache_key": ("Set a stable `prompt_cache_key` on OpenAI requests.", "false"),
    "cache_breakpoint": ("Place an Anthropic `cache_control` breakpoint on the stable prefix.",
                         "false"),
    "lint_prompts": (("Report volatile content (timestamps, ids) in the cacheable prefix: "
                     "`warn` logs it, `strict` raises `PromptLintError`."), "strict"),
    "stable_tool_order": (("Sort tool definitions by name so the cacheable prefix stays the "
                          "same."), "true"),
    "response_cache": (("Serve repeats of a deterministic request (not streamed, "
                       "`temperature=0` or a `seed`) from an in-process cache."), "true"),
    "response_cache_ttl": ("How long a cached response is served, seconds.", "60"),
    "response_cache_size": ("Responses the in-process cache holds.", "256"),
    "telemetry": (("OpenTelemetry spans and metrics and the WARNING log lines; `false`: none "
                  "from resilient-llm."), "false"),
    "capture_content": ("Put prompt and completion text in spans and captures (off: never).",
                        "true"),
    "capture_file": (("Append one replayable JSON line per call to this file "
                     "(`python -m resilient_llm replay`)."), "calls.jsonl"),
    "prices": (("USD per million tokens, inline JSON; turns usage into cost. Wins over "
               "`PRICES_FILE`."), '{"gpt-4.1": {"input": 2.0, "output": 8.0}}'),
    "prices_file": ("A JSON price file in the format of `PRICES`.", "prices.json"),
}

_STRICT_ROW = (
    STRICT_VAR, ("`1` turns an unknown or misspelled `RESILIENT_LLM_*` variable from a warning "
    "into a `ConfigError` (also `python -m resilient_llm config --strict`)."), "boolean",
    "false", "true or false (1 or 0)", "1",
)


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{a}`" for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return _type_name(args[0])
    if annotation is bool:
        return "boolean"
    if annotation is int:
        return "integer"
    if annotation is float:
        return "number"
    if annotation is str:
        return "string"
    if "secret" in getattr(annotation, "__name__", "").lower():
        return "string (secret)"
    if origin is frozenset:
        return "comma-separated list"
    return "JSON object"


def _default(field: str) -> str:
    value = Policy.model_fields[field].get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dict) and not value:
        return "{}"
    return str(value)


def rows() -> list[tuple[str, str, str, str, str, str]]:
    """(variable, meaning, type, default, accepted, example) for every setting, in field order,
    then ``RESILIENT_LLM_STRICT``."""
    missing = [f for f in Policy.model_fields if f not in MEANINGS]
    if missing:
        raise KeyError(f"no meaning documented for Policy field(s) {', '.join(missing)}: "
                       "add them to MEANINGS in resilient_llm/_config_reference.py")
    out = []
    for field, info in Policy.model_fields.items():
        meaning, example = MEANINGS[field]
        accepted = ACCEPTED.get(field, "")
        accepted = accepted.removeprefix("expected ")
        out.append((env_var(field), meaning, _type_name(info.annotation), _default(field),
                    accepted, example))
    out.append(_STRICT_ROW)
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown() -> str:
    """The configuration reference page (``docs/configuration.md``), generated from Policy."""
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated by `python -m resilient_llm config --markdown` from `Policy`; do not",
        "     edit by hand: tests/test_config_reference.py fails when page and code differ. -->",
        "",
        f"Every setting is a `{ENV_PREFIX}*` environment variable and a keyword argument of",
        "`Policy` (the field is the variable's name without the prefix, in lower case:",
        "`RESILIENT_LLM_MAX_ATTEMPTS` is `Policy(max_attempts=...)`). Keyword arguments win over",
        "the environment, which wins over the defaults: a client built with",
        "`policy=Policy(deadline=20)` still reads every other setting from the environment",
        "(the `ENABLED` kill switch, secrets, the Redis URL). Seconds accept a number or a",
        "`datetime.timedelta` in Python. `python -m resilient_llm config` prints the effective",
        "settings and where each came from; an invalid value raises `ConfigError` naming the",
        "variable, the value and what is accepted.",
        "",
        f"An unknown `{ENV_PREFIX}*` variable (a misspelling such as `RESILIENT_LLM_DEADLNE`) is",
        "reported: a warning naming the closest known variable when the first client is built,",
        f"and a line in `config`. With `{STRICT_VAR}=1` or `config --strict` it is an error.",
        "",
        "| variable | meaning | type | default | accepted | example |",
        "|---|---|---|---|---|---|",
    ]
    lines.extend(
        f"| `{var}` | {_cell(meaning)} | {_cell(kind)} | `{_cell(default)}` | "
        f"{_cell(accepted)} | `{_cell(example)}` |"
        for var, meaning, kind, default, accepted, example in rows()
    )
    lines += [
        "",
        "In Python:",
        "",
        "```python",
        "from resilient_llm import Policy",
        "from resilient_llm.openai import OpenAI",
        "",
        'client = OpenAI(policy=Policy(deadline=20, fallbacks={"gpt-4.1": ["gpt-4.1-mini"]}))',
        "```",
        "",
    ]
    return "\n".join(lines)
