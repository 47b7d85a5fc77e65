"""Early pytest plugin: the official anthropic suite runs against resilient-llm's drop-in classes.

Loaded with ``-p rebind_anthropic`` before the suite's ``conftest.py``, which (like
``tests/test_client.py``) does ``from anthropic import Anthropic, AsyncAnthropic`` at import
time: by then the names already point at the subclasses. The suite's own early plugin
(``-p tests._alias_httpx``, from its pyproject) still loads first.
"""

from __future__ import annotations

import anthropic
import pytest

from resilient_llm.anthropic import Anthropic, AsyncAnthropic

anthropic.Anthropic = Anthropic  # type: ignore[misc]
anthropic.AsyncAnthropic = AsyncAnthropic  # type: ignore[misc]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Process-wide learned state (pressure, breakers) starts empty for every test.

    The suite's tests are independent scenarios that reuse one base URL and key; a breaker
    opened by one test's scripted 500s must not answer the next test with ``CircuitOpen``.
    """
    from resilient_llm.engine.pressure import registry

    registry.clear()
