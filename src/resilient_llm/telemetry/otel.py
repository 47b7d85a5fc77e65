"""Telemetry's public face: what applications, the drop-in clients and tests call.

Telemetry is a set of sinks over one value built once per call (``summary``): spans
(``spans``), metrics (``metrics``), log lines (``logs``), the capture file (``capture``) and
``outcome().cost``, fed by one listener on the engine's event bus (``listener``). The drop-in
clients wire it (:func:`attach`) when they wrap a transport; names and versions live in
``conventions``, the choice of tracer and meter provider in ``providers``. Only
``opentelemetry-api`` is used: without an SDK the listener takes its lean path (log lines only).
"""

from __future__ import annotations

from .listener import attach, install, installed, uninstall
from .providers import configure

__all__ = ["attach", "configure", "install", "installed", "uninstall"]
