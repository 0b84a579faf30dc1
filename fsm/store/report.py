"""One action's report (`Store.inspect`) and its history (`Store.history`), read in one go.

The report's reads (the live row, its resources, the kept outcomes of the id, the history)
run in one read transaction, so they are one moment's: a step committed meanwhile is either
in all of them or in none. An action's history is its rows of the transition log, found by
the index ``fsm_transition_action`` (``action_id, id``); the log does not name incarnations,
so an incarnation's history is its id's rows from its start to its end (one incarnation of
an id is live at a time, and the next starts after the previous ended).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import attrs

from fsm.store.connection import Link
from fsm.store.records import KeptOutcome, LoggedStep
from fsm.store.reports import ActionReport, ActionStatus, live_status
from fsm.store.resources import held_by
from fsm.store.statements import Statements

_LIVE = (
    "SELECT kind, state, version, payload, incarnation, seq, attempts, last_error, cause, "
    "wake_at, lease_owner, lease_expires, quarantine, broken, notified, created_at, "
    "updated_at, steps, retries FROM fsm_action WHERE id = {p}"
)
_OUTCOMES = (
    "SELECT id, incarnation, kind, state, status, error, cause, started_at, finished_at, "
    "steps, retries FROM fsm_outcome WHERE id = {p} ORDER BY finished_at DESC, incarnation DESC"
)
_HISTORY = (
    "SELECT kind, seq, from_state, to_state, outcome, via, attempt, error, duration, "
    "action_id, id, at FROM fsm_transition WHERE action_id = {p} AND at >= {p} AND at <= {p}"
)

DEFAULT_HISTORY = 1000
"""Steps of history a report holds (the newest); `Store.history` pages through any number."""


@contextmanager
def one_snapshot(link: Link) -> Iterator[None]:
    """Run reads in one read-only transaction (one snapshot), rolled back after."""
    link.exec("BEGIN" if link.sqlite else "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    try:
        yield
    finally:
        link.exec("ROLLBACK")


def inspect(
    link: Link, sql: Statements, action_id: str, now: float, history: int = DEFAULT_HISTORY
) -> ActionReport | None:
    """The report on ``action_id`` (see `ActionReport`), ``None`` if the database holds
    neither a live row nor a kept outcome of it."""
    p = sql.param
    with one_snapshot(link):
        row = link.exec(_LIVE.format(p=p), (action_id,)).fetchone()
        kept = [KeptOutcome(*r) for r in link.exec(_OUTCOMES.format(p=p), (action_id,))]
        if row is not None:
            report = _live_report(link, sql, action_id, row, now)
            earlier = tuple(kept)
            until = float("inf")
        elif kept:
            report = _ended_report(kept[0])
            earlier = tuple(kept[1:])
            until = kept[0].finished_at
        else:
            return None
        steps, truncated = newest_steps(link, p, action_id, report.started_at, until, history)
    return attrs.evolve(report, earlier=earlier, history=steps, history_truncated=truncated)


def newest_steps(
    link: Link, p: str, action_id: str, since: float, until: float, limit: int
) -> tuple[tuple[LoggedStep, ...], bool]:
    """The newest ``limit`` log rows of ``action_id`` between two times, oldest first, and
    whether there were more."""
    sql = _HISTORY.format(p=p) + f" ORDER BY id DESC LIMIT {p}"
    rows = link.exec(sql, (action_id, since, until, limit + 1)).fetchall()
    steps = tuple(LoggedStep(*r) for r in reversed(rows[:limit]))
    return steps, len(rows) > limit


def history_page(
    link: Link, p: str, action_id: str, since: float, until: float, after: int | None, size: int
) -> list[LoggedStep]:
    """Up to ``size`` log rows of ``action_id`` between two times, oldest first, with log
    ids after ``after`` (a keyset page of `Store.history`)."""
    sql = _HISTORY.format(p=p)
    params: list[Any] = [action_id, since, until]
    if after is not None:
        sql += f" AND id > {p}"
        params.append(after)
    rows = link.exec(sql + f" ORDER BY id LIMIT {p}", [*params, size]).fetchall()
    return [LoggedStep(*r) for r in rows]


def _live_report(
    link: Link, sql: Statements, action_id: str, row: tuple[Any, ...], now: float
) -> ActionReport:
    (
        kind,
        state,
        version,
        payload,
        incarnation,
        seq,
        attempts,
        error,
        cause,
        wake_at,
        owner,
        expires,
        quarantine,
        broken,
        notified,
        created,
        updated,
        steps,
        retries,
    ) = row
    held = held_by(link, sql, action_id)
    status = live_status(
        quarantine=quarantine,
        broken=bool(broken),
        lease_owner=owner,
        lease_expires=expires,
        wake_at=wake_at,
        now=now,
    )
    return ActionReport(
        action_id,
        status,
        kind,
        state,
        incarnation,
        created,
        updated,
        steps,
        retries,
        error,
        cause,
        version=version,
        payload=payload,
        seq=seq,
        attempts=attempts,
        wake_at=wake_at,
        lease_owner=owner,
        lease_expires=expires,
        quarantine=quarantine,
        notified=bool(notified),
        resources=tuple(held),
    )


def _ended_report(kept: KeptOutcome) -> ActionReport:
    return ActionReport(
        kept.id,
        ActionStatus(kept.status),
        kept.kind,
        kept.state,
        kept.incarnation,
        kept.started_at,
        kept.finished_at,
        kept.steps,
        kept.retries,
        kept.error,
        kept.cause,
        outcome=kept,
    )
