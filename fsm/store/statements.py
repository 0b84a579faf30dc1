"""The hot-path SQL: every statement a step runs, written once per database.

The query builder costs several times the commit itself on SQLite, so the statements the
drive loop runs (claim, fenced update, terminal delete, ...) are plain SQL strings, built
once with the database's parameter marker (``?`` on SQLite, ``%s`` on PostgreSQL) and sent
through the driver, whose own statement cache keeps them prepared. Statements that depend on
the call (the columns a write changes, a kind filter) are built once per shape and cached.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fsm.store.records import BOOKKEEPING, Bookkeeping, LogEntry

STEP_COLUMNS: tuple[str, ...] = (
    "state",
    "payload",
    "seq",
    "updated_at",
    "step_outcome",
    "step_via",
    "step_duration",
)
"""The columns every step's fenced UPDATE writes (then the bookkeeping that changed)."""

_KINDS = "/*kinds*/"
"""Where `Statements.for_kinds` puts its kind filter in a statement (a no-op comment)."""

_COUNTS = ", steps = steps + {p}, retries = retries + {p}"
"""The step and retry counts, bumped by the statement that writes the step (schema v5)."""

CODE_VIAS = frozenset(("step", "retry", "rejection"))
"""The log's ``via`` of a step the kind's code made (counted in ``steps``); an ``update`` or
an operator's write is logged but not counted."""

CLAIMED_COLUMNS = (
    "kind, state, version, payload, seq, attempts, last_error, wake_at, epoch, "
    "lease_expires, incarnation, cause, broken, inbox"
)
"""What a claim reads back (`fsm.store.records.Claimed`'s fields after ``id``)."""

_LOG_COLUMNS = (
    "action_id, kind, seq, from_state, to_state, outcome, via, attempt, error, duration, at"
)


class Statements:
    """The hot-path SQL, written once with the database's parameter marker."""

    def __init__(self, p: str) -> None:
        cols = CLAIMED_COLUMNS
        self.insert = (  # lease_owner, lease_expires: NULL, or the starting drive's claim
            "INSERT INTO fsm_action (id, kind, state, version, payload, seq, attempts, "
            "wake_at, epoch, created_at, updated_at, incarnation, lease_owner, lease_expires) "
            f"SELECT {p}, {p}, {p}, {p}, {p}, 0, 0, {p}, {p}, {p}, {p}, {p}, {p}, {p} "
            f"WHERE NOT EXISTS (SELECT 1 FROM fsm_outcome WHERE id = {p} AND finished_at >= {p}) "
            "ON CONFLICT (id) DO NOTHING"
        )
        outcome_cols = (
            "id, incarnation, kind, state, status, error, cause, started_at, finished_at, "
            "steps, retries"
        )
        self.outcome_of = (
            f"SELECT {outcome_cols} FROM fsm_outcome WHERE id = {p} "
            "ORDER BY finished_at DESC LIMIT 1"
        )
        self.end = (  # SQLite: the end trigger (`fsm.store.schema`) does the rest
            f"UPDATE fsm_action SET state = {p}, ending = {p}, last_error = {p}, cause = {p}, "
            f"attempts = {p}, step_outcome = {p}, step_via = {p}, step_duration = {p}, "
            f"updated_at = {p}{_COUNTS.format(p=p)} WHERE id = {p} AND epoch = {p}"
        )
        self._outcome_cols = outcome_cols
        self.record_failure = (
            f"UPDATE fsm_action SET attempts = {p}, last_error = {p}, "
            f"wake_at = CASE WHEN notified THEN 0 ELSE {p} END, broken = {p}, updated_at = {p}, "
            "lease_owner = NULL, lease_expires = NULL, epoch = epoch + 1, retries = retries + 1 "
            f"WHERE id = {p} AND epoch = {p}"
        )
        self.kind_of = f"SELECT kind FROM fsm_action WHERE id = {p}"
        self.payload_of = f"SELECT payload FROM fsm_action WHERE id = {p}"
        self.claim = (
            f"UPDATE fsm_action SET lease_owner = {p}, lease_expires = {p}, epoch = epoch + 1, "
            "notified = FALSE "
            f"WHERE id = {p} AND quarantine IS NULL "
            f"AND (lease_owner IS NULL OR lease_expires < {p} OR lease_owner = {p}) "
            f"RETURNING {cols}"
        )
        self.steal = (
            f"UPDATE fsm_action SET lease_owner = {p}, lease_expires = {p}, epoch = epoch + 1, "
            "notified = FALSE "
            f"WHERE id = {p} AND quarantine IS NULL AND lease_owner = {p} RETURNING {cols}"
        )
        self.lease_of = f"SELECT lease_owner, quarantine FROM fsm_action WHERE id = {p}"
        lock = "" if p == "?" else " FOR UPDATE SKIP LOCKED"
        self.claim_due = (
            f"UPDATE fsm_action SET lease_owner = {p}, lease_expires = {p}, epoch = epoch + 1, "
            "notified = FALSE "
            "WHERE id IN (SELECT id FROM fsm_action WHERE quarantine IS NULL "
            f"AND wake_at IS NOT NULL AND wake_at <= {p} "
            f"AND (lease_owner IS NULL OR lease_expires < {p}){_KINDS} "
            f"ORDER BY wake_at LIMIT {p}{lock}) RETURNING id, {cols}"
        )
        self.next_wake = (
            "SELECT MIN(CASE WHEN lease_owner IS NULL OR lease_expires < wake_at "
            "THEN wake_at ELSE lease_expires END) FROM fsm_action "
            f"WHERE quarantine IS NULL AND wake_at IS NOT NULL{_KINDS}"
        )
        self.lease_owners = (
            "SELECT DISTINCT lease_owner FROM fsm_action WHERE lease_owner IS NOT NULL"
        )
        self.release_owner = (
            "UPDATE fsm_action SET lease_owner = NULL, lease_expires = NULL, epoch = epoch + 1 "
            f"WHERE lease_owner = {p}"
        )
        ids = "IN (SELECT value FROM json_each(?))" if p == "?" else f"= ANY({p})"
        self.renew = (
            f"UPDATE fsm_action SET lease_expires = {p} WHERE lease_owner = {p} AND id {ids}"
        )
        self.delete_fenced = f"DELETE FROM fsm_action WHERE id = {p} AND epoch = {p}"
        self.unclaim = (
            "UPDATE fsm_action SET lease_owner = NULL, lease_expires = NULL, epoch = epoch + 1 "
            f"WHERE id = {p} AND epoch = {p}"
        )
        self.acquire = (
            f"INSERT INTO fsm_resource (name, action_id, acquired_at) VALUES ({p}, {p}, {p}) "
            "ON CONFLICT (name) DO NOTHING"
        )
        self.holder_of = f"SELECT action_id FROM fsm_resource WHERE name = {p}"
        self.resources_of = f"SELECT name FROM fsm_resource WHERE action_id = {p} ORDER BY name"
        self.all_resources = "SELECT name, action_id FROM fsm_resource ORDER BY name"
        self.release_one = f"DELETE FROM fsm_resource WHERE name = {p} AND action_id = {p}"
        self.start = (  # PostgreSQL: the row, its resources and the wake-up, in one statement
            f"WITH started AS ({self.insert} RETURNING id), "
            f"taken AS ({_take('started', p)}) "
            f"SELECT pg_notify({p}, '') FROM started"
        )
        self._p = p
        self._logged: dict[str, str] = {}
        self._with_resources: dict[tuple[str, bool], str] = {}
        self._finish: dict[bool, str] = {}
        self._updates: dict[tuple[str, ...], str] = {}
        self._for_kinds: dict[tuple[str, tuple[str, ...]], str] = {}
        self.log = (
            f"INSERT INTO fsm_transition ({_LOG_COLUMNS}) VALUES ({p}, {p}, {p}, {p}, {p}, {p}, "
            f"{p}, {p}, {p}, {p}, {p})"
        )

    def update(self, columns: tuple[str, ...]) -> str:
        """The fenced UPDATE setting ``columns``, built once per column set, then bumping the
        step and retry counts (two parameters, last before ``id`` and ``epoch``).

        ``wake_at`` takes two parameters: the new wake-up, and the one to use instead when a
        notify arrived since the claim (see `Store.mark_due`). Letting go of the lease
        (``lease_owner`` among the columns) moves the epoch on, as every release does.
        """
        cached = self._updates.get(columns)
        if cached is None:
            p = self._p
            sets = ", ".join(
                f"{c} = CASE WHEN NOT notified THEN {p} ELSE {p} END"
                if c == "wake_at"
                else f"{c} = {p}"
                for c in columns
            )
            if "lease_owner" in columns:
                sets += ", epoch = epoch + 1"
            sets += _COUNTS.format(p=p)
            cached = self._updates[columns] = (
                f"UPDATE fsm_action SET {sets} WHERE id = {self._p} AND epoch = {self._p}"
            )
        return cached

    @property
    def param(self) -> str:
        """The driver's parameter marker (``?`` or ``%s``), for SQL written elsewhere."""
        return self._p

    def finish(self, logged: bool) -> str:
        """PostgreSQL's terminal write as one statement: delete the row (fenced), keep its
        outcome and, when ``logged``, write its log row, all from the deleted row. Built
        once for each value of ``logged``."""
        cached = self._finish.get(logged)
        if cached is None:
            p = self._p
            log = f", logged AS ({self._log_from('gone')})" if logged else ""
            cached = self._finish[logged] = (
                f"WITH gone AS ({self.delete_fenced} RETURNING id, kind, incarnation, "
                f"created_at, steps, retries){log} INSERT INTO fsm_outcome "
                f"({self._outcome_cols}) SELECT gone.id, gone.incarnation, gone.kind, {p}, {p}, "
                f"{p}, {p}, gone.created_at, {p}, gone.steps + {p}, gone.retries + {p} FROM gone"
            )
        return cached

    def _log_from(self, source: str) -> str:
        """The log row's INSERT, taking ``action_id`` and ``kind`` from CTE ``source``."""
        values = ", ".join([self._p] * 9)
        return (
            f"INSERT INTO fsm_transition ({_LOG_COLUMNS}) "
            f"SELECT {source}.id, {source}.kind, {values} FROM {source}"
        )

    def for_kinds(
        self, statement: str, kinds: Mapping[str, int] | None
    ) -> tuple[str, tuple[Any, ...]]:
        """``statement`` restricted to rows of ``kinds`` (name -> newest readable version).

        Returns the statement and the filter's parameters (in the statement's ``_KINDS``
        place). Built once per statement and set of kind names; ``None`` keeps every kind.
        """
        if kinds is None:
            return statement, ()
        names = tuple(sorted(kinds))
        key = (statement, names)
        cached = self._for_kinds.get(key)
        if cached is None:
            p = self._p
            one = f"(kind = {p} AND version <= {p})"
            where = " AND (" + " OR ".join([one] * len(names)) + ")"
            cached = self._for_kinds[key] = statement.replace(_KINDS, where)
        return cached, tuple(v for name in names for v in (name, kinds[name]))

    def with_resources(self, statement: str, logged: bool) -> str:
        """PostgreSQL: ``statement`` (a step's fenced UPDATE), its log row when ``logged``,
        the resources it takes and those it lets go, as one statement.

        Parameters after the UPDATE's (and the log's): the time, the names taken, the names
        let go (two text arrays). Every part reads the changed row, so nothing happens when
        the fence matched no row; the statement returns the changed row's id. A name another
        action holds breaks the resource key and fails the whole statement. Built once per
        UPDATE and value of ``logged``.
        """
        key = (statement, logged)
        cached = self._with_resources.get(key)
        if cached is None:
            p = self._p
            log = f", logged AS ({self._log_from('changed')})" if logged else ""
            cached = self._with_resources[key] = (
                f"WITH changed AS ({statement} RETURNING id, kind){log}, "
                f"taken AS ({_take('changed', p)}), "
                f"freed AS (DELETE FROM fsm_resource WHERE name = ANY({p}::text[]) "
                "AND action_id IN (SELECT id FROM changed)) "
                "SELECT id FROM changed"
            )
        return cached

    def logged(self, statement: str) -> str:
        """``statement`` (a step's fenced UPDATE) plus its log row, as one CTE.

        PostgreSQL only. The log's ``action_id`` and ``kind`` come from the changed row, so
        the statement affects one row exactly when the fenced change did.
        """
        cached = self._logged.get(statement)
        if cached is None:
            cached = self._logged[statement] = (
                f"WITH changed AS ({statement} RETURNING id, kind) {self._log_from('changed')}"
            )
        return cached


def _take(source: str, p: str) -> str:
    """PostgreSQL: take the resources named in a text array for the row of CTE ``source``
    (parameters: the time, the names). No ``ON CONFLICT``: a name already held fails the
    statement, whose caller then finds out by whom."""
    return (
        "INSERT INTO fsm_resource (name, action_id, acquired_at) "
        f"SELECT wanted.name, {source}.id, {p} FROM {source}, unnest({p}::text[]) AS wanted(name)"
    )


def step_update(
    sql: Statements,
    was: Bookkeeping,
    new: Bookkeeping,
    entry: LogEntry | None,
    logged: bool,
    now: float,
) -> tuple[str, list[Any]]:
    """A step's fenced UPDATE (see `Store.write`), and its parameters after ``state``,
    ``payload``, ``seq`` and ``updated_at``, before ``id`` and ``epoch``.

    Besides `STEP_COLUMNS` it writes only the bookkeeping columns that differ between
    ``was`` and ``new``: a typical step changes none, and every column left out is work
    SQLite does not do. A ``new.lease_expires`` of ``None`` lets go of the lease. The step's
    columns feed the SQLite log trigger; an outcome only when the step is ``logged``. The
    last two parameters bump the counts (`counts`).
    """
    columns = STEP_COLUMNS
    params: list[Any] = [
        entry.outcome if logged and entry else None,
        entry.via if entry else None,
        entry.duration if entry else None,
    ]
    if new is was or new == was:  # the usual step: no column to add
        params += counts(entry)
        return sql.update(columns), params
    for name in BOOKKEEPING:
        value = getattr(new, name)
        if value != getattr(was, name):
            columns += (name,)
            params.append(value)
            if name == "wake_at":  # a notify that came meanwhile keeps the action due
                params.append(now if value is None or value > now else value)
    if new.lease_expires is None and was.lease_expires is not None:
        columns += ("lease_owner",)
        params.append(None)
    params += counts(entry)
    return sql.update(columns), params


_NOT_COUNTED = (0, 0)
_STEP = (1, 0)
_RETRY = (1, 1)


def counts(entry: LogEntry | None) -> tuple[int, int]:
    """What a write adds to the action's step and retry counts: a step of the kind's code
    (`CODE_VIAS`) counts one step, and one retry when its transient error went to the retry
    handler; anything else (an update from outside, a stop) counts nothing."""
    if entry is None:
        return _NOT_COUNTED
    via = entry.via
    if via == "step":
        return _STEP
    if via == "retry":
        return _RETRY
    return _STEP if via in CODE_VIAS else _NOT_COUNTED
