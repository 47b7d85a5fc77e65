"""Half-seconds of sending whose 429s follow the send rate, as a rate limit's do (or do not:
refused at random), for tests of ``engine.refusals`` and of the pressure state."""

from __future__ import annotations

import random

from resilient_llm.engine.refusals import RefusalShare, SendWindows


def limit_windows(windows: SendWindows | RefusalShare, *, end: float = 0.0,
                  allowed: int = 10, share: float | None = None, seed: int = 0,
                  steady: bool = False) -> None:
    """Twelve half-seconds of sending before ``end``, of 4 to 26 attempts each (``steady``:
    15), Poisson-like: beyond ``allowed`` in one, every attempt is refused, as a rate limit
    refuses; with ``share``, each is refused with that probability instead, at any rate."""
    rng = random.Random(seed)
    for index in range(12):
        at = end - 7.0 + 0.5 * index
        sends = 15 if steady else rng.randint(4, 26)
        for number in range(sends):
            windows.sent(at)
            refused = number >= allowed if share is None else rng.random() < share
            if refused:
                if isinstance(windows, SendWindows):
                    windows.refused(at)
                else:
                    windows.record(True, at)
