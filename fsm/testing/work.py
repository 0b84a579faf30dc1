"""What a crash run reads off the store between drivers: did a kill interrupt live work?

Only a kill that interrupted live work counts as one (`CrashReport.kills`): when the driver
died, the store still held a live action (not quarantined) *and* the driver had already
changed the store (see `Work`). Anything else is an idle kill, which proves nothing.
"""

from __future__ import annotations

from pathlib import Path

import attrs

from fsm.store import open_store
from fsm.store.opening import sqlite_path


@attrs.frozen
class Work:
    """What a store shows of its drivers' progress: its live actions and its log's end.

    ``live`` holds (id, state, attempts, wake_at, lease owner) of every live, not
    quarantined action: a claim sets the owner, a step moves the state or the wake-up time
    (``0`` between the steps of a drive), a start adds an id and an end removes one.
    ``logged`` is the highest transition-log id (a step that stays in its state adds a row).
    ``events`` counts the inbox's rows and those taken: a send to an action already due
    changes nothing else of its row, and it is work all the same.
    """

    live: frozenset[tuple[str, str, int, float | None, str | None]]
    logged: int
    events: tuple[int, int] = (0, 0)

    def interrupted(self, before: Work) -> bool:
        """Whether a driver that started at ``before`` and died at ``self`` cut live work short."""
        return bool(self.live) and self != before


NO_WORK = Work(frozenset(), 0)


def work(url: str) -> Work:
    """The store at ``url`` as it is now (never creates a SQLite file that is not there)."""
    path = sqlite_path(url)
    if path is not None and not Path(path).exists():
        return NO_WORK
    store = open_store(url)
    try:
        live = frozenset(
            (r.id, r.state, r.attempts, r.wake_at, r.lease_owner)
            for r in store.rows()
            if r.quarantine is None
        )
        log = store.transitions()
        counts = "SELECT count(*), count(consumed_at) FROM fsm_event"
        sent, taken = store.db.execute_sql(counts).fetchone()  # type: ignore[no-untyped-call]
    finally:
        store.close()
    return Work(live, int(log[-1].id) if log else 0, (int(sent), int(taken)))


def completed(url: str) -> int:
    """How many actions the store at ``url`` ended, according to its transition log."""
    store = open_store(url)
    try:
        return sum(1 for t in store.transitions() if t.to_state is None)
    finally:
        store.close()
