"""Test helpers: a fault-injecting OpenAI/Anthropic provider, a fake clock and a fake random.

``FaultProvider`` speaks both providers' wire formats (JSON and SSE) well enough for the
official SDKs to parse, and misbehaves on script: error statuses with real headers, latency,
hangs, resets, cut/stalled/malformed streams, capacity and rate limits. Run it in-process with
``provider.transport()`` or as a loopback server with ``provider.serve()``. ``HostileProvider``
is a loopback server that attacks the client instead (dripped bytes, non-JSON 200s, gzip bombs,
endless bodies and keep-alive-only streams, absurd headers). See docs/testing.md.
"""

from __future__ import annotations

from .._public_names import show_as_package as _show_as_package
from . import _faults
from ._fake_clock import FakeClock, FakeRandom
from ._faults import *  # noqa: F403 (every fault value is public: listed once, there)
from ._hostile import Hostile, HostileProvider
from ._provider import FaultProvider, PrefillMode, RecordedRequest
from ._server import FaultServer
from ._transport import FaultTransport

__all__ = [
    "FakeClock",
    "FakeRandom",
    "FaultProvider",
    "FaultServer",
    "FaultTransport",
    "Hostile",
    "HostileProvider",
    "PrefillMode",
    "RecordedRequest",
]
__all__ += _faults.__all__

_show_as_package(__name__, globals(), __all__)
