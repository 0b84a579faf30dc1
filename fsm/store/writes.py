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
from fsm.store.committer import Body
from fsm.store.connection import Link
from fsm.store.resources import change_held
from fsm.store.statements import Statements, counts, step_update

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


def _lost(action_id: str, epoch: int) -> LeaseLost:
    return LeaseLost(f"action {action_id}: claim epoch {epoch} was taken over")


class Writes:
    """The write bodies over one connection and its statements."""

    def __init__(self, link: Link, sql: Statements) -> None:
        self._link = link
        self._sql = sql
        self._exec = link.exec
        self._sqlite = link.sqlite

    def transaction(self, batched: bool) -> Any:
        """The job's own transaction, or none inside a batch's."""
        return _NO_TRANSACTION if batched else self._link.transaction()

    def wake_workers(self) -> None:
        """Tell listening workers that something became due (PostgreSQL NOTIFY; no-op else)."""
        if not self._sqlite:
            self._exec(self._sql.notify_due)

    def log(self, action_id: str, e: records.LogEntry, now: float) -> None:
        self._exec(self._sql.log, (action_id, *e.values(), now))

    def start(
        self, params: tuple[Any, ...], held: tuple[str, ...], since: float
    ) -> Body[str | records.KeptOutcome | None]:
        """`Store.insert`'s statements; ``params``: the insert's, id first, time fifth."""
        action_id, now = params[0], params[5]

        def body(batched: bool) -> str | records.KeptOutcome | None:
            with self.transaction(batched):
                cur = self._exec(self._sql.insert, (*params, action_id, since))
                if cur.rowcount != 1:
                    row = self._exec(self._sql.kind_of, (action_id,)).fetchone()
                    if row is not None:
                        return str(row[0])
                    kept = self._exec(self._sql.outcome_of, (action_id,)).fetchone()
                    if kept is None:  # pragma: no cover - the insert lost a race with a delete
                        raise LeaseLost(f"action {action_id}: changed while being started; retry")
                    return records.KeptOutcome(*kept)
                change_held(self._link, self._sql, action_id, held, (), now)
                self.wake_workers()
            return None

        return body

    def step(
        self, action_id: str, epoch: int, step: StepValues, log_transitions: bool
    ) -> tuple[str, Body[None]]:
        """A step's write point and statements (see `Store.write`)."""
        state, payload, seq, was, new, acquired, released, entry, now = step
        logged = entry is not None and log_transitions
        sql, changed = step_update(self._sql, was, new, entry, logged, now)
        params = [state, payload, seq, now, *changed, action_id, epoch]
        if not acquired and not released:
            if logged and entry is not None and not self._sqlite:
                sql = self._sql.logged(sql)
                params += [*entry.values()[1:], now]

            def checkpoint(batched: bool) -> None:
                if self._exec(sql, params).rowcount != 1:
                    raise _lost(action_id, epoch)

            return "checkpoint", checkpoint

        def with_resources(batched: bool) -> None:
            with self.transaction(batched):
                if self._exec(sql, params).rowcount != 1:
                    raise _lost(action_id, epoch)
                change_held(self._link, self._sql, action_id, acquired, released, now)
                if logged and entry is not None and not self._sqlite:
                    self.log(action_id, entry, now)

        return "resources", with_resources

    def failure(self, action_id: str, epoch: int, params: tuple[Any, ...]) -> Body[None]:
        """`Store.record_failure`'s statement."""

        def body(batched: bool) -> None:
            if self._exec(self._sql.record_failure, params).rowcount != 1:
                raise _lost(action_id, epoch)

        return body

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
        kept = (state, status, error, cause, now, *counts(entry))
        logged = log_transitions
        if not self._sqlite:
            log = (*entry.values()[1:], now) if logged else ()

            def in_one(batched: bool) -> None:
                cur = self._exec(self._sql.finish(logged), (action_id, epoch, *log, *kept))
                if cur.rowcount != 1:
                    raise _lost(action_id, epoch)

            return in_one

        step = (entry.outcome if logged else None, entry.via, entry.duration)
        params = (state, status, entry.error, cause, entry.attempt, *step)
        tally = counts(entry)

        def by_trigger(batched: bool) -> None:
            cur = self._exec(self._sql.end, (*params, now, *tally, action_id, epoch))
            if cur.rowcount != 1:
                raise _lost(action_id, epoch)

        return by_trigger
