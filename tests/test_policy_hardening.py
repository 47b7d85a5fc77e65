"""Configuration that is useless or dangerous is a ConfigError at construction, never later."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from resilient_llm import ConfigError, Policy


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("redis_url", "redis://127.0.0.1:notaport/0"),
        ("redis_url", "redis://127.0.0.1:99999/0"),
        ("redis_url", "redis://127.0.0.1:6379/notadb"),
        ("redis_url", "redis://"),
        ("redis_url", "unix://"),
        ("idempotency_store", "redis://127.0.0.1:notaport/0"),
        ("idempotency_store", "rediss://:pw@/0"),
    ],
)
def test_urls_are_parsed_fully(field: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        Policy(**{field: value})
    assert info.value.field == field


def test_good_urls_still_pass() -> None:
    policy = Policy(redis_url="redis://user:pw@127.0.0.1:6380/2",
                    idempotency_store="rediss://redis.internal/0")
    assert policy.redis_url is not None and policy.redis_url.endswith(":6380/2")
    assert Policy(redis_url="unix:///run/redis.sock?db=1").redis_url


def test_deep_fallback_chain_is_a_config_error_not_recursion() -> None:
    chain = {f"m{i}": [f"m{i + 1}"] for i in range(3000)}
    with pytest.raises(ConfigError, match="deep"):
        Policy(fallbacks=json.dumps(chain))
    with pytest.raises(ConfigError, match="deep"):
        Policy(context_fallbacks=chain)


def test_a_reasonably_long_chain_passes() -> None:
    chain = {f"m{i}": [f"m{i + 1}"] for i in range(30)}
    assert len(Policy(fallbacks=chain).fallbacks) == 30


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("RESILIENT_LLM_DEADLINE", "1e-320"),
        ("RESILIENT_LLM_DEADLINE", "0.001"),
        ("RESILIENT_LLM_REGION", "[1]"),
        ("RESILIENT_LLM_REGION", "eu west"),
        ("RESILIENT_LLM_ALLOWED_REGIONS", "eu,[1]"),
        ("RESILIENT_LLM_REGION_ENDPOINTS", '{"": "https://api.example.com"}'),
        ("RESILIENT_LLM_REGION_ENDPOINTS", '{"eu": "http://"}'),
        ("RESILIENT_LLM_REGION_ENDPOINTS", '{"eu": "https://:443/v1"}'),
        ("RESILIENT_LLM_REGION_ENDPOINTS", '{"e u": "https://eu.example.com"}'),
        ("RESILIENT_LLM_HEDGE_DELAY", "\u0663"),
        ("RESILIENT_LLM_DEADLINE", "\u0663\u0660"),
        ("RESILIENT_LLM_MAX_ATTEMPTS", "\u0663"),
        ("RESILIENT_LLM_HEDGE_BUDGET", "0.\u0665"),
        ("RESILIENT_LLM_CACHE_NAMESPACE", "acme\nprod"),
        ("RESILIENT_LLM_CACHE_NAMESPACE", "acme\x07"),
        ("RESILIENT_LLM_CACHE_NAMESPACE", "acme\u200b"),
    ],
)
def test_useless_or_dangerous_values_are_rejected(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as info:
        Policy.from_env()
    assert info.value.variable == variable


def test_nul_in_namespace_argument() -> None:
    with pytest.raises(ConfigError, match="control"):
        Policy(cache_namespace="acme\x00")


def test_sane_values_still_pass() -> None:
    policy = Policy(deadline=0.05, region="eu-west-1", allowed_regions="us,eu-west-1",
                    region_endpoints={"EU": "https://eu.example.com/v1/"},
                    hedge_delay="0.25", cache_namespace="acme/prod team", max_attempts="3")
    assert policy.region == "eu-west-1" and policy.hedge_delay == 0.25
    assert policy.region_endpoints == {"eu": "https://eu.example.com/v1"}
    assert policy.max_attempts == 3


def test_context_fallbacks_star_and_entries_that_never_apply() -> None:
    assert Policy(context_fallbacks={"*": ["big"]}).context_fallbacks == {"*": ("big",)}
    useless_entries: list[dict[str, list[str]]] = [
        {"small": []}, {"small@eu": ["big"]}, {"small": ["*"]}, {"*": []}]
    for useless in useless_entries:
        with pytest.raises(ConfigError, match="never"):
            Policy(context_fallbacks=useless)
    with pytest.raises(ConfigError, match="never"):
        Policy(fallbacks={"a": []})


# --- RESILIENT_LLM_PRICES_FILE -------------------------------------------------------------------


def _prices_error(monkeypatch: pytest.MonkeyPatch, path: str) -> ConfigError:
    monkeypatch.setenv("RESILIENT_LLM_PRICES_FILE", path)
    with pytest.raises(ConfigError) as info:
        Policy.from_env()
    assert info.value.variable == "RESILIENT_LLM_PRICES_FILE"
    return info.value


def test_prices_file_must_be_a_regular_file(monkeypatch: pytest.MonkeyPatch) -> None:
    started = time.monotonic()
    error = _prices_error(monkeypatch, "/dev/urandom")
    assert time.monotonic() - started < 2.0
    assert "regular file" in str(error)


def test_prices_file_fifo_does_not_hang(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fifo = tmp_path / "prices.fifo"
    os.mkfifo(fifo)
    outcome: list[BaseException | None] = []

    def build() -> None:
        try:
            monkeypatch.setenv("RESILIENT_LLM_PRICES_FILE", str(fifo))
            Policy.from_env()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=build, daemon=True)
    worker.start()
    worker.join(5.0)
    if worker.is_alive():  # unblock the reader so the thread ends, then fail
        with open(fifo, "w"):
            pass
        worker.join(5.0)
        pytest.fail("Policy construction hung on a FIFO named by RESILIENT_LLM_PRICES_FILE")
    assert isinstance(outcome[0], ConfigError)
    assert "regular file" in str(outcome[0])


def test_prices_file_is_size_capped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    big = tmp_path / "prices.json"
    entry = '"m%d": {"input": 1, "output": 2}'
    big.write_text("{" + ", ".join(entry % i for i in range(200_000)) + "}")
    assert big.stat().st_size > 4 * 1024 * 1024
    error = _prices_error(monkeypatch, str(big))
    assert "MiB" in str(error)


def test_prices_file_missing_or_a_directory(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    assert "cannot be read" in str(_prices_error(monkeypatch, str(tmp_path / "none.json")))
    assert "regular file" in str(_prices_error(monkeypatch, str(tmp_path)))


def test_prices_file_still_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    good = tmp_path / "prices.json"
    good.write_text('{"gpt-4.1": {"input": 2.0, "output": 8.0}}')
    monkeypatch.setenv("RESILIENT_LLM_PRICES_FILE", str(good))
    assert Policy.from_env().prices_file == str(good)
