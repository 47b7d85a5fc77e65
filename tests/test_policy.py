"""Policy: defaults, environment, arguments, and errors that name what was wrong."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import pytest
from pydantic import ValidationError

from resilient_llm import ConfigError, Policy


def test_defaults() -> None:
    policy = Policy()
    assert policy.enabled and policy.deadline == 600.0 and policy.max_attempts == 4
    assert policy.fallbacks == {} and policy.priority == "interactive"
    assert policy.source("deadline") == "default"


def test_environment_then_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESILIENT_LLM_DEADLINE", "2.5")
    monkeypatch.setenv("RESILIENT_LLM_MAX_ATTEMPTS", "3")
    monkeypatch.setenv("RESILIENT_LLM_FALLBACKS", '{"gpt-4.1": ["gpt-4.1-mini"]}')
    monkeypatch.setenv("RESILIENT_LLM_ENABLED", "false")
    monkeypatch.setenv("RESILIENT_LLM_ALLOWED_REGIONS", "us, EU")
    policy = Policy.from_env(max_attempts=2)
    assert policy.deadline == 2.5 and policy.source("deadline") == "environment"
    assert policy.max_attempts == 2 and policy.source("max_attempts") == "argument"
    assert policy.fallbacks == {"gpt-4.1": ("gpt-4.1-mini",)}
    assert policy.enabled is False
    assert policy.allowed_regions == frozenset({"us", "eu"})
    assert policy.source("priority") == "default"


@pytest.mark.parametrize(
    ("variable", "value", "accepted"),
    [
        ("RESILIENT_LLM_DEADLINE", "soon", "expected seconds"),
        ("RESILIENT_LLM_DEADLINE", "-1", "expected seconds"),
        ("RESILIENT_LLM_MAX_ATTEMPTS", "0", "from 1 to 20"),
        ("RESILIENT_LLM_ENABLED", "maybe", "true or false"),
        ("RESILIENT_LLM_PRIORITY", "urgent", "interactive or batch"),
        ("RESILIENT_LLM_FALLBACKS", "{not json", "JSON object"),
        ("RESILIENT_LLM_FALLBACKS", '{"a": "b"}', "must be a list"),
        ("RESILIENT_LLM_FALLBACKS", '{"a": ["b"], "b": ["c"], "c": ["a"]}', "cycle a → b → c → a"),
        ("RESILIENT_LLM_IDEMPOTENCY_STORE", "postgres://x", "memory, sqlite"),
        ("RESILIENT_LLM_FIRST_TOKEN_TIMEOUT", "0", "seconds"),
    ],
)
def test_bad_environment_names_variable_value_and_accepted(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, accepted: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as info:
        Policy.from_env()
    message = str(info.value)
    assert message.startswith(f"{variable}=")
    assert value[:10] in message
    assert accepted in message
    assert info.value.variable == variable


def test_bad_argument_names_the_argument() -> None:
    with pytest.raises(ConfigError, match=r"Policy\(max_attempts=\.\.\.\)='?0'? is invalid"):
        Policy(max_attempts=0)
    with pytest.raises(ConfigError, match="unknown setting"):
        Policy(deadlines=3)


def test_secrets_are_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESILIENT_LLM_CACHE_SECRET", "tiny-secret")
    with pytest.raises(ConfigError) as info:
        Policy.from_env()
    assert "tiny-secret" not in str(info.value)
    shown = {row[1]: row[2] for row in Policy(cache_secret="s" * 32).describe()}
    assert "s" * 32 not in shown["cache_secret"]


def test_timedelta_and_immutability() -> None:
    policy = Policy(deadline=timedelta(seconds=90))
    assert policy.deadline == 90.0
    with pytest.raises(ValidationError, match="frozen"):
        policy.deadline = 1
    changed = policy.replace(max_attempts=2)
    assert changed.max_attempts == 2 and policy.max_attempts == 4
    assert changed.source("deadline") == "argument" and changed.source("max_attempts") == "argument"


def test_config_command_shows_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"RESILIENT_LLM_DEADLINE": "12", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-m", "resilient_llm", "config"], env=env, capture_output=True,
        text=True, check=True, timeout=60,
    ).stdout
    line = next(line for line in out.splitlines() if "RESILIENT_LLM_DEADLINE" in line)
    assert "12" in line and "environment" in line
    assert "RESILIENT_LLM_MAX_ATTEMPTS" in out and "default" in out


def test_config_command_reports_bad_values() -> None:
    env = {"RESILIENT_LLM_DEADLINE": "nope", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-m", "resilient_llm", "config"], env=env, capture_output=True,
        text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert "RESILIENT_LLM_DEADLINE='nope' is invalid" in proc.stderr
