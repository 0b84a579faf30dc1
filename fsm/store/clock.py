"""The database's clock, as every host driving one database must read it.

Lease expiries, wake-ups and claims written by many hosts must agree on one clock, or a
host whose clock runs ahead takes live leases. SQLite serves one host: its clock.
PostgreSQL: the local clock plus its offset from the server's ``clock_timestamp()``,
measured at connect and again every `CHECK_EVERY` seconds (one cheap query, never on each
call).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from fsm.store.connection import WRAP_ERRORS

log = logging.getLogger("fsm.store")

CHECK_EVERY = 60.0
"""Seconds between two measurements of the database clock's offset."""

SERVER_CLOCK = "SELECT EXTRACT(EPOCH FROM clock_timestamp())"


class DatabaseClock:
    """``local`` (unix seconds) corrected to a server's clock; ``connection`` reaches the
    server, or is ``None`` for a database on this host (no correction)."""

    def __init__(self, local: Callable[[], float], connection: Callable[[], Any] | None) -> None:
        self._local = local
        self._connection = connection
        self._offset = 0.0
        self._checked_at = -CHECK_EVERY
        if connection is not None:
            self._measure(connection)

    def now(self) -> float:
        """The current unix time on the database's clock."""
        connection = self._connection
        if connection is not None and time.monotonic() - self._checked_at >= CHECK_EVERY:
            self._measure(connection)
        return self._local() + self._offset

    def _measure(self, connection: Callable[[], Any]) -> None:
        """Measure the server clock's offset from the local one; keep the old on failure."""
        self._checked_at = time.monotonic()
        try:
            before = self._local()
            with WRAP_ERRORS:  # not a write: test hooks on statements leave it alone
                server = connection().execute(SERVER_CLOCK).fetchone()[0]
            after = self._local()
        except Exception as exc:  # measured again at the next check; the old offset stands
            log.warning("could not read the database clock, keeping the last offset: %s", exc)
            return
        self._offset = float(server) - (before + after) / 2
