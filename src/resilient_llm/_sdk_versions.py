"""Which official SDK releases the drop-ins support: the one place for these bounds.

The drop-ins subclass the official clients and rely on a few of their private hooks, so a
release older than the oldest supported one fails at import with a clear message, while a
release newer than the newest tested one only warns (once): it most likely works, and an upper
pin would stop users from upgrading the official SDK. ``pyproject.toml``'s extras carry the
same lower bounds, ``tests/compat/run_sdk_suites.py`` knows both releases' test suites, and CI
runs the suite against both (tests check that these agree).
"""

from __future__ import annotations

import re
import warnings
from typing import Literal

__all__ = ["SDK_VERSIONS", "check_sdk_version", "sdk_version_status"]

#: SDK → (oldest supported, newest tested).
SDK_VERSIONS: dict[str, tuple[str, str]] = {
    "openai": ("3.50.0", "3.63.0"),
    "anthropic": ("2.10.0", "2.17.0"),
}

_warned: set[tuple[str, str]] = set()


def _release(version: str) -> tuple[int, ...]:
    """The numeric release of a version string (``3.63.0rc1`` → ``(3, 63, 0)``)."""
    match = re.match(r"\d+(?:\.\d+)*", version.strip())
    if match is None:
        raise ValueError(f"not a version: {version!r}")
    parts = [int(p) for p in match.group(0).split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def sdk_version_status(sdk: str, installed: str) -> Literal["too_old", "supported", "newer"]:
    """Where ``installed`` stands against the supported range of ``sdk``."""
    oldest, newest = SDK_VERSIONS[sdk]
    release = _release(installed)
    if release < _release(oldest):
        return "too_old"
    if release > _release(newest):
        return "newer"
    return "supported"


def missing_sdk(sdk: str) -> ImportError:
    """The error of ``resilient_llm.<sdk>`` imported without the official SDK it wraps."""
    return ImportError(
        f"resilient_llm.{sdk} needs the official {sdk} package: "
        f"pip install 'resilient-llm[{sdk}]'"
    )


def check_sdk_version(sdk: str, installed: str) -> None:
    """Fail on an SDK older than supported; warn once on one newer than the newest tested."""
    oldest, newest = SDK_VERSIONS[sdk]
    status = sdk_version_status(sdk, installed)
    if status == "too_old":
        raise ImportError(
            f"resilient_llm.{sdk} needs {sdk} >= {oldest}, but {sdk} {installed} is installed: "
            f"python -m pip install --upgrade 'resilient-llm[{sdk}]'"
        )
    if status == "newer" and (sdk, installed) not in _warned:
        _warned.add((sdk, installed))
        warnings.warn(
            f"{sdk} {installed} is newer than {newest}, the newest release resilient-llm was "
            f"tested with; it should work, and if it does not, pin {sdk}<={newest} and "
            "report it",
            UserWarning,
            stacklevel=3,
        )
