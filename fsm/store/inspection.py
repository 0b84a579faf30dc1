"""The cold paths: listing, inspection and the operator's writes, through the models.

Each function runs with the models bound to one store's database (`Store` binds them per
call) and returns plain records (`RowInfo`, `LoggedStep`), never a peewee row. None is on a
step's path: the query builder's cost does not matter here, readability does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import ParamSpec, TypeVar

import peewee

from fsm.store.connection import WRAP_ERRORS, Link
from fsm.store.records import Checkpoint, LoggedStep, RowInfo
from fsm.store.schema import (
    ACTION_TROUBLE,
    MODELS,
    ActionRow,
    ResourceRow,
    TransitionRow,
    explain_missing,
)

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")
K = TypeVar("K")


def bound(
    link: Link,
    read_version: int | None,
    query: Callable[P, R],
    /,
    *args: P.args,
    **kwargs: P.kwargs,
) -> R:
    """Run ``query`` with the models bound to ``link``'s database.

    Models are bound per call, not once globally, so several stores (a SQLite file and a
    PostgreSQL database, or two files) can live in one process. A read-only store on an
    older schema (``read_version``) explains what a query lacks (`explain_missing`).
    """
    with WRAP_ERRORS:
        link.connection()  # reconnects first if the last connection broke
    with link.db.bind_ctx(MODELS):
        try:
            return query(*args, **kwargs)
        except (peewee.OperationalError, peewee.ProgrammingError) as exc:
            explain_missing(exc, read_version)
            raise


def live_ids() -> list[str]:
    """The ids of the live actions that are not quarantined, oldest first."""
    q = (
        ActionRow.select(ActionRow.id)
        .where(ActionRow.quarantine.is_null())
        .order_by(ActionRow.created_at, ActionRow.id)
    )
    return [r.id for r in q]


def live_ids_after(after: str | None, size: int) -> list[str]:
    """Up to ``size`` ids of live actions that are not quarantined, after ``after``, by id.

    A page of a keyset walk (`pages`): each page is one primary-key range read, whatever
    the table's size, and the caller holds one page at a time.
    """
    q = ActionRow.select(ActionRow.id).where(ActionRow.quarantine.is_null())
    if after is not None:
        q = q.where(ActionRow.id > after)
    return [r.id for r in q.order_by(ActionRow.id).limit(size)]


def rows_after(after: str | None, size: int, kind: str | None) -> list[RowInfo]:
    """Up to ``size`` live rows (quarantined too) with ids after ``after``, by id, optionally
    of one ``kind``: a page of `fsm actions` (see `live_ids_after`)."""
    q = ActionRow.select()
    if after is not None:
        q = q.where(ActionRow.id > after)
    if kind is not None:
        q = q.where(ActionRow.kind == kind)
    return [_info(r) for r in q.order_by(ActionRow.id).limit(size)]


def pages(fetch: Callable[[K | None], list[T]], key: Callable[[T], K]) -> Iterator[list[T]]:
    """Walk a keyset: ``fetch(None)``, then ``fetch(key(last item))`` until a page is empty.

    Each page is a query of its own (no cursor stays open between pages), so rows written
    meanwhile are seen or not by where they sort, and none is seen twice.
    """
    after: K | None = None
    while page := fetch(after):
        yield page
        after = key(page[-1])


def due_ids(now: float, limit: int) -> list[str]:
    """The ids of up to ``limit`` actions due at ``now``, earliest wake-up first."""
    q = (
        ActionRow.select(ActionRow.id)
        .where(
            ActionRow.quarantine.is_null(),
            ActionRow.wake_at.is_null(False),
            ActionRow.wake_at <= now,
        )
        .order_by(ActionRow.wake_at)
        .limit(limit)
    )
    return [r.id for r in q]


def rows(*, action_id: str | None = None) -> list[RowInfo]:
    """Live rows by id: all, or one."""
    q = ActionRow.select().order_by(ActionRow.id)
    if action_id is not None:
        q = q.where(ActionRow.id == action_id)
    return [_info(r) for r in q]


def _set_aside() -> peewee.ModelSelect[ActionRow]:
    """The quarantined rows, read through the partial index ``fsm_action_trouble``: the
    query repeats its condition word for word (SQLite's rule), so it reads the few rows in
    trouble, not every live row."""
    trouble = peewee.SQL(f"({ACTION_TROUBLE})")
    return ActionRow.select().where(trouble, ActionRow.quarantine.is_null(False))


def quarantined(limit: int | None) -> list[RowInfo]:
    """Up to ``limit`` quarantined rows (all when ``None``), oldest start first."""
    q = _set_aside().order_by(ActionRow.created_at, ActionRow.id)
    return [_info(r) for r in (q if limit is None else q.limit(limit))]


def count_quarantined() -> int:
    """How many live rows are quarantined."""
    return int(_set_aside().count())


def checkpoint(action_id: str) -> Checkpoint | None:
    """The live action's kind, state, version and payload, in one statement."""
    q = ActionRow.select(
        ActionRow.id,
        ActionRow.kind,
        ActionRow.state,
        ActionRow.version,
        ActionRow.payload,
        ActionRow.quarantine,
    ).where(ActionRow.id == action_id)
    r = q.first()
    if r is None:
        return None
    return Checkpoint(r.id, r.kind, r.state, r.version, r.payload, r.quarantine)


def count_by_state(kind: str | None) -> dict[tuple[str, str], int]:
    """How many live actions stand in each (kind, state), optionally of one ``kind``."""
    q = ActionRow.select(ActionRow.kind, ActionRow.state, peewee.fn.COUNT(ActionRow.id))
    if kind is not None:
        q = q.where(ActionRow.kind == kind)
    q = q.group_by(ActionRow.kind, ActionRow.state).tuples()
    return {(str(k), str(s)): int(n) for k, s, n in q.iterator()}


def transitions(action_id: str | None) -> list[LoggedStep]:
    """The transition log in the order it was written, of one action or of all."""
    q = TransitionRow.select().order_by(TransitionRow.id)
    if action_id is not None:
        q = q.where(TransitionRow.action_id == action_id)
    return [
        LoggedStep(
            t.kind,
            t.seq,
            t.from_state,
            t.to_state,
            t.outcome,
            t.via,
            t.attempt,
            t.error,
            t.duration,
            t.action_id,
            t.id,
            t.at,
        )
        for t in q
    ]


def quarantine(action_id: str, reason: str) -> None:
    """Set a row aside: never driven, never deleted, reported with ``reason``."""
    (
        ActionRow.update(
            quarantine=reason,
            lease_owner=None,
            lease_expires=None,
            epoch=ActionRow.epoch + 1,
        )
        .where(ActionRow.id == action_id)
        .execute()
    )


def remove_quarantined(db: peewee.Database, action_id: str) -> None:
    """Delete a quarantined row and its resources (manual clean-up only)."""
    with db.atomic():
        ActionRow.delete().where(
            ActionRow.id == action_id, ActionRow.quarantine.is_null(False)
        ).execute()
        ResourceRow.delete().where(ResourceRow.action == action_id).execute()


def release_quarantine(action_id: str) -> bool:
    """Put a quarantined row back into service (after fixing the code or the row)."""
    return bool(ActionRow.update(quarantine=None).where(ActionRow.id == action_id).execute())


def mark_due(action_id: str, now: float) -> bool:
    """Make the action due now and mark it notified (see `Store.mark_due`)."""
    q = ActionRow.update(wake_at=now, notified=True).where(ActionRow.id == action_id)
    return bool(q.execute())


def _info(r: ActionRow) -> RowInfo:
    return RowInfo(
        r.id,
        r.kind,
        r.state,
        r.version,
        r.attempts,
        r.last_error,
        r.wake_at,
        r.lease_owner,
        r.quarantine,
        bool(r.broken),
        r.incarnation,
        r.cause,
    )
