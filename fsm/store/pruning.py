"""Forgetting old history: transition-log rows and kept outcomes older than a time.

Deletes go in batches (`BATCH` rows, each its own short transaction), so a prune of a large
log never holds SQLite's write lock for long: drives commit between its batches.

The log is walked by ``id`` (its primary key, in the order rows were written) from the
oldest row up to the first one written at or after the time: every row before that one and
older than the time goes. A row older than the time but written after a newer one (the
clocks of two workers a moment apart) stays until the next prune. Outcomes are read by the
index ``fsm_outcome_ended`` (status, then end time), one status after the other.
"""

from __future__ import annotations

from fsm.store.connection import Link
from fsm.store.reports import ENDED_STATUSES, PruneResult

BATCH = 2000
"""Rows one delete removes at most (a short transaction)."""


def prune(link: Link, p: str, older_than: float, batch: int = BATCH) -> PruneResult:
    """Delete the log rows written and the outcomes kept before ``older_than``."""
    log_rows = prune_log(link, p, older_than, batch)
    return PruneResult(log_rows, prune_outcomes(link, p, older_than, batch), older_than)


def prune_log(link: Link, p: str, older_than: float, batch: int = BATCH) -> int:
    """Delete the log rows written before ``older_than`` (see above); how many."""
    first_young = link.exec(
        f"SELECT id FROM fsm_transition WHERE at >= {p} ORDER BY id LIMIT 1", (older_than,)
    ).fetchone()
    bound = f" AND id < {p}" if first_young is not None else ""
    bound_params = (first_young[0],) if first_young is not None else ()
    statement = (
        "DELETE FROM fsm_transition WHERE id IN (SELECT id FROM fsm_transition "
        f"WHERE at < {p}{bound} ORDER BY id LIMIT {p})"
    )
    return _in_batches(link, statement, (older_than, *bound_params, batch), batch)


def prune_outcomes(link: Link, p: str, older_than: float, batch: int = BATCH) -> int:
    """Delete the outcomes of incarnations that ended before ``older_than``; how many."""
    statement = (
        "DELETE FROM fsm_outcome WHERE (id, incarnation) IN (SELECT id, incarnation "
        f"FROM fsm_outcome WHERE status = {p} AND finished_at < {p} LIMIT {p})"
    )
    return sum(
        _in_batches(link, statement, (status.value, older_than, batch), batch)
        for status in ENDED_STATUSES
    )


def _in_batches(link: Link, statement: str, params: tuple[object, ...], batch: int) -> int:
    """Run a bounded DELETE until it deletes less than a batch; the rows it deleted."""
    total = 0
    while True:
        deleted = int(link.exec(statement, params).rowcount)
        total += deleted
        if deleted < batch:
            return total
