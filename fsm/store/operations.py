"""What an operator asks of a store: a listing, one action's report and history, a prune,
setting a row aside (quarantine) and back, waking one.

`Operations` is a part of `Store` (its base class; `Reads` is its own), kept apart so the
store's own module stays about the hot path. Everything here is a cold path: reads work on a
read-only store (``fsm actions``), and a store on an older schema says how to upgrade when
it lacks what a read needs. The records are `fsm.store.reports`'s; the SQL is in
`fsm.store.listing`, `fsm.store.report` and `fsm.store.pruning`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any, ParamSpec, TypeVar

import attrs
import peewee

from fsm.store import inspection, listing, pruning, report
from fsm.store.committer import Committer
from fsm.store.connection import WRAP_ERRORS
from fsm.store.inspection import pages
from fsm.store.reads import Reads
from fsm.store.records import LoggedStep
from fsm.store.reports import (
    SHOWN_EVENTS,
    ActionFilter,
    ActionReport,
    ActionSummary,
    Cursor,
    PruneResult,
)
from fsm.store.schema import SCHEMA_VERSION, explain_missing

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_PAGE = 100
"""Rows a listing page holds unless asked otherwise."""

_ALL = ActionFilter()


class Operations(Reads):
    """The operator's reads, prune and row controls (a base class of `Store`)."""

    committer: Committer

    def wake_workers(self) -> None:  # pragma: no cover - `Store.wake_workers` is the one used
        raise NotImplementedError

    def _run(self, query: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run one of the operator's statements' functions on a usable connection.

        Unlike the model-based cold paths it binds no model (so it is safe from any
        thread); on an older schema read as it is, what a query lacks is explained.
        """
        with WRAP_ERRORS:
            self._link.connection()  # reconnects first if the last connection broke
        try:
            return query(*args, **kwargs)
        except (peewee.OperationalError, peewee.ProgrammingError) as exc:
            explain_missing(exc, self._read_version)
            raise

    def list_actions(
        self,
        where: ActionFilter = _ALL,
        *,
        after: Cursor | str | None = None,
        limit: int = DEFAULT_PAGE,
        now: float | None = None,
    ) -> list[ActionSummary]:
        """A page of live and ended actions that ``where`` keeps, newest first.

        ``after``: the `Cursor` (or its token) of the last row of the previous page (its
        `ActionSummary.cursor`). Each page is a few index range reads, whatever the size
        of the tables (`fsm.store.listing`). ``now``: the clock statuses are computed at
        (default: the database's).
        """
        if not (isinstance(limit, int) and limit > 0):
            raise ValueError(f"limit must be a count > 0, got {limit!r}")
        cursor = Cursor.parse(after) if isinstance(after, str) else after
        at = self.now() if now is None else now
        return self._run(listing.list_actions, self._link, self.db.param, where, cursor, limit, at)

    def walk_actions(
        self, where: ActionFilter = _ALL, *, page: int = 1000, after: Cursor | str | None = None
    ) -> Iterator[list[ActionSummary]]:
        """Every action ``where`` keeps, a page at a time (each page its own query; the
        statuses are computed at the clock of the walk's start)."""
        now = self.now()
        start = Cursor.parse(after) if isinstance(after, str) else after

        def fetch(cursor: Cursor | None) -> list[ActionSummary]:
            return self.list_actions(where, after=cursor or start, limit=page, now=now)

        return pages(fetch, lambda a: a.cursor)

    def inspect(
        self, action_id: str, *, history: int = report.DEFAULT_HISTORY
    ) -> ActionReport | None:
        """Everything about one action, in one read (see `ActionReport`): its status, live
        row or kept outcome, checkpoint as stored, resources, lease and the newest
        ``history`` steps of its history. ``None`` if the id is unknown."""
        if not (isinstance(history, int) and history >= 0):
            raise ValueError(f"history must be a count >= 0, got {history!r}")
        now = self.now()
        found = self._run(report.inspect, self._link, self._sql, action_id, now, history)
        if found is None or not found.live or (self._read_version or SCHEMA_VERSION) < 6:
            return found  # an older schema (read-only) has no inbox
        events = self._run(self.inbox.read_all, action_id)
        return attrs.evolve(found, events=tuple(events[:SHOWN_EVENTS]), events_pending=len(events))

    def history(
        self,
        action_id: str,
        *,
        since: float = -math.inf,
        until: float = math.inf,
        after: int | None = None,
        limit: int = 1000,
    ) -> list[LoggedStep]:
        """A page of ``action_id``'s transition log between two times, oldest first, after
        the log id ``after`` (the last `LoggedStep.id` of the previous page). An
        incarnation's history is between its ``started_at`` and its end (`ActionReport`)."""
        return self._run(
            report.history_page, self._link, self.db.param, action_id, since, until, after, limit
        )

    def prune(self, older_than: float) -> PruneResult:
        """Forget the transition-log rows, the kept outcomes and the taken events older than
        ``older_than`` (a unix time), in short batches (`fsm.store.pruning`). An outcome
        forgotten no longer answers a start delivered again for its id
        (`Executor.redelivery_window`), nor a taken event a send repeating its key."""
        _check_time(older_than)
        return self._run(pruning.prune, self._link, self.db.param, older_than)

    async def prune_soon(self, older_than: float) -> PruneResult:
        """`prune` through the committer, a batch at a time, each batch a write of its own
        in turn with the drives' writes (a worker's retention, `fsm.worker.Worker`)."""
        _check_time(older_than)
        p, link = self.db.param, self._link
        log_rows = await self._until_short(pruning.log_deletes(link, p, older_than))
        outcomes = 0
        for delete in pruning.outcome_deletes(link, p, older_than):
            outcomes += await self._until_short(delete)
        events = await self._until_short(pruning.event_deletes(link, p, older_than))
        return PruneResult(log_rows, outcomes, older_than, events)

    async def _until_short(self, delete: pruning.Delete) -> int:
        """Run a batch delete through the committer until it deletes less than a batch."""
        total = 0
        while True:
            deleted = await self.committer.run(None, lambda _: delete(), solo=True)
            total += deleted
            if deleted < pruning.BATCH:
                return total

    def prune_log(self, older_than: float) -> int:
        """Delete transition-log rows written before ``older_than`` (a unix time)."""
        _check_time(older_than)
        return self._run(pruning.prune_log, self._link, self.db.param, older_than)

    def prune_outcomes(self, older_than: float) -> int:
        """Forget the outcomes of actions that ended before ``older_than`` (a unix time)."""
        _check_time(older_than)
        return self._run(pruning.prune_outcomes, self._link, self.db.param, older_than)

    # -- setting rows aside and back, waking one (`fsm.store.inspection`) ------------------

    def quarantine(self, action_id: str, reason: str) -> None:
        """Set a row aside: never driven, never deleted, reported with ``reason``."""
        with self._link.write_point("quarantine"):
            self._cold(inspection.quarantine, action_id, reason)

    def remove_quarantined(self, action_id: str) -> None:
        """Delete a quarantined row and its resources (manual clean-up only)."""
        self._cold(inspection.remove_quarantined, self.db, action_id)

    def release_quarantine(self, action_id: str) -> bool:
        """Put a quarantined row back into service (after fixing the code or the row)."""
        return self._cold(inspection.release_quarantine, action_id)

    def mark_due(self, action_id: str, now: float) -> bool:
        """Make the action due now, and mark it notified.

        The mark is what keeps a notify that arrives while a driver holds the action: that
        driver's park (which would set a later wake-up, or none) sees it and leaves the
        action due instead; every claim clears it, since a drive starts from the newest state.
        """
        with self._link.write_point("wake"):
            found = self._cold(inspection.mark_due, action_id, now)
        self.wake_workers()
        return found


def _check_time(value: Any) -> None:
    if not (isinstance(value, int | float) and not math.isnan(value)):
        raise ValueError(f"older_than must be a unix time, got {value!r}")
