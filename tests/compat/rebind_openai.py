"""Early pytest plugin: the official openai suite runs against resilient-llm's drop-in classes.

Loaded with ``-p rebind_openai`` before the suite's ``conftest.py``, which (like
``tests/test_client.py``) does ``from openai import OpenAI, AsyncOpenAI`` at import time: by
then the names already point at the subclasses. ``openai._client`` keeps the official classes,
so only code that goes through the public names (as users do) sees the drop-ins.
"""

from __future__ import annotations

import openai
import pytest

from resilient_llm.openai import AsyncOpenAI, OpenAI

openai.OpenAI = OpenAI  # type: ignore[misc]
openai.AsyncOpenAI = AsyncOpenAI  # type: ignore[misc]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Process-wide learned state (pressure, breakers) starts empty for every test.

    The suite's tests are independent scenarios that reuse one base URL and key; a breaker
    opened by one test's scripted 500s must not answer the next test with ``CircuitOpen``.
    """
    from resilient_llm.engine.pressure import registry

    registry.clear()
