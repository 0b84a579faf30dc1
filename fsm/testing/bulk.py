"""A table of N well-formed live actions, built fast: for `benchmarks/scale.py` and the tests
that check the polls stay flat as the table grows.

The schema is the store's own (`fsm.open_store` creates and migrates it); the rows go in with
one set-based INSERT (a recursive CTE on SQLite, ``generate_series`` on PostgreSQL), as a
store's ``start`` would have left them, in the shapes a real table holds:

- row ``i`` has id ``a<i:09d>``, kind ``scale`` (v1), state ``waiting``, payload
  ``{"key": <id>, "n": i}``;
- even rows are due (``wake_at`` in the past), odd rows wake in the future;
- one row in 10 waits for a notify only (``wake_at`` NULL);
- one row in 1,000 is quarantined;
- the 16 odd rows below 32 hold a lease of an owner on another host (as 16 running drives
  would; the number of leased rows does not grow with the table, as it does not in use).

`fill_ended` adds kept outcomes (ended incarnations) and `fill_log` transition-log rows, for
the listing, history and prune at scale.
"""

from __future__ import annotations

import uuid

import attrs
import peewee

import fsm

KIND = "scale"
NOW = 1_800_000_000.0
"""The benchmark's clock (a fixed unix time): due rows wake before it, the others after."""

_COLUMNS = (
    "id, kind, state, version, payload, seq, attempts, wake_at, lease_owner, lease_expires, "
    "epoch, quarantine, created_at, updated_at, incarnation"
)


def fill(url: str, rows: int, start: int = 0) -> None:
    """Create the store's schema at ``url`` and insert ``rows`` live actions (see above),
    numbered from ``start`` (so a table can be grown in steps)."""
    store = fsm.open_store(url)
    try:
        if store.is_sqlite:
            statement = (
                "WITH RECURSIVE n(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?) "
                f"INSERT INTO fsm_action ({_COLUMNS}) SELECT "
                "printf('a%09d', i), 'scale', 'waiting', 1, "
                "'{\"key\":\"' || printf('a%09d', i) || '\",\"n\":' || i || '}', 0, 0, "
                + _tail("i")
                + " FROM n"
            )
        else:
            statement = (  # psycopg: a literal % is written %%
                f"INSERT INTO fsm_action ({_COLUMNS}) SELECT "
                "'a' || lpad(i::text, 9, '0'), 'scale', 'waiting', 1, "
                "'{\"key\":\"a' || lpad(i::text, 9, '0') || '\",\"n\":' || i || '}', "
                "0, 0, " + _tail("i").replace("%", "%%") + " FROM generate_series(%s, %s - 1) AS i"
            )
        db: peewee.Database = store.db
        if rows > 0:
            with db.atomic():
                db.execute_sql(statement, (start, start + rows))  # type: ignore[no-untyped-call]
        if not store.is_sqlite:
            db.execute_sql("ANALYZE fsm_action")  # type: ignore[no-untyped-call]
    finally:
        store.close()


def fill_ended(url: str, rows: int, start: int = 0) -> None:
    """Insert ``rows`` kept outcomes, numbered from ``start``: outcome ``i`` is id
    ``e<i:09d>`` of kind ``scale``, ended at ``NOW - 100000 + i`` (so the numbering is the
    order of ends) after 3 steps; one in 10 failed (error ``remote said no (<i>)``, 1 retry),
    one in 100 stopped, the others done."""
    cols = (
        "id, incarnation, kind, state, status, error, cause, started_at, finished_at, "
        "steps, retries"
    )
    status = (
        "CASE WHEN {i} % 10 = 4 THEN 'failed' WHEN {i} % 100 = 9 THEN 'stopped' ELSE 'done' END"
    )
    tail = (
        f"'scale', 'waiting', {status}, "
        "CASE WHEN {i} % 10 = 4 THEN 'remote said no (' || {i} || ')' ELSE NULL END, NULL, "
        f"{NOW} - 100010 + {{i}}, {NOW} - 100000 + {{i}}, 3, "
        "CASE WHEN {i} % 10 = 4 THEN 1 ELSE 0 END"
    ).format(i="i")
    _insert(
        url,
        f"INSERT INTO fsm_outcome ({cols}) SELECT printf('e%09d', i), 'inc', {tail} FROM n",
        f"INSERT INTO fsm_outcome ({cols}) SELECT 'e' || lpad(i::text, 9, '0'), 'inc', "
        + tail.replace("%", "%%"),
        start,
        rows,
        "fsm_outcome",
    )


def fill_log(url: str, rows: int, start: int = 0, per_action: int = 10) -> None:
    """Insert ``rows`` transition-log rows, numbered from ``start``: row ``i`` is step
    ``i % per_action`` of action ``a<i // per_action:09d>``, written at ``NOW - 100000 + i``."""
    cols = "action_id, kind, seq, from_state, to_state, outcome, via, attempt, duration, at"
    tail = (
        f"'scale', i % {per_action}, 'waiting', 'waiting', 'park', 'step', 0, 0.001, "
        f"{NOW} - 100000 + i"
    )
    _insert(
        url,
        f"INSERT INTO fsm_transition ({cols}) SELECT printf('a%09d', i / {per_action}), "
        f"{tail} FROM n",
        f"INSERT INTO fsm_transition ({cols}) SELECT 'a' || lpad((i / {per_action})::text, 9, "
        f"'0'), {tail.replace('%', '%%')}",
        start,
        rows,
        "fsm_transition",
    )


def _insert(url: str, sqlite: str, postgres: str, start: int, rows: int, table: str) -> None:
    """Run a set-based INSERT over ``i`` in ``[start, start + rows)``: ``sqlite`` reads ``i``
    from a recursive CTE ``n``, ``postgres`` is completed with ``generate_series``."""
    store = fsm.open_store(url)
    try:
        db: peewee.Database = store.db
        if store.is_sqlite:
            numbers = (
                "WITH RECURSIVE n(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?) "
            )
            statement = numbers + sqlite
        else:
            statement = postgres + " FROM generate_series(%s, %s - 1) AS i"
        if rows > 0:
            with db.atomic():
                db.execute_sql(statement, (start, start + rows))  # type: ignore[no-untyped-call]
        if not store.is_sqlite:
            db.execute_sql(f"ANALYZE {table}")  # type: ignore[no-untyped-call]
    finally:
        store.close()


def _tail(i: str) -> str:
    """Columns from ``wake_at`` on, for row ``i``."""
    return (
        f"CASE WHEN {i} % 10 = 3 THEN NULL WHEN {i} % 2 = 0 THEN {NOW} - 100000 + {i} "
        f"ELSE {NOW} + 100000 + {i} END, "
        f"CASE WHEN {i} < 32 AND {i} % 2 = 1 THEN 'elsewhere:1:dead:0' ELSE NULL END, "
        f"CASE WHEN {i} < 32 AND {i} % 2 = 1 THEN {NOW} + 3600 ELSE NULL END, 0, "
        f"CASE WHEN {i} % 1000 = 7 THEN 'bench: set aside' ELSE NULL END, "
        f"{NOW} - 200000 + {i}, {NOW} - 200000 + {i}, ''"
    )


def pg_schema_url(base: str) -> tuple[str, str]:
    """A fresh schema name on ``base``'s server and the URL that uses it."""
    schema = "fsm_scale_" + uuid.uuid4().hex[:10]
    return schema, f"{base}?options=-c%20search_path%3D{schema}"


@attrs.frozen
class ScaleAction(fsm.Action[None]):
    """The kind of `fill`'s rows: it waits, and each step parks it for another hour."""

    name = KIND
    key: str
    n: int

    @property
    def id(self) -> str:
        return self.key

    @property
    def state(self) -> str:
        return "waiting"

    def advance(self, ctx: fsm.StepContext[None]) -> fsm.Outcome:
        return fsm.Park(self, wake_after=3600.0)
