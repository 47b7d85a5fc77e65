"""Shared by the rebind plugins: the drop-ins take the official names, and process-wide
resilient-llm state is reset before each test."""

from __future__ import annotations

import sys
from types import ModuleType

import pytest


def rebind(sdk: ModuleType, dropin: ModuleType) -> list[str]:
    """Point every public name of ``sdk`` that ``dropin`` exports at the drop-in class, in the
    package and in the public modules that define or re-export it (``openai.lib.azure``,
    ``anthropic.lib.foundry``, ...), since the suites import from both, as users do. Private
    modules (``anthropic._client``) keep the official classes: the SDK compares types there
    (``type(client) in (Anthropic, AsyncAnthropic)``), and the official class tested beside
    the drop-in (through an alias such as ``anthropic.Client``) must still be itself."""
    names = [n for n in dropin.__all__ if isinstance(getattr(dropin, n), type)
             and isinstance(getattr(sdk, n, None), type)]
    prefix = sdk.__name__ + "."
    for name in names:
        official, ours = getattr(sdk, name), getattr(dropin, name)
        for module_name, module in list(sys.modules.items()):
            public = not any(part.startswith("_") for part in module_name.split("."))
            if public and (module_name == sdk.__name__ or module_name.startswith(prefix)) \
                    and getattr(module, name, None) is official:
                setattr(module, name, ours)
    return names


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Process-wide learned state (pressure, breakers) starts empty for every test.

    The suites' tests are independent scenarios that reuse one base URL and key; a breaker
    opened by one test's scripted 500s must not answer the next test with ``CircuitOpen``.
    """
    from resilient_llm.engine.pressure import registry

    registry.clear()
