"""The secrets of the settings appear in no output: the idempotency secret, the cache secret
and passwords in URLs (``REDIS_URL``, ``IDEMPOTENCY_STORE``, region endpoints).

Every output path is searched for three sentinels: ``repr``/``str``/``model_dump`` of the
policy, ``python -m resilient_llm config``, every ConfigError, log records at DEBUG, spans and
metrics, the capture file, and the errors raised while a fleet and a ledger behind a
password-protected Redis serve real calls (and while an unreachable one fails them).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from resilient_llm import ConfigError, IdempotencyStoreUnavailable, Policy, side_effect
from resilient_llm._urls import redact_url
from resilient_llm.stores import close_stores
from resilient_llm.testing import FaultProvider
from tests.redis_server import redis_url  # noqa: F401 - fixture
from tests.test_no_secrets import (  # noqa: F401 - exporters is a fixture
    exception_texts,
    exporters,
    run_every_kind_of_call,
    telemetry_texts,
)

IDEM_SECRET = "idem-SENTINEL-5d1e0c77a9b24f"
CACHE_SECRET = "cache-SENTINEL-8b3f61e2c0d94a"
PASSWORD = "pw-SENTINEL-c4a7e19f02b6"
SENTINELS = (IDEM_SECRET, CACHE_SECRET, PASSWORD)
USER = "sentinel-user"


def assert_clean(texts: list[str]) -> None:
    haystack = "\n".join(texts)
    for needle in SENTINELS:
        assert needle not in haystack, needle


@pytest.fixture
def authed_redis(redis_url: str) -> Iterator[str]:  # noqa: F811 - the fixture
    """The session server's URL for a user that needs ``PASSWORD``."""
    admin = redis.Redis.from_url(redis_url)
    admin.acl_setuser(USER, enabled=True, passwords=[f"+{PASSWORD}"], keys=["*"],
                      channels=["*"], commands=["+@all"])
    host_port = redis_url.split("://", 1)[1].split("/", 1)[0]
    yield f"redis://{USER}:{PASSWORD}@{host_port}/0"
    close_stores()
    admin.acl_deluser(USER)
    admin.close()


def secret_settings(authed: str, tmp_path: Path) -> dict[str, Any]:
    return {
        "redis_url": authed,
        "idempotency_store": authed.replace("/0", "/1"),
        "idempotency_secret": IDEM_SECRET,
        "cache_secret": CACHE_SECRET,
        "region_endpoints": {"eu": f"https://svc:{PASSWORD}@eu.example.com/v1?token={PASSWORD}"},
        "capture_file": str(tmp_path / "capture.jsonl"),
    }


def test_redact_url_hides_every_credential() -> None:
    assert redact_url("redis://u:pw@h:1/0") == "redis://u:***@h:1/0"
    assert redact_url("redis://:pw@h/0") == "redis://:***@h/0"
    assert redact_url("https://TOKEN@h/v1") == "https://***@h/v1"
    assert redact_url("redis://h/0?password=pw&db=1") == "redis://h/0?password=***&db=1"
    assert redact_url("redis://u:p@ss@h/0") == "redis://u:***@h/0"
    assert redact_url("memory") == "memory"
    # a password its writer did not percent-encode ("/" and "?" are common in base64 ones)
    assert redact_url("redis://app:a/Pw0rd@h:6379/0") == "redis://app:***@h:6379/0"
    assert redact_url("redis://app:a?b@h:6379/0?password=x") == "redis://app:***@h:6379/0?password=***"
    assert redact_url("redis://h:6379/0?note=a@b") == "redis://h:6379/0?note=a@b"  # no userinfo


def test_policy_shows_no_secret(authed_redis: str, tmp_path: Path) -> None:
    policy = Policy(**secret_settings(authed_redis, tmp_path))
    assert policy.idempotency_secret is not None
    assert policy.idempotency_secret.get_secret_value() == IDEM_SECRET
    assert policy.redis_url == authed_redis  # the value itself is intact
    rows = [" ".join(row) for row in policy.describe()]
    texts = [repr(policy), str(policy), repr(policy.model_dump()),
             policy.model_dump_json(), *rows, repr(policy.replace(max_attempts=2))]
    assert_clean(texts)
    assert "***" in repr(policy) and USER in repr(policy)


def test_config_errors_show_no_secret() -> None:
    bad: list[dict[str, Any]] = [
        {"redis_url": f"redis://{USER}:{PASSWORD}@127.0.0.1:notaport/0"},
        {"idempotency_store": f"redis://{USER}:{PASSWORD}@127.0.0.1:notaport/0"},
        {"idempotency_store": f"postgres://{USER}:{PASSWORD}@db/x"},
        {"region_endpoints": {"eu": f"ftp://u:{PASSWORD}@h"}},
        {"region_endpoints": {"[eu]": f"https://u:{PASSWORD}@h"}},
        {"idempotency_secret": PASSWORD[:12]},
        {"cache_secret": 42},
    ]
    texts: list[str] = []
    for settings in bad:
        with pytest.raises(ConfigError) as info:
            Policy(**settings)
        texts.extend(exception_texts(info.value))
        texts.append(repr(info.value.value))
    assert_clean(texts)


def test_config_command_shows_no_secret(authed_redis: str, tmp_path: Path) -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    for name, value in secret_settings(authed_redis, tmp_path).items():
        env["RESILIENT_LLM_" + name.upper()] = value if isinstance(value, str) \
            else json.dumps(value)
    proc = subprocess.run([sys.executable, "-m", "resilient_llm", "config"], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "RESILIENT_LLM_REDIS_URL" in proc.stdout and "***" in proc.stdout
    assert_clean([proc.stdout, proc.stderr])
    env["RESILIENT_LLM_REDIS_URL"] = f"redis://{USER}:{PASSWORD}@127.0.0.1:notaport/0"
    proc = subprocess.run([sys.executable, "-m", "resilient_llm", "config"], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and "RESILIENT_LLM_REDIS_URL" in proc.stderr
    assert_clean([proc.stdout, proc.stderr])


def test_calls_logs_spans_capture_and_errors_show_no_secret(
    authed_redis: str, tmp_path: Path,
    exporters: tuple[InMemorySpanExporter, InMemoryMetricReader],  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    exporter, reader = exporters
    caplog.set_level(logging.DEBUG)
    settings = secret_settings(authed_redis, tmp_path)
    provider = FaultProvider()
    errors: list[BaseException] = []
    try:  # with the fleet on a real Redis, shared breakers may open: any outcome will do
        run_every_kind_of_call(provider, errors, **settings)
    except Exception as failure:
        errors.append(failure)
    assert errors and exporter.get_finished_spans()

    runs: list[int] = []

    @side_effect(store=settings["idempotency_store"])
    def charge(amount: int) -> int:
        runs.append(amount)
        return amount

    assert charge(5) == 5 and charge(5) == 5 and runs == [5]  # the authed ledger works

    dead = f"redis://{USER}:{PASSWORD}@127.0.0.1:1/0"

    @side_effect(store=dead)
    def refund(amount: int) -> int:
        return amount

    with pytest.raises(IdempotencyStoreUnavailable) as unavailable:
        refund(3)
    errors.append(unavailable.value)

    texts = list(telemetry_texts(exporter, reader, caplog.records))
    for exc in errors:
        texts.extend(exception_texts(exc))
    capture = Path(settings["capture_file"])
    assert capture.exists() and capture.read_text().strip()
    texts.append(capture.read_text())
    texts.extend(repr(r.__dict__) for r in caplog.records)  # every logger, at DEBUG
    assert_clean(texts)
