"""A deterministic simulator of providers, traffic and clients, on virtual time.

It runs the library's own decision code (the request plan the drivers use) against simulated
providers, next to a control client modelled on the official SDK, with seeded randomness and
no sockets: thousands of simulated seconds take seconds. ``benchmarks/pressure_matrix.py``
prints the matrix; ``tests/test_simulator.py`` asserts the invariants on a reduced one.
"""

from __future__ import annotations

from .clients import CallResult, ControlClient, ResilientClient, World
from .loop import Loop, SimClock
from .matrix import MATRIX, REDUCED, Cell, CellMetrics, run_cell, simulate
from .providers import ProviderModel, Reply
from .traffic import Traffic

__all__ = [
    "MATRIX",
    "REDUCED",
    "CallResult",
    "Cell",
    "CellMetrics",
    "ControlClient",
    "Loop",
    "ProviderModel",
    "Reply",
    "ResilientClient",
    "SimClock",
    "Traffic",
    "World",
    "run_cell",
    "simulate",
]
