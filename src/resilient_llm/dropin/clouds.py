"""The cloud client classes of the official SDKs as drop-ins, built by one mechanism.

The ``openai`` package ships ``AzureOpenAI`` and ``BedrockOpenAI``; ``anthropic`` ships
``AnthropicBedrock``, ``AnthropicVertex``, ``AnthropicFoundry``, ``AnthropicAWS``,
``AnthropicGoogleCloud``, ``AnthropicBedrockMantle``; each with an async twin. Their drop-ins
differ from ``OpenAI`` / ``Anthropic`` only in the official class they extend, so they are made
here from a table rather than written out sixteen times: the same mixins as the first-party
drop-in of their SDK, then the official class.

A class the installed SDK release does not have is not exported; asking for it raises
:class:`MissingClientClass` naming the installed release and the one that ships the class,
never an error at import of the module.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

from .base import finish_class

__all__ = ["MissingClientClass", "export_cloud_classes", "missing_class"]


class MissingClientClass(ImportError):
    """A drop-in whose official class the installed SDK release does not have.

    An ``ImportError``, what ``from resilient_llm.openai import X`` users expect to catch; an
    ``AttributeError`` would lose its message there (Python replaces it with "cannot import
    name"). Only the names of the cloud-class table raise it; any other missing attribute is
    the usual ``AttributeError``.
    """


def export_cloud_classes(
    namespace: MutableMapping[str, Any],
    sdk: Any,
    since: Mapping[str, str],
    *,
    sync_bases: tuple[type, ...],
    async_bases: tuple[type, ...],
) -> list[str]:
    """Define in ``namespace`` (a module's globals) the drop-in of every class named in
    ``since`` (official name → first SDK release that has it) that ``sdk`` has; returns the
    names defined.

    Each drop-in is ``class Name(*bases, sdk.Name)`` with the async bases for ``Async*`` names,
    and gets the official constructor signature plus ``policy`` (``finish_class``).
    """
    module = namespace["__name__"]
    defined: list[str] = []
    for name in since:
        official = getattr(sdk, name, None)
        if not isinstance(official, type):
            continue
        bases = async_bases if name.startswith("Async") else sync_bases
        doc = (f"The official ``{sdk.__name__}.{name}`` with a deadline, jittered retries and "
               "``outcome()``; same constructor, plus keyword-only ``policy=``.")
        cls = type(name, (*bases, official), {
            "__doc__": doc, "__module__": module, "__qualname__": name,
        })
        finish_class(cls, official)
        namespace[name] = cls
        defined.append(name)
    return defined


def missing_class(module: str, sdk: Any, since: Mapping[str, str], name: str) -> Exception:
    """The error of ``module.name`` when it is not defined (see :class:`MissingClientClass`)."""
    first = since.get(name)
    if first is None:
        return AttributeError(f"module {module!r} has no attribute {name!r}")
    package = sdk.__name__
    return MissingClientClass(
        f"{module}.{name} is not available: the installed {package} {sdk.__version__} has no "
        f"{name} (it ships with {package} >= {first}); pip install --upgrade '{package}>={first}'"
    )
