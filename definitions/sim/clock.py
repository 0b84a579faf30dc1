"""The world's clock: persisted, moving only when told to (no wall-clock time anywhere)."""

from __future__ import annotations

from .db import Db

EPOCH = 1_700_000_000.0


class SimClock:
    def __init__(self, db: Db) -> None:
        self.db = db

    def now(self) -> float:
        return float(self.db.meta("clock", str(EPOCH)))

    def advance(self, seconds: float) -> float:
        with self.db.transaction():
            now = self.now() + seconds
            self.db.set_meta("clock", repr(now))
        return now
