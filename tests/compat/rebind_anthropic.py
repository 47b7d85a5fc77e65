"""Early pytest plugin: the official anthropic suites run against resilient-llm's drop-in classes.

Loaded with ``-p rebind_anthropic`` before the suite's ``conftest.py``, which (like
``tests/test_client.py`` and the ``tests/lib/`` cloud suites) imports the client classes at
import time: by then the names already point at the subclasses, ``Anthropic`` and every cloud
class alike. The suite's own early plugin (``-p tests._alias_httpx``, from its pyproject) still
loads first.
"""

from __future__ import annotations

import anthropic
from _reset import pytest_runtest_setup, rebind  # type: ignore[import-not-found]

import resilient_llm.anthropic as dropin

__all__ = ["pytest_runtest_setup"]

rebind(anthropic, dropin)
