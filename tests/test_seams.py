"""The private dependencies listed in ``dropin/seams.py`` exist in the installed libraries.

Each seam is probed on a real object of its owner: a moved or renamed attribute fails here,
by name, not in a caller's request.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import pytest

from resilient_llm.dropin.seams import SEAMS, Seam


def _owner(path: str) -> Any:
    module, _, name = path.rpartition(".")
    try:
        return importlib.import_module(path)
    except ImportError:
        return getattr(importlib.import_module(module), name)


def _has(seam: Seam) -> bool:
    owner = _owner(seam.owner)
    if inspect.ismodule(owner) or hasattr(owner, seam.name):
        return hasattr(owner, seam.name)
    # An instance attribute: set in the constructor of the class or one of its bases.
    sources = []
    for klass in inspect.getmro(owner):
        init = klass.__dict__.get("__init__")
        if init is not None and hasattr(init, "__code__"):
            sources.append(inspect.getsource(init))
    return any(f"self.{seam.name} =" in text or f"self.{seam.name}:" in text for text in sources)


@pytest.mark.parametrize("seam", SEAMS, ids=[f"{s.owner}.{s.name}" for s in SEAMS])
def test_every_listed_private_dependency_is_still_there(seam: Seam) -> None:
    assert _has(seam), (
        f"{seam.owner}.{seam.name} is gone from the installed version; resilient-llm needs it "
        f"in {seam.used_in} ({seam.why}): adapt that code before widening the version range"
    )


def test_the_clients_have_them_as_constructed() -> None:
    import anthropic
    import httpx2
    import openai

    checks = [
        (httpx2.Client(), ("_mounts", "_transport")),
        (openai.OpenAI(api_key="sk-test"), ("_client",)),
        (anthropic.Anthropic(api_key="sk-test"), ("_client", "_token_cache")),
    ]
    for obj, names in checks:
        for name in names:
            assert hasattr(obj, name), f"{type(obj).__name__}.{name} is gone"


def test_a_missing_seam_is_reported() -> None:
    assert not _has(Seam("httpx2.Client", "_no_such_attribute", "nowhere", "a probe"))
