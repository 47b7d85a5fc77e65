"""Early pytest plugin: the official openai suites run against resilient-llm's drop-in classes.

Loaded with ``-p rebind_openai`` before the suite's ``conftest.py``, which (like
``tests/test_client.py`` and the ``tests/lib/`` cloud suites) imports the client classes at
import time: by then the names already point at the subclasses, ``OpenAI``, ``AzureOpenAI``,
``BedrockOpenAI`` and their async twins alike.
"""

from __future__ import annotations

import openai
from _reset import pytest_runtest_setup, rebind  # type: ignore[import-not-found]

import resilient_llm.openai as dropin

__all__ = ["pytest_runtest_setup"]

rebind(openai, dropin)
