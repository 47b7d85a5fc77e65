"""What the fault provider decides for one request, and what its drivers carry out.

The provider (``_provider.py``) makes a :class:`Plan` per request; the in-process transport
and the loopback server (``_transport.py``, ``_server.py``) carry plans out and report back
through :class:`PlanSource`. Keeping these types here lets the drivers depend on them without
importing the provider that starts them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from typing import Any, Final, Protocol

__all__ = ["CUT", "Plan", "PlanSource", "RecordedRequest", "Step"]


class _Cut:
    """Step marker: drop the connection here."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "CUT"


CUT: Final = _Cut()
Step = bytes | float | _Cut


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the provider saw it: what tests assert on after the fact.

    ``status`` is what was answered (``None`` when nothing was: hang, reset, timeout before
    headers); ``client_disconnected`` is True when the client closed the connection before the
    response was complete, which is how a test proves that abandoning a stream closes upstream.
    ``prefill`` is the text of a final assistant turn the request ended with (``None`` when it
    ended with a user turn), whatever the provider's prefill mode made of it.
    """

    index: int
    method: str
    path: str
    headers: dict[str, str]
    json: Any
    model: str | None
    stream: bool
    started_at: float
    ended_at: float | None
    status: int | None
    fault: str
    client_disconnected: bool
    prefill: str | None = None

    @property
    def finished(self) -> bool:
        """True once the exchange is over, whichever way it ended."""
        return self.ended_at is not None


@dataclass(slots=True)
class _Entry:
    """One request in the provider's log: ``asked`` is fixed on arrival (its outcome fields at
    their start values), the fields here fill in as the exchange goes on."""

    asked: RecordedRequest
    fault: str = "ok"
    ended_at: float | None = None
    status: int | None = None
    client_disconnected: bool = False
    prefill: str | None = None

    def snapshot(self) -> RecordedRequest:
        return replace(
            self.asked, fault=self.fault, ended_at=self.ended_at, status=self.status,
            client_disconnected=self.client_disconnected, prefill=self.prefill,
        )


@dataclass(slots=True)
class Plan:
    """What a driver must do for one request. ``steps`` is a streamed body, else ``body``."""

    entry: _Entry
    action: str  # "respond" | "hang" | "reset"
    delay: float
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    steps: list[Step] | None = None
    chunked: bool = False  # framing of ``steps``: chunked (SSE) or Content-Length (cut JSON)
    release: threading.Event | None = None  # set when ``FaultProvider.reset`` frees hangs
    finished: bool = False


class PlanSource(Protocol):
    """What a driver needs of the provider: a plan per request, and the end of each exchange."""

    def _begin(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Plan: ...

    def _answering(self, plan: Plan) -> None: ...

    def _finish(self, plan: Plan, *, answered: bool, disconnected: bool) -> None: ...
