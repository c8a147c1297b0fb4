"""How often a long computation writes its state to disk (issue 8, reliability).

A checkpoint or an autosaved session is rewritten whole each time, and its size grows
with the run: written after every chunk, the 82 MB checkpoint of a 4 × 40 000-step
simulation took 53 s of a 15 s run.  :class:`WritePacer` spaces the writes so that they
take at most a given share of the time, never more often than a given interval, and
leaves the forced ones (the first, the last, before a stop) to the caller.
"""

from __future__ import annotations

import time

WRITE_SHARE = 0.05      # at most this fraction of a run's time goes to its periodic writes


class WritePacer:
    """``due()`` is true once ``max(min_interval, cost / share)`` seconds have passed since
    the end of the last write, where ``cost`` is how long that write took (true before
    any write).  Write through :meth:`write`, or record a write with ``wrote(start)`` just
    after it."""

    def __init__(self, share: float = WRITE_SHARE, min_interval: float = 0.0):
        self.share, self.min_interval = share, min_interval
        self.last: float | None = None        # end of the last write (perf_counter)
        self.cost = 0.0

    def due(self) -> bool:
        if self.last is None:
            return True
        wait = max(self.min_interval, self.cost / self.share)
        return time.perf_counter() - self.last >= wait

    def write(self, save, *args) -> None:
        """``save(*args)``, timed for the next :meth:`due`."""
        start = time.perf_counter()
        save(*args)
        self.wrote(start)

    def wrote(self, start: float) -> None:
        self.last = time.perf_counter()
        self.cost = self.last - start
