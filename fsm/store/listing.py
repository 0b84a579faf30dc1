"""The filtered keyset listing of live and ended actions (`Store.list_actions`).

A listing is newest first by its time (`ActionSummary.at`: a live action's start, an ended
incarnation's end), from two tables: live rows from ``fsm_action`` by the index
``fsm_action_started`` (``created_at, id``), ended incarnations from ``fsm_outcome`` by
``fsm_outcome_ended`` (``status, finished_at, id, incarnation``), one range read per status
asked for. Each read returns at most a page and starts after the cursor, and the pages are
merged here, so a page costs the same at a million rows as at a thousand: what the filters
leave out of a page is skipped by an index (status, since; an error text is looked for
only among the rows in trouble, by the partial indexes ``fsm_action_trouble`` and
``fsm_outcome_trouble``) or read past (kind, state, and the text among the troubled rows:
as many rows as it takes to fill the page).

Plain SQL, one statement per source, built per call (a cold path: readability first).
"""

from __future__ import annotations

from typing import Any

from fsm.store.connection import Link
from fsm.store.reports import (
    ENDED_STATUSES,
    LIVE_STATUSES,
    ActionFilter,
    ActionStatus,
    ActionSummary,
    Cursor,
    live_status,
)
from fsm.store.schema import ACTION_TROUBLE, OUTCOME_TROUBLE

_LIVE_COLUMNS = (
    "id, kind, state, incarnation, created_at, updated_at, steps, retries, attempts, "
    "last_error, cause, quarantine, wake_at, lease_owner, lease_expires, broken"
)
_ENDED_COLUMNS = (
    "id, kind, state, incarnation, started_at, finished_at, steps, retries, error, cause"
)

_TROUBLE = f"({ACTION_TROUBLE})"
_ENDED_TROUBLE = f"({OUTCOME_TROUBLE})"

_FREE = "quarantine IS NULL AND NOT broken AND (lease_owner IS NULL OR lease_expires <= {p})"


def status_condition(wanted: frozenset[ActionStatus], p: str) -> tuple[str, list[Any]]:
    """The WHERE condition keeping live rows whose status (`live_status`) is in ``wanted``,
    and its parameters (the clock, as often as the condition reads it); ``""`` for all."""
    live = wanted & LIVE_STATUSES
    if live == LIVE_STATUSES:
        return "", []
    parts: list[str] = []
    params: list[Any] = []
    if ActionStatus.QUARANTINED in live:
        parts.append("quarantine IS NOT NULL")
    if ActionStatus.BROKEN in live:
        parts.append("(quarantine IS NULL AND broken)")
    if ActionStatus.RUNNING in live:
        parts.append(
            "(quarantine IS NULL AND NOT broken AND lease_owner IS NOT NULL "
            f"AND lease_expires > {p})"
        )
        params.append(None)
    free = _FREE.format(p=p)
    if ActionStatus.WAITING in live:
        parts.append(f"({free} AND wake_at IS NULL)")
        params.append(None)
    if ActionStatus.DUE in live:
        parts.append(f"({free} AND wake_at <= {p})")
        params += [None, None]
    if ActionStatus.PARKED in live:
        parts.append(f"({free} AND wake_at > {p})")
        params += [None, None]
    condition = "(" + " OR ".join(parts) + ")"
    return condition, params


def list_actions(
    link: Link,
    p: str,
    flt: ActionFilter,
    after: Cursor | None,
    limit: int,
    now: float,
) -> list[ActionSummary]:
    """Up to ``limit`` actions that ``flt`` keeps, newest first, after ``after``."""
    wanted = flt.wanted
    found: list[ActionSummary] = []
    if wanted & LIVE_STATUSES:
        found += _live_page(link, p, flt, wanted, after, limit, now)
    for status in ENDED_STATUSES:
        if status in wanted:
            found += _ended_page(link, p, flt, status, after, limit)
    found.sort(key=lambda a: (a.at, a.id, a.incarnation), reverse=True)
    return found[:limit]


def _common(
    flt: ActionFilter, p: str, time: str, after: Cursor | None, text: str
) -> tuple[list[str], list[Any]]:
    """The conditions both sources share: the cursor, since, kind, state, error text."""
    where: list[str] = []
    params: list[Any] = []
    if after is not None:
        where.append(f"({time}, id, incarnation) < ({p}, {p}, {p})")
        params += [after.at, after.id, after.incarnation]
    if flt.since is not None:
        where.append(f"{time} >= {p}")
        params.append(flt.since)
    if flt.kind is not None:
        where.append(f"kind = {p}")
        params.append(flt.kind)
    if flt.state is not None:
        where.append(f"state = {p}")
        params.append(flt.state)
    if flt.error is not None:
        find = "instr" if p == "?" else "strpos"
        where.append(f"{find}(lower({text}), lower({p})) > 0")
        params.append(flt.error)
    return where, params


def _live_page(
    link: Link,
    p: str,
    flt: ActionFilter,
    wanted: frozenset[ActionStatus],
    after: Cursor | None,
    limit: int,
    now: float,
) -> list[ActionSummary]:
    text = (
        "coalesce(last_error, '') || ' ' || coalesce(cause, '') || ' ' || coalesce(quarantine, '')"
    )
    where, params = _common(flt, p, "created_at", after, text)
    condition, clock = status_condition(wanted, p)
    if condition:
        where.append(condition)
        params += [now] * len(clock)
    troubled = {ActionStatus.BROKEN, ActionStatus.QUARANTINED}
    if flt.error is not None or (wanted & LIVE_STATUSES) <= troubled:
        where.append(_TROUBLE)  # only rows in trouble: the partial index holds them
    sql = (
        f"SELECT {_LIVE_COLUMNS} FROM fsm_action"
        + (" WHERE " + " AND ".join(where) if where else "")
        + f" ORDER BY created_at DESC, id DESC LIMIT {p}"
    )
    rows = link.exec(sql, [*params, limit]).fetchall()
    return [_live(row, now) for row in rows]


def _ended_page(
    link: Link,
    p: str,
    flt: ActionFilter,
    status: ActionStatus,
    after: Cursor | None,
    limit: int,
) -> list[ActionSummary]:
    text = "coalesce(error, '') || ' ' || coalesce(cause, '')"
    where, params = _common(flt, p, "finished_at", after, text)
    if flt.error is not None:
        where.append(_ENDED_TROUBLE)  # only ends with an error or cause: a partial index
    sql = (
        f"SELECT {_ENDED_COLUMNS} FROM fsm_outcome WHERE status = {p}"
        + "".join(" AND " + w for w in where)
        + f" ORDER BY finished_at DESC, id DESC, incarnation DESC LIMIT {p}"
    )
    rows = link.exec(sql, [status.value, *params, limit]).fetchall()
    return [
        ActionSummary(
            r[0], r[1], r[2], status, r[3], r[5], r[4], r[5], r[5], r[6], r[7], 0, r[8], r[9]
        )
        for r in rows
    ]


def _live(r: tuple[Any, ...], now: float) -> ActionSummary:
    (
        action_id,
        kind,
        state,
        incarnation,
        created,
        updated,
        steps,
        retries,
        attempts,
        error,
        cause,
        quarantine,
        wake_at,
        owner,
        expires,
        broken,
    ) = r
    status = live_status(
        quarantine=quarantine,
        broken=bool(broken),
        lease_owner=owner,
        lease_expires=expires,
        wake_at=wake_at,
        now=now,
    )
    return ActionSummary(
        action_id,
        kind,
        state,
        status,
        incarnation,
        created,
        created,
        None,
        updated,
        steps,
        retries,
        attempts,
        error,
        cause,
        quarantine,
        wake_at,
        owner,
        expires,
    )
