"""Shared by the rebind plugins: process-wide resilient-llm state is reset before each test."""

from __future__ import annotations

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    from resilient_llm.engine.pressure import registry

    registry.clear()
