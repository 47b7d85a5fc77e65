"""Shared fixtures. Environment variables of resilient-llm never leak between tests."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _clean_resilient_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("RESILIENT_LLM_"):
            monkeypatch.delenv(name)
    yield


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _fresh_pressure_state() -> Iterator[None]:
    """Each test starts with no learned pressure (limits, budgets) from earlier tests."""
    from resilient_llm.engine.pressure import registry

    registry.clear()
    yield
    registry.clear()
