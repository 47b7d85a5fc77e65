"""Policy: defaults, environment, arguments, and errors that name what was wrong."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import Any

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


def test_the_environment_is_read_again_only_when_a_variable_of_ours_changed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Reading the environment through pydantic-settings cost about 4 ms per client, a fifth
    of what building the official client costs: an application that builds a client per
    request paid it each time. It is read once per change of a ``RESILIENT_LLM_*`` variable
    (in any case: the names are case-insensitive); other variables do not count."""
    from resilient_llm import _policy

    reads = []
    afresh = _policy._read_env_afresh

    def counted() -> dict[str, str]:
        reads.append(1)
        return afresh()

    monkeypatch.setattr(_policy, "_read_env_afresh", counted)
    monkeypatch.setenv("RESILIENT_LLM_DEADLINE", "2.5")
    assert Policy.from_env().deadline == 2.5
    assert Policy.from_env().deadline == 2.5
    monkeypatch.setenv("SOMETHING_ELSE", "1")
    assert Policy.from_env().deadline == 2.5 and len(reads) == 1
    monkeypatch.setenv("RESILIENT_LLM_DEADLINE", "4")
    assert Policy.from_env().deadline == 4.0 and len(reads) == 2
    monkeypatch.setenv("resilient_llm_max_attempts", "3")
    assert Policy.from_env().max_attempts == 3 and len(reads) == 3
    monkeypatch.delenv("resilient_llm_max_attempts")
    assert Policy.from_env().max_attempts != 3 and len(reads) == 4
    first = _policy._read_env()
    first["deadline"] = "99"  # a caller's copy: the next reading is not changed by it
    assert Policy.from_env().deadline == 4.0


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


# --- a policy given to a client keeps the environment under it ------------------------------------


def test_a_client_policy_keeps_the_environment_under_its_own_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from resilient_llm.openai import OpenAI

    monkeypatch.setenv("RESILIENT_LLM_ENABLED", "false")
    monkeypatch.setenv("RESILIENT_LLM_MAX_ATTEMPTS", "3")
    monkeypatch.setenv("RESILIENT_LLM_DEADLINE", "50")
    client = OpenAI(api_key="sk-test", base_url="http://127.0.0.1:9/v1",
                    policy=Policy(deadline=20))
    policy = client.policy
    assert policy.enabled is False  # the kill switch reaches a client built with policy=
    assert policy.max_attempts == 3 and policy.source("max_attempts") == "environment"
    assert policy.deadline == 20 and policy.source("deadline") == "argument"
    copy = client.with_options(timeout=3)
    assert copy.policy is policy  # a copy does not read the environment again
    other = client.with_options(policy=Policy(max_attempts=2))
    assert other.policy.max_attempts == 2 and other.policy.enabled is False


def test_an_explicit_argument_wins_over_the_environment_in_a_client_policy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from resilient_llm.openai import OpenAI

    monkeypatch.setenv("RESILIENT_LLM_REDIS_URL", "redis://127.0.0.1:9/0")
    client = OpenAI(api_key="sk-test", base_url="http://127.0.0.1:9/v1",
                    policy=Policy(redis_url=None))
    assert client.policy.redis_url is None


def test_without_environment_a_client_keeps_the_very_policy_it_was_given() -> None:
    from resilient_llm.openai import OpenAI

    policy = Policy(deadline=7)
    client = OpenAI(api_key="sk-test", base_url="http://127.0.0.1:9/v1", policy=policy)
    assert client.policy is policy


def test_strict_mode_and_bad_variables_reach_a_client_built_with_a_policy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from resilient_llm.openai import OpenAI

    monkeypatch.setenv("RESILIENT_LLM_STRICT", "1")
    monkeypatch.setenv("RESILIENT_LLM_DEADLNE", "3")
    with pytest.raises(ConfigError, match="RESILIENT_LLM_DEADLNE"):
        OpenAI(api_key="sk-test", base_url="http://127.0.0.1:9/v1", policy=Policy(deadline=2))
    monkeypatch.delenv("RESILIENT_LLM_DEADLNE")
    monkeypatch.setenv("RESILIENT_LLM_MAX_ATTEMPTS", "lots")
    with pytest.raises(ConfigError, match="RESILIENT_LLM_MAX_ATTEMPTS='lots'"):
        OpenAI(api_key="sk-test", base_url="http://127.0.0.1:9/v1", policy=Policy(deadline=2))


# --- values as deployment templates and callers write them ----------------------------------------


@pytest.mark.parametrize("name", ["cache_secrett", "idempotency_secrets", "redis_uri"])
def test_an_unknown_keyword_never_echoes_its_value_and_names_the_closest(name: str) -> None:
    value = "redis://:hunter2hunter2@host/0" if "redis" in name else "hunter2hunter2hunter2"
    with pytest.raises(ConfigError) as info:
        Policy(**{name: value})
    message = str(info.value)
    assert "hunter2" not in message and "hunter2" not in repr(info.value.value)
    assert f"Policy({name}=...)" in message and "did you mean" in message


def test_an_empty_namespace_variable_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESILIENT_LLM_CACHE_NAMESPACE", "")
    assert Policy.from_env().cache_namespace is None
    assert Policy(cache_namespace="").cache_namespace is None
    with pytest.raises(ConfigError, match="cache_namespace"):
        Policy(cache_namespace="   ")


def test_choices_and_flags_are_read_as_written_in_templates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RESILIENT_LLM_PRIORITY", "BATCH")
    monkeypatch.setenv("RESILIENT_LLM_ENABLED", " true ")
    monkeypatch.setenv("RESILIENT_LLM_LINT_PROMPTS", " Strict")
    policy = Policy.from_env()
    assert (policy.priority, policy.enabled, policy.lint_prompts) == ("batch", True, "strict")


@pytest.mark.parametrize("field", ["deadline", "max_attempts", "hedge_delay", "max_backoff"])
def test_true_or_false_is_not_a_number(field: str) -> None:
    with pytest.raises(ConfigError, match="not true or false"):
        Policy(**{field: True})


def test_mapping_settings_cannot_change_in_place() -> None:
    """A policy is shared by every call of its clients: an edit in place would change them
    all, past the checks that built it. Its mappings refuse; ``replace`` builds another."""
    import copy
    import pickle

    policy = Policy(fallbacks={"a": ["b"]}, context_fallbacks={"b": ["c"]},
                    stream_continuation={"x*": "prefill"},
                    region_endpoints={"eu": "https://eu.example.com"})
    for name in ("fallbacks", "context_fallbacks", "stream_continuation", "region_endpoints"):
        mapping = getattr(policy, name)
        edits: list[Callable[[Any], object]] = [
            lambda m: m.__setitem__("z", ("q",)), lambda m: m.update(z=("q",)),
            lambda m: m.pop(next(iter(m))), lambda m: m.clear(), lambda m: m.setdefault("z", ()),
            lambda m: m.__delitem__(next(iter(m)))]
        for edit in edits:
            with pytest.raises(TypeError, match="cannot change in place"):
                edit(mapping)
        assert len(mapping) == 1
    with pytest.raises(TypeError, match="cannot change in place"):
        Policy().fallbacks["a"] = ("b",)  # type: ignore[index]
    assert hash(policy) == hash(Policy(**policy.model_dump()))  # a frozen model hashes
    assert pickle.loads(pickle.dumps(policy)) == policy == copy.deepcopy(policy)
    assert policy.model_dump()["fallbacks"] == {"a": ("b",)}
    assert policy.replace(fallbacks={"a": ["c"]}).fallbacks == {"a": ("c",)}
