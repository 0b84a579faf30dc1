"""The store reads behind the gauges: one thread of their own, at most once per interval.

A metrics collector calls its gauges' callbacks on its own thread: Prometheus's HTTP server
makes a thread per scrape, a periodic exporter has one. Reading the store there would open
a database connection per scrape (peewee keeps one per thread), so every read is handed to
one long-lived thread that keeps one connection. A reading is kept for ``interval`` seconds,
and at least `COST_SHARE` times as long as it took: the two gauges of one collection share
one reading, many scrapers cannot make the store count its rows more often than that, and
on a table so large that counting takes long (about a millisecond per thousand live rows on
SQLite here) the gauges refresh less often rather than keep the database busy.

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

COST_SHARE = 10.0
"""A reading is kept at least this many times as long as it took to read: the gauges keep
the database busy a tenth of the time at most."""


@attrs.frozen
class Reading:
    """The store's gauges at one moment."""

    live: dict[tuple[str, str], int]
    """Live actions per (kind, state)."""
    oldest_due: float
    """Seconds the longest-waiting claimable action has waited (0: none waits)."""


class GaugeReader:
    """Reads ``store``'s gauges on its own thread, at most once per ``interval`` seconds and
    per ``cost_share`` times the last reading's duration."""

    def __init__(
        self, store: Store, interval: float = 5.0, *, cost_share: float = COST_SHARE
    ) -> None:
        if not interval >= 0:  # also refuses NaN
            raise ValueError(f"interval must be seconds >= 0, got {interval}")
        self.store = store
        self.interval = interval
        self.cost_share = cost_share
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="fsm-gauges")
        self._lock = threading.Lock()
        self._reading: Reading | None = None
        self._read_at = -math.inf
        self._kept = interval  # seconds the current reading is kept

    def read(self) -> Reading | None:
        """The latest reading, read again when older than ``interval``; None if that failed."""
        with self._lock:
            started = time.monotonic()
            if self._reading is not None and started - self._read_at < self._kept:
                return self._reading
            try:
                reading = self._pool.submit(self._read).result(READ_TIMEOUT)
            except Exception as exc:  # the gauges are absent from this collection
                log.warning("could not read the gauges from the database: %s", exc)
                self._reading = None
                return None
            self._read_at = time.monotonic()
            self._kept = max(self.interval, self.cost_share * (self._read_at - started))
            self._reading = reading
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
