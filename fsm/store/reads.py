"""What a `Store` reads: single rows, resources, the idle poll, gauges and the cold paths.

`Reads` is a part of `Store` (the base class of `Operations`, its own), kept apart so that
the store's own module holds the writes of a step's path. The reads a step or a worker makes
(a resource's holder, a kept outcome, the idle poll) are prepared statements on the `Link`;
the gauges (`fsm.store.census`) plain statements, safe from a collector's thread; the cold
paths (`fsm.store.inspection`) go through the models, bound to this store's database per
call and per thread.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ParamSpec, TypeVar

import peewee

from fsm.store import census, inspection, polls, records
from fsm.store.connection import Link
from fsm.store.inbox import Inbox
from fsm.store.resources import all_held, held_by, holder
from fsm.store.statements import Statements

P = ParamSpec("P")
R = TypeVar("R")


class Reads:
    """The store's reads (mixed into `Store`)."""

    db: peewee.Database
    _link: Link
    _sql: Statements
    _exec: Callable[..., Any]
    _read_version: int | None
    inbox: Inbox

    def now(self) -> float:  # pragma: no cover - `Store.now` is the one used
        raise NotImplementedError

    def _cold(self, query: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run a cold-path function on this store's database (`inspection.bound`)."""
        return inspection.bound(self._link, self._read_version, query, *args, **kwargs)

    # -- reads used by steps and workers --------------------------------------------------

    def holder_of(self, name: str) -> str | None:
        return holder(self._link, self._sql, name)

    def resources_of(self, action_id: str) -> list[str]:
        return held_by(self._link, self._sql, action_id)

    def all_resources(self) -> dict[str, str]:
        return all_held(self._link, self._sql)

    def outcome(self, action_id: str) -> records.KeptOutcome | None:
        """The kept outcome of the latest ended incarnation of ``action_id``, if any."""
        row = self._exec(self._sql.outcome_of, (action_id,)).fetchone()
        return None if row is None else records.KeptOutcome(*row)

    def payload_of(self, action_id: str) -> str:
        """The stored checkpoint payload of an action (inspection and invariant checks)."""
        row = self._exec(self._sql.payload_of, (action_id,)).fetchone()
        if row is None:
            raise KeyError(f"no action {action_id!r}")
        return str(row[0])

    def next_wake(self, kinds: Mapping[str, int] | None = None) -> float | None:
        """When the next action becomes claimable: its wake-up time, or its lease's expiry.

        ``kinds``: as in `claim_due`, so that a due row of a kind the caller does not drive
        does not wake it at once, again and again.
        """
        return polls.next_wake(self._link, self._sql, kinds)

    # -- gauges (`fsm.store.census`): plain statements, safe from a collector's thread ----

    def live_counts(self) -> dict[tuple[str, str], int]:
        """Live actions per (kind, state), quarantined and broken included (reads every row)."""
        return census.live_counts(self._link)

    def state_census(
        self, kind: str | None = None, now: float | None = None
    ) -> dict[tuple[str, str], census.StateCensus]:
        """Live actions per (kind, state), with the broken, the quarantined and since when
        the longest-waiting claimable one waits (`census.StateCensus`; reads every row)."""
        at = self.now() if now is None else now
        return census.state_census(self._link, at, kind)

    def oldest_due(self, now: float | None = None) -> float:
        """Seconds the longest-waiting claimable action has waited (0: none); from indexes."""
        return census.oldest_due(self._link, self.now() if now is None else now)

    # -- cold paths (`fsm.store.inspection`) ----------------------------------------------

    def live_ids(self) -> list[str]:
        return self._cold(inspection.live_ids)

    def live_ids_after(self, after: str | None, size: int) -> list[str]:
        """A page of `live_ids` by id, after ``after`` (`inspection.live_ids_after`)."""
        return self._cold(inspection.live_ids_after, after, size)

    def rows_after(
        self, after: str | None, size: int, kind: str | None = None
    ) -> list[records.RowInfo]:
        """A page of `rows` by id, after ``after`` (`inspection.rows_after`)."""
        return self._cold(inspection.rows_after, after, size, kind)

    def due_ids(self, now: float, limit: int = 1000) -> list[str]:
        return self._cold(inspection.due_ids, now, limit)

    def rows(self) -> list[records.RowInfo]:
        return self._cold(inspection.rows)

    def checkpoint(self, action_id: str) -> records.Checkpoint | None:
        return self._cold(inspection.checkpoint, action_id)

    def row(self, action_id: str) -> records.RowInfo | None:
        found = self._cold(inspection.rows, action_id=action_id)
        return found[0] if found else None

    def quarantined(self, limit: int | None = None) -> list[records.RowInfo]:
        """The quarantined rows, oldest start first: at most ``limit`` of them if given."""
        return self._cold(inspection.quarantined, limit)

    def count_quarantined(self) -> int:
        """How many live rows are quarantined (reads only the rows in trouble)."""
        return self._cold(inspection.count_quarantined)

    def count_by_state(self, kind: str | None = None) -> dict[tuple[str, str], int]:
        return self._cold(inspection.count_by_state, kind)

    def transitions(self, action_id: str | None = None) -> list[records.LoggedStep]:
        return self._cold(inspection.transitions, action_id)
