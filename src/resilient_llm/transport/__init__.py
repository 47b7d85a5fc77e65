"""The drivers: perform a request's plan with sync or async I/O.

``sync`` and ``asynchronous`` are the two httpx2 transports (I/O only); ``streams`` is the
stream inspection both share, without I/O; ``watchdog`` bounds the sync driver's blocking
reads; ``shared`` holds the request edits and the plan set-up both drivers use.
"""

from .asynchronous import AsyncResilientTransport
from .shared import ForeignTransportError
from .sync import ResilientTransport

__all__ = ["AsyncResilientTransport", "ForeignTransportError", "ResilientTransport"]
