"""The store reads behind the gauges: one thread of their own, at most once per interval.

A metrics collector calls its gauges' callbacks on its own thread: Prometheus's HTTP server
makes a thread per scrape, a periodic exporter has one. Reading the store there would open
a database connection per scrape (peewee keeps one per thread), so every read is handed to
one long-lived thread that keeps one connection. A reading is kept for ``interval`` seconds:
the two gauges of one collection share one reading, and many scrapers cannot make the store
count its rows more often than that.

A read that fails is logged (one warning line) and the gauges report nothing for that
collection; the next one reads again. No read runs on the event loop's thread, and none on a
step's path.
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import threading
import time

import attrs

from fsm.store import Store

log = logging.getLogger("fsm.telemetry")

READ_TIMEOUT = 10.0
"""Seconds a collection waits for a reading before it reports the gauges as absent."""


@attrs.frozen
class Reading:
    """The store's gauges at one moment."""

    live: dict[tuple[str, str], int]
    """Live actions per (kind, state)."""
    oldest_due: float
    """Seconds the longest-waiting claimable action has waited (0: none waits)."""


class GaugeReader:
    """Reads ``store``'s gauges on its own thread, at most once per ``interval`` seconds."""

    def __init__(self, store: Store, interval: float = 5.0) -> None:
        if not interval >= 0:  # also refuses NaN
            raise ValueError(f"interval must be seconds >= 0, got {interval}")
        self.store = store
        self.interval = interval
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="fsm-gauges")
        self._lock = threading.Lock()
        self._reading: Reading | None = None
        self._read_at = -math.inf

    def read(self) -> Reading | None:
        """The latest reading, read again when older than ``interval``; None if that failed."""
        with self._lock:
            if self._reading is not None and time.monotonic() - self._read_at < self.interval:
                return self._reading
            try:
                reading = self._pool.submit(self._read).result(READ_TIMEOUT)
            except Exception as exc:  # the gauges are absent from this collection
                log.warning("could not read the gauges from the database: %s", exc)
                self._reading = None
                return None
            self._reading, self._read_at = reading, time.monotonic()
            return reading

    def _read(self) -> Reading:
        store = self.store
        return Reading(store.live_counts(), store.oldest_due())

    def close(self) -> None:
        """Close the reading thread's connection and end the thread."""
        with self._lock:
            try:
                self._pool.submit(self.store.db.close).result(READ_TIMEOUT)
            except Exception as exc:  # the connection may be long gone
                log.debug("closing the gauges' connection: %s", exc)
            self._pool.shutdown(wait=False)
