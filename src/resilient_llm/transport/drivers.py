"""The drivers' former single module, kept so imports of ``transport.drivers`` still work.

The drivers now live in :mod:`.sync` and :mod:`.asynchronous`; import them from
:mod:`resilient_llm.transport`.
"""

from .asynchronous import AsyncResilientTransport
from .shared import ForeignTransportError
from .sync import ResilientTransport

__all__ = ["AsyncResilientTransport", "ForeignTransportError", "ResilientTransport"]
