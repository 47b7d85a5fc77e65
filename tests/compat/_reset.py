"""Shared by the rebind plugins: the drop-ins take the official names, and process-wide
resilient-llm state is reset before each test."""

from __future__ import annotations

import sys
from types import ModuleType

import pytest


def rebind(sdk: ModuleType, dropin: ModuleType) -> list[str]:
    """Point every public name of ``sdk`` that holds a class ``dropin`` replaces at the drop-in,
    in the package and in the public modules that define or re-export it (``openai.lib.azure``,
    ``anthropic.lib.foundry``, ...), aliases included (``anthropic.Client``), since the suites
    import from all of them, as users do. Private modules (``anthropic._client``) keep the
    official classes: the SDK compares types there (``type(client) in (Anthropic,
    AsyncAnthropic)``). The SDK's internals keep working: a drop-in subclasses what it replaces.
    """
    ours = {getattr(sdk, name): getattr(dropin, name) for name in dropin.__all__
            if isinstance(getattr(dropin, name), type)
            and isinstance(getattr(sdk, name, None), type)}
    prefix = sdk.__name__ + "."
    rebound: list[str] = []
    for module_name, module in list(sys.modules.items()):
        public = not any(part.startswith("_") for part in module_name.split("."))
        if not public or not (module_name == sdk.__name__ or module_name.startswith(prefix)):
            continue
        for name, value in list(vars(module).items()):
            if isinstance(value, type) and value in ours:
                setattr(module, name, ours[value])
                rebound.append(f"{module_name}.{name}")
    return rebound


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Process-wide learned state (pressure, breakers) starts empty for every test.

    The suites' tests are independent scenarios that reuse one base URL and key; a breaker
    opened by one test's scripted 500s must not answer the next test with ``CircuitOpen``.
    """
    from resilient_llm.engine.registry import registry

    registry.clear()
