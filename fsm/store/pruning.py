"""Forgetting old history: transition-log rows, kept outcomes and taken events older than a
time.

Deletes go in batches (`BATCH` rows, each its own short transaction), so a prune of a large
log never holds SQLite's write lock for long: drives commit between its batches. A worker
runs each batch through the store's committer (`Store.prune_soon`), in turn with its
drives' writes.

The log is walked by ``id`` (its primary key, in the order rows were written) from the
oldest row up to the first one written at or after the time: every row before that one and
older than the time goes. A row older than the time but written after a newer one (the
clocks of two workers a moment apart) stays until the next prune. Outcomes are read by the
index ``fsm_outcome_ended`` (status, then end time), one status after the other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fsm.store.connection import Link
from fsm.store.reports import ENDED_STATUSES, PruneResult

BATCH = 2000
"""Rows one delete removes at most (a short transaction)."""


Delete = Callable[[], int]
"""One batch of a prune: deletes at most `BATCH` rows, returns how many it deleted."""


def prune(link: Link, p: str, older_than: float, batch: int = BATCH) -> PruneResult:
    """Delete the log rows written, the outcomes kept and the events taken before
    ``older_than``, here."""
    log_rows = prune_log(link, p, older_than, batch)
    outcomes = prune_outcomes(link, p, older_than, batch)
    events = _until_short(event_deletes(link, p, older_than, batch), batch)
    return PruneResult(log_rows, outcomes, older_than, events)


def prune_log(link: Link, p: str, older_than: float, batch: int = BATCH) -> int:
    """Delete the log rows written before ``older_than`` (see above); how many."""
    return _until_short(log_deletes(link, p, older_than, batch), batch)


def prune_outcomes(link: Link, p: str, older_than: float, batch: int = BATCH) -> int:
    """Delete the outcomes of incarnations that ended before ``older_than``; how many."""
    return sum(_until_short(d, batch) for d in outcome_deletes(link, p, older_than, batch))


def log_deletes(link: Link, p: str, older_than: float, batch: int = BATCH) -> Delete:
    """The log's batch delete; the first call finds where the young rows begin."""
    return _walk_by_id(link, p, "fsm_transition", "at", "at", older_than, batch)


def _walk_by_id(
    link: Link, p: str, table: str, written: str, old: str, older_than: float, batch: int
) -> Delete:
    """A batch delete of ``table``'s rows whose ``old`` time is before ``older_than``, walked
    by ``id`` up to the first row ``written`` at or after it (found by the first call)."""
    bound: list[Any] = []

    def delete() -> int:
        if not bound:
            first_young = link.exec(
                f"SELECT id FROM {table} WHERE {written} >= {p} ORDER BY id LIMIT 1",
                (older_than,),
            ).fetchone()
            bound.append(None if first_young is None else first_young[0])
        young = bound[0]
        before = "" if young is None else f" AND id < {p}"
        statement = (
            f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} "
            f"WHERE {old} < {p}{before} ORDER BY id LIMIT {p})"
        )
        params = (older_than, batch) if young is None else (older_than, young, batch)
        return int(link.exec(statement, params).rowcount)

    return delete


def outcome_deletes(link: Link, p: str, older_than: float, batch: int = BATCH) -> list[Delete]:
    """The kept outcomes' batch deletes, one per status (by the index ``fsm_outcome_ended``)."""
    statement = (
        "DELETE FROM fsm_outcome WHERE (id, incarnation) IN (SELECT id, incarnation "
        f"FROM fsm_outcome WHERE status = {p} AND finished_at < {p} LIMIT {p})"
    )

    def of(status: str) -> Delete:
        return lambda: int(link.exec(statement, (status, older_than, batch)).rowcount)

    return [of(status.value) for status in ENDED_STATUSES]


def event_deletes(link: Link, p: str, older_than: float, batch: int = BATCH) -> Delete:
    """The batch delete of events live actions took (or set aside) before ``older_than``.

    A live action keeps the events it took so that a send repeating a key is recognised;
    a long-lived one would keep them for ever. Once pruned, a key can be sent again as a
    new event: the deduplication window of a live action's events is the retention. The
    inbox is walked by ``id`` (send order), as the log is: events sent from the first one
    sent at or after the time on are left for the next prune.
    """
    return _walk_by_id(link, p, "fsm_event", "sent_at", "consumed_at", older_than, batch)


def _until_short(delete: Delete, batch: int) -> int:
    """Run a batch delete until it deletes less than a batch; the rows it deleted."""
    total = 0
    while True:
        deleted = delete()
        total += deleted
        if deleted < batch:
            return total
