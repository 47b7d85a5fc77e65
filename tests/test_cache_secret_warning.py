"""Prompt-cache keys without a configured secret keep working, and say so once."""

from __future__ import annotations

import logging

import pytest

from resilient_llm import Policy, prompt_cache_key
from resilient_llm.caching import keys
from resilient_llm.caching.keys import prepare_openai_body

REQUEST = {"model": "gpt-4.1", "messages": [{"role": "system", "content": "be brief"},
                                            {"role": "user", "content": "hi"}]}


@pytest.fixture(autouse=True)
def _not_warned_yet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keys, "_warned_public_salt", False)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "resilient_llm.caching" and r.levelno == logging.WARNING]


def test_public_salt_warns_once_naming_the_variable(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    first = prompt_cache_key(REQUEST)
    assert first == prompt_cache_key(REQUEST)  # still works, still deterministic
    prepare_openai_body(REQUEST, Policy())
    shown = warnings_of(caplog)
    assert len(shown) == 1
    assert "RESILIENT_LLM_CACHE_SECRET" in shown[0] and "public" in shown[0]


def test_no_warning_with_a_secret(caplog: pytest.LogCaptureFixture,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.WARNING)
    body = prepare_openai_body(REQUEST, Policy(cache_secret="s" * 32))
    prompt_cache_key(REQUEST, secret="t" * 32)
    monkeypatch.setenv("RESILIENT_LLM_CACHE_SECRET", "u" * 32)
    assert prompt_cache_key(REQUEST) != prompt_cache_key(REQUEST, secret="t" * 32)
    assert body["prompt_cache_key"].startswith("rl1-")
    assert warnings_of(caplog) == []
