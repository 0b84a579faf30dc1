"""The statements of the hot path's writes, as jobs for the committer or a direct call.

Each function returns a job body (`fsm.store.committer.Body`): called with ``batched`` true
inside a batch's transaction it opens none of its own; called alone it runs as the store
always ran it (one autocommit statement, or its own transaction). The same bodies serve the
synchronous API (`Store.write`, ...) and the drives' writes (`Store.write_soon`, ...), so
the two cannot drift apart.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from fsm.errors import LeaseLost
from fsm.store import records
from fsm.store.channel import NOTIFY
from fsm.store.committer import Body
from fsm.store.connection import Link
from fsm.store.pipeline import Statement, fenced
from fsm.store.resources import change_held
from fsm.store.statements import STEP_COLUMNS, Statements, counts, step_update

_NO_TRANSACTION = contextlib.nullcontext()

StepValues = tuple[
    str,
    str,
    int,
    records.Bookkeeping,
    records.Bookkeeping,
    Sequence[str],
    Sequence[str],
    records.LogEntry | None,
    float,
]
"""A step's write, in `Store.write`'s order: state, payload, seq, was, new, acquired,
released, entry, now."""


class Writes:
    """The write bodies over one connection and its statements."""

    def __init__(self, link: Link, sql: Statements, channel: str | None) -> None:
        self._link = link
        self._sql = sql
        self._channel = channel
        self._exec = link.exec
        self._sqlite = link.sqlite
        self._plain = sql.update(STEP_COLUMNS)

    def transaction(self, batched: bool) -> Any:
        """The job's own transaction, or none inside a batch's."""
        return _NO_TRANSACTION if batched else self._link.transaction()

    def wake_workers(self) -> None:
        """Tell listening workers that something became due (PostgreSQL NOTIFY; no-op else)."""
        if self._channel is not None:
            self._exec(NOTIFY, (self._channel,))

    def log(self, action_id: str, e: records.LogEntry, now: float) -> None:
        self._exec(self._sql.log, (action_id, *e.values(), now))

    def start(
        self, params: tuple[Any, ...], held: tuple[str, ...], since: float
    ) -> Body[str | records.KeptOutcome | None]:
        """`Store.insert`'s statements; ``params``: the insert's (the id first, the time at 5).

        On PostgreSQL one statement inserts the row, takes its resources and notifies the
        workers (`Statements.start`); a resource already taken makes it fail whole, and the
        careful transaction below runs instead, to say which and by whom.
        """
        action_id, now = params[0], params[5]

        def found(cur: Any) -> str | records.KeptOutcome | None:
            """After the insert: ``None`` if it inserted, else what holds the id."""
            if cur.rowcount == 1:
                return None
            row = self._exec(self._sql.kind_of, (action_id,)).fetchone()
            if row is not None:
                return str(row[0])
            kept = self._exec(self._sql.outcome_of, (action_id,)).fetchone()
            if kept is None:  # pragma: no cover - the insert lost a race with a delete
                raise LeaseLost(action_id, "changed while being started; retry")
            return records.KeptOutcome(*kept)

        def body(batched: bool) -> str | records.KeptOutcome | None:
            with self.transaction(batched):
                cur = self._exec(self._sql.insert, (*params, action_id, since))
                if cur.rowcount != 1:
                    return found(cur)
                change_held(self._link, self._sql, action_id, held, (), now)
                self.wake_workers()
            return None

        if self._channel is None:
            return body
        notifying = (*params, action_id, since, now, list(held), self._channel)
        return Statement(self._link, self._sql.start, notifying, found, fallback=body)

    def step(
        self, action_id: str, epoch: int, step: StepValues, log_transitions: bool
    ) -> tuple[str, Body[None]]:
        """A step's write point and statements (see `Store.write`)."""
        state, payload, seq, was, new, acquired, released, entry, now = step
        if new is was and entry and self._sqlite and not acquired and not released:
            # the usual SQLite step: the checkpoint, the step's columns (the log trigger
            # reads them) and the counts, in the one UPDATE built for it (`step_update`)
            outcome = entry.outcome if log_transitions else None
            plain = [state, payload, seq, now, outcome, entry.via, entry.duration]
            plain += (*counts(entry), action_id, epoch)
            return "checkpoint", Statement(self._link, self._plain, plain, fenced(action_id, epoch))
        logged = entry is not None and log_transitions
        sql, changed = step_update(self._sql, was, new, entry, logged, now)
        params = [state, payload, seq, now, *changed, action_id, epoch]
        fence = fenced(action_id, epoch)
        # PostgreSQL writes the log row in the same statement (SQLite: the UPDATE's trigger)
        log = [*entry.values()[1:], now] if logged and entry and not self._sqlite else []
        if not acquired and not released:
            if log:  # the log row rides in the same statement
                sql, params = self._sql.logged(sql), params + log
            return "checkpoint", Statement(self._link, sql, params, fence)

        def with_resources(batched: bool) -> None:
            with self.transaction(batched):
                fence(self._exec(sql, params))
                change_held(self._link, self._sql, action_id, acquired, released, now)
                if log and entry is not None:
                    self.log(action_id, entry, now)

        if self._sqlite:
            return "resources", with_resources
        # PostgreSQL: one statement; a resource already taken fails it whole, and the careful
        # transaction runs instead, to say which and by whom
        in_one = self._sql.with_resources(sql, bool(log))
        changes = [*params, *log, now, list(acquired), list(released)]
        return "resources", Statement(self._link, in_one, changes, fence, fallback=with_resources)

    def failure(self, action_id: str, epoch: int, params: tuple[Any, ...]) -> Body[None]:
        """`Store.record_failure`'s statement."""
        return Statement(self._link, self._sql.record_failure, params, fenced(action_id, epoch))

    def ending(
        self,
        action_id: str,
        epoch: int,
        entry: records.LogEntry,
        now: float,
        log_transitions: bool,
        *,
        status: str,
        state: str,
        error: str | None = None,
        cause: str | None = None,
    ) -> Body[None]:
        """The terminal write's statements (see `Store.finish`).

        The kept outcome's ``error`` is the log entry's (none when done): SQLite's end
        trigger takes both from one column, and both backends hold to it.
        """
        if error != (None if status == "done" else entry.error):
            raise ValueError(  # the end trigger keeps one error for the log and the outcome
                f"action {action_id}: an end's error must be its log entry's (done: none)"
            )
        logged = log_transitions
        tally = counts(entry)
        params: tuple[Any, ...]
        if self._sqlite:  # the end trigger keeps the outcome, logs and deletes
            step = (entry.attempt, entry.outcome if logged else None, entry.via, entry.duration)
            sql = self._sql.end
            params = (state, status, entry.error, cause, *step, now, *tally, action_id, epoch)
        else:  # one CTE: delete, keep the outcome, log
            log = (*entry.values()[1:], now) if logged else ()
            sql = self._sql.finish(logged)
            params = (action_id, epoch, *log, state, status, error, cause, now, *tally)
        return Statement(self._link, sql, params, fenced(action_id, epoch))
