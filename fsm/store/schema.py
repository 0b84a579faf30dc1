"""The schema: peewee models of fsm's five tables, its version, creation and migration.

One row per live action (``fsm_action``), one row per held resource (``fsm_resource``), one
row per step in the transition log (``fsm_transition``), one per ended incarnation
(``fsm_outcome``) and the schema version (``fsm_meta``). The models create and describe the
tables and serve the cold paths; the hot path is plain SQL (`fsm.store.statements`).

The functions here run with the models bound to the database at hand (`Store` binds them
per call), so several stores can live in one process. The binding is per thread
(`_PerThread`): a global one let two threads' stores swap each other's database mid-query,
so a query could read (or write) the other store's tables.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import peewee
from playhouse.shortcuts import ThreadSafeDatabaseMetadata

from fsm.errors import NotAnFsmDatabase, SchemaError
from fsm.store.channel import channel_for

SCHEMA_VERSION = 6


class _PerThread(ThreadSafeDatabaseMetadata):  # type: ignore[misc]  # playhouse is untyped
    """A model's database binding, per thread, for queries and table creation alike.

    playhouse's `ThreadSafeDatabaseMetadata` keeps the binding per thread, but peewee's
    ``set_database`` also copies it into the model's schema manager, which every thread
    shares and which ``create_tables`` reads: this one leaves the schema manager unbound,
    so it falls back to the per-thread binding.
    """

    def set_database(self, database: peewee.Database | None) -> None:
        self.database = database
        del self.table


class _Base(peewee.Model):
    class Meta:
        legacy_table_names = False
        model_metadata_class = _PerThread


class ActionRow(_Base):
    """A live action: its checkpoint, retry bookkeeping, wake-up time and lease."""

    id = peewee.CharField(primary_key=True, max_length=200)
    kind = peewee.CharField(max_length=200)
    state = peewee.CharField(max_length=200)
    version = peewee.IntegerField(default=1)
    payload = peewee.TextField()
    seq = peewee.IntegerField(default=0)
    attempts = peewee.IntegerField(default=0)
    last_error = peewee.TextField(null=True)
    wake_at = peewee.DoubleField(null=True)  # indexed by _POLL_INDEXES
    lease_owner = peewee.CharField(max_length=255, null=True)
    lease_expires = peewee.DoubleField(null=True)
    epoch = peewee.IntegerField(default=0)
    quarantine = peewee.TextField(null=True)
    step_outcome = peewee.CharField(max_length=16, null=True)
    step_via = peewee.CharField(max_length=16, null=True)
    step_duration = peewee.DoubleField(null=True)
    created_at = peewee.DoubleField()
    updated_at = peewee.DoubleField()
    incarnation = peewee.CharField(max_length=32, constraints=[peewee.SQL("DEFAULT ''")])
    cause = peewee.TextField(null=True)
    broken = peewee.BooleanField(constraints=[peewee.SQL("DEFAULT FALSE")])
    notified = peewee.BooleanField(constraints=[peewee.SQL("DEFAULT FALSE")])
    ending = peewee.CharField(max_length=16, null=True)  # SQLite's end trigger (schema v4)
    steps = peewee.IntegerField(constraints=[peewee.SQL("DEFAULT 0")])  # schema v5
    retries = peewee.IntegerField(constraints=[peewee.SQL("DEFAULT 0")])  # schema v5
    inbox = peewee.IntegerField(constraints=[peewee.SQL("DEFAULT 0")])  # schema v6
    parent = peewee.CharField(max_length=200, null=True)  # schema v6
    parent_incarnation = peewee.CharField(max_length=32, null=True)  # schema v6

    class Meta:
        table_name = "fsm_action"
        without_rowid = True


_V2_COLUMNS = (
    ("incarnation", "VARCHAR(32) NOT NULL DEFAULT ''"),
    ("cause", "TEXT"),
    ("broken", "BOOLEAN NOT NULL DEFAULT FALSE"),
    ("notified", "BOOLEAN NOT NULL DEFAULT FALSE"),
)
"""Columns schema v2 added to ``fsm_action`` (migrated in place from v1)."""

_V4_COLUMNS = (("ending", "VARCHAR(16)"),)
"""Schema v4: how the action ends, set only by SQLite's terminal UPDATE (`_SQLITE_END_TRIGGER`)."""

_V5_COUNTS = (
    ("steps", "INTEGER NOT NULL DEFAULT 0"),
    ("retries", "INTEGER NOT NULL DEFAULT 0"),
)
"""Schema v5: how many steps an incarnation made and how many were retries, on ``fsm_action``
(counted by the step's own UPDATE) and on ``fsm_outcome`` (copied by the end)."""


_V6_COLUMNS = (
    ("inbox", "INTEGER NOT NULL DEFAULT 0"),
    ("parent", "VARCHAR(200)"),
    ("parent_incarnation", "VARCHAR(32)"),
)
"""Schema v6: the count of pending events (``fsm_event``), and the parent that spawned the
action (`fsm.StepContext.spawn`), told of its end by ``fsm_child_end``."""


class ResourceRow(_Base):
    """A named resource and the live action holding it.

    The foreign key cascades: deleting an action's row releases its resources in the same
    statement, so the database itself guarantees no resource outlives its action.
    """

    name = peewee.CharField(primary_key=True, max_length=255)
    action = peewee.ForeignKeyField(
        ActionRow, column_name="action_id", field="id", on_delete="CASCADE", index=True
    )
    acquired_at = peewee.DoubleField()

    class Meta:
        table_name = "fsm_resource"


class EventRow(_Base):
    """An event sent to a live action (`fsm.Executor.send`): its inbox, and what it took.

    ``id`` is the send order. ``consumed_at`` is set by the step that takes the event, in
    its checkpoint's transaction (``consumed_seq``: that step's sequence), or when it is set
    aside (``dropped``: why). The row stays while the action lives, so a send repeating a
    key is recognised as the same event even after it was taken; the action's end deletes
    its events by cascade. The partial index ``fsm_event_pending`` holds the inbox itself.
    """

    id = peewee.BigAutoField()
    action = peewee.ForeignKeyField(
        ActionRow, column_name="action_id", field="id", on_delete="CASCADE", index=False
    )
    key = peewee.CharField(max_length=255)
    name = peewee.CharField(max_length=200)
    payload = peewee.TextField()
    sent_at = peewee.DoubleField()
    consumed_at = peewee.DoubleField(null=True)
    consumed_seq = peewee.IntegerField(null=True)
    dropped = peewee.TextField(null=True)

    class Meta:
        table_name = "fsm_event"
        indexes = ((("action", "key"), True),)


class TransitionRow(_Base):
    """One step of one action, written in the step's own transaction.

    One secondary index, by action (``fsm_transition_action``): every index is one more page
    written per step, and this one pays for itself by reading an action's history without
    a scan of the whole log. Pruning walks the log by ``id``, oldest first.
    """

    id = peewee.AutoField()
    action_id = peewee.CharField(max_length=200)
    kind = peewee.CharField(max_length=200)
    seq = peewee.IntegerField()
    from_state = peewee.CharField(max_length=200)
    to_state = peewee.CharField(max_length=200, null=True)
    outcome = peewee.CharField(max_length=16)
    via = peewee.CharField(max_length=16)
    attempt = peewee.IntegerField()
    error = peewee.TextField(null=True)
    duration = peewee.DoubleField()
    at = peewee.DoubleField()

    class Meta:
        table_name = "fsm_transition"


class OutcomeRow(_Base):
    """How one incarnation of an action ended, written in the transaction that deletes it.

    `Executor.start` reads it to recognise a start delivered again after its action ended
    (a re-delivered message) within the redelivery window, and returns this outcome instead
    of running the action a second time.
    """

    id = peewee.CharField(max_length=200)
    incarnation = peewee.CharField(max_length=32)
    kind = peewee.CharField(max_length=200)
    state = peewee.CharField(max_length=200)
    status = peewee.CharField(max_length=16)
    error = peewee.TextField(null=True)
    cause = peewee.TextField(null=True)
    started_at = peewee.DoubleField()
    finished_at = peewee.DoubleField()
    steps = peewee.IntegerField(constraints=[peewee.SQL("DEFAULT 0")])  # schema v5
    retries = peewee.IntegerField(constraints=[peewee.SQL("DEFAULT 0")])  # schema v5

    class Meta:
        table_name = "fsm_outcome"
        primary_key = peewee.CompositeKey("id", "incarnation")


class MetaRow(_Base):
    key = peewee.CharField(primary_key=True, max_length=64)
    value = peewee.TextField()

    class Meta:
        table_name = "fsm_meta"


MODELS: tuple[type[peewee.Model], ...] = (
    ActionRow,
    ResourceRow,
    TransitionRow,
    OutcomeRow,
    EventRow,
    MetaRow,
)

_POLL_INDEXES = (
    "CREATE INDEX IF NOT EXISTS fsm_action_wake ON fsm_action (wake_at) "
    "WHERE quarantine IS NULL AND wake_at IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS fsm_action_lease ON fsm_action (lease_owner) "
    "WHERE lease_owner IS NOT NULL",
)
"""The partial indexes the polls read (schema v3), so an idle poll costs the same at a million
rows as at a thousand.

``fsm_action_wake`` serves `next_wake`, `claim_due` and ``due_ids``: rows in wake-up order,
without the quarantined ones and those waiting for a notify only. A step does not rewrite it:
the drive writes ``wake_at`` only when it changes (a park), never as a per-step constant.
``fsm_action_lease`` holds only the leased rows (a few per worker): `next_wake`'s leased
half, `release_dead_leases` and a release by owner read it. It is keyed on ``lease_owner``,
written at a claim and a release, and not on ``lease_expires``, which every `renew` writes.
"""

ACTION_TROUBLE = "broken OR quarantine IS NOT NULL OR last_error IS NOT NULL OR cause IS NOT NULL"
"""Live rows in trouble: the partial index ``fsm_action_trouble`` holds only these, and a
query that repeats this condition word for word can read it (SQLite's rule)."""
OUTCOME_TROUBLE = "error IS NOT NULL OR cause IS NOT NULL"
"""Ends with an error or a cause (``fsm_outcome_trouble``), as `ACTION_TROUBLE`."""

_LISTING_INDEXES = (
    "CREATE INDEX IF NOT EXISTS fsm_action_started ON fsm_action (created_at, id)",
    f"CREATE INDEX IF NOT EXISTS fsm_action_trouble ON fsm_action (created_at, id) "
    f"WHERE {ACTION_TROUBLE}",
    "CREATE INDEX IF NOT EXISTS fsm_outcome_ended ON fsm_outcome "
    "(status, finished_at, id, incarnation)",
    "CREATE INDEX IF NOT EXISTS fsm_outcome_trouble ON fsm_outcome "
    f"(status, finished_at, id, incarnation) WHERE {OUTCOME_TROUBLE}",
    "CREATE INDEX IF NOT EXISTS fsm_transition_action ON fsm_transition (action_id, id)",
    "CREATE INDEX IF NOT EXISTS fsm_event_pending ON fsm_event (action_id, id) "
    "WHERE consumed_at IS NULL",
    "CREATE INDEX IF NOT EXISTS fsm_action_parent ON fsm_action (parent) WHERE parent IS NOT NULL",
)
"""The indexes the operator's reads use (schema v5), so a page of a listing, an action's
history and a prune cost the same at a million rows as at a thousand.

``fsm_action_started`` orders live actions by their start (written at a start and an end
only: a step never changes ``created_at``). ``fsm_action_trouble`` holds only the rows in
trouble (`ACTION_TROUBLE`): the listing of broken and quarantined actions, and a search of
error texts, read it instead of every live row; a step rewrites it only when it changes one
of those columns (an error, a fix), never on a plain step. ``fsm_outcome_ended`` orders each
status's ends by time, for the listing and for pruning (one entry per ended incarnation);
``fsm_outcome_trouble`` the same for the ends with an error or a cause, for a search of
error texts. ``fsm_transition_action`` is the one index a step pays for: an action's history
is read by it, instead of a scan of the whole log (see docs/performance.md).
"""

_SQLITE_LOG_TRIGGER = """
CREATE TRIGGER IF NOT EXISTS fsm_transition_log
AFTER UPDATE OF payload ON fsm_action
WHEN NEW.step_outcome IS NOT NULL
BEGIN
    INSERT INTO fsm_transition (action_id, kind, seq, from_state, to_state, outcome, via,
                                attempt, error, duration, at)
    VALUES (NEW.id, NEW.kind, OLD.seq, OLD.state, NEW.state, NEW.step_outcome, NEW.step_via,
            NEW.attempts, NEW.last_error, NEW.step_duration, NEW.updated_at);
END
"""
"""Writes the log row of a step inside the step's own UPDATE (one statement, one commit)."""

_SQLITE_END_TRIGGER = """
CREATE TRIGGER IF NOT EXISTS fsm_action_end
AFTER UPDATE OF ending ON fsm_action
WHEN NEW.ending IS NOT NULL
BEGIN
    INSERT INTO fsm_outcome (id, incarnation, kind, state, status, error, cause, started_at,
                             finished_at, steps, retries)
    VALUES (NEW.id, NEW.incarnation, NEW.kind, NEW.state, NEW.ending,
            CASE WHEN NEW.ending = 'done' THEN NULL ELSE NEW.last_error END, NEW.cause,
            NEW.created_at, NEW.updated_at, NEW.steps, NEW.retries)
    ON CONFLICT (id, incarnation) DO NOTHING;
    INSERT INTO fsm_transition (action_id, kind, seq, from_state, to_state, outcome, via,
                                attempt, error, duration, at)
    SELECT NEW.id, NEW.kind, OLD.seq, OLD.state, NULL, NEW.step_outcome, NEW.step_via,
           NEW.attempts, NEW.last_error, NEW.step_duration, NEW.updated_at
    WHERE NEW.step_outcome IS NOT NULL;
    DELETE FROM fsm_action WHERE id = NEW.id;
END
"""
"""The end of an action on SQLite as one statement: the fenced UPDATE that sets ``ending``
keeps the outcome, logs the last step (unless ``step_outcome`` is NULL: logging is off) and
deletes the row, whose resources go with it by cascade. One statement in autocommit instead
of a transaction of three: a terminal step costs what any other step costs. PostgreSQL does
the same with one data-modifying CTE (`Statements.finish`)."""


_CHILD_ENDED = (
    "'fsm.ChildEnded', {json}('child', OLD.id, 'kind', OLD.kind, "
    "'status', COALESCE(o.status, 'deleted'), 'state', COALESCE(o.state, OLD.state), "
    "'error', o.error){cast}, OLD.updated_at "
    "FROM fsm_action p LEFT JOIN fsm_outcome o "
    "ON o.id = OLD.id AND o.incarnation = OLD.incarnation "
    "WHERE p.id = OLD.parent AND p.incarnation = OLD.parent_incarnation "
    "ON CONFLICT (action_id, key) DO NOTHING"
)
"""The `fsm.ChildEnded` event a child's end sends its parent (if the parent still lives, in
the incarnation that spawned it): the end's status, state and error from its kept outcome
(``deleted`` when it was removed without one)."""

_CHILD_ENDED_INSERT = (
    "INSERT INTO fsm_event (action_id, key, name, payload, sent_at) "
    "SELECT p.id, 'fsm.child:' || OLD.id || '~' || OLD.incarnation, "
)

_PARENT_DUE = (
    "UPDATE fsm_action SET wake_at = CASE WHEN wake_at IS NULL OR wake_at > OLD.updated_at "
    "THEN OLD.updated_at ELSE wake_at END, notified = TRUE, inbox = {count} "
    "WHERE id = OLD.parent AND incarnation = OLD.parent_incarnation"
)
"""The parent is due now, notified (a drive holding it leaves it due), its inbox counted."""

_RECOUNT = "(SELECT count(*) FROM fsm_event WHERE action_id = OLD.parent AND consumed_at IS NULL)"
"""SQLite's count: the trigger may have stored no event (a repeated end), and SQLite's
writes are serialized, so a count is exact. PostgreSQL adds one instead, only when the
event was stored (``IF FOUND``): a count there is read from the statement's snapshot, taken
before it waited for the parent's row, so a step of the parent that took an event and
committed meanwhile would still be counted pending; ``inbox + 1`` is applied to the row
as committed."""

_SQLITE_CHILD_TRIGGER = f"""
CREATE TRIGGER IF NOT EXISTS fsm_child_end
AFTER DELETE ON fsm_action
WHEN OLD.parent IS NOT NULL
BEGIN
    {_CHILD_ENDED_INSERT}{_CHILD_ENDED.format(json="json_object", cast="")};
    {_PARENT_DUE.format(count=_RECOUNT)};
END
"""
"""A child's end tells its parent, in the statement that deletes the child's row: whatever
ends it (its last step, a stop, a cancel), the parent cannot miss it nor get it twice."""


def _postgres_child_trigger(channel: str) -> tuple[str, ...]:
    """PostgreSQL's ``fsm_child_end``: the same as SQLite's, plus a NOTIFY to the workers."""
    ended = _CHILD_ENDED.format(json="json_build_object", cast="::text")
    body = (
        f"BEGIN {_CHILD_ENDED_INSERT}{ended}; "
        f"IF FOUND THEN {_PARENT_DUE.format(count='inbox + 1')}; "
        f"PERFORM pg_notify('{channel}', ''); END IF; "
        "RETURN NULL; END"
    )
    return (
        f"CREATE OR REPLACE FUNCTION fsm_child_end() RETURNS trigger AS $fsm$ {body} $fsm$ "
        "LANGUAGE plpgsql",
        "DROP TRIGGER IF EXISTS fsm_child_end ON fsm_action",
        "CREATE TRIGGER fsm_child_end AFTER DELETE ON fsm_action FOR EACH ROW "
        "WHEN (OLD.parent IS NOT NULL) EXECUTE FUNCTION fsm_child_end()",
    )


def migrate(db: peewee.Database, sqlite: bool) -> None:
    """Create what is missing and bring an older schema up to `SCHEMA_VERSION`, atomically.

    Raises `SchemaError` for a schema newer than this code. A schema already current is
    only read: DDL (``CREATE ... IF NOT EXISTS`` too) takes table locks on PostgreSQL, so a
    worker starting while another holds a lock on ``fsm_action`` (a long transaction, a
    migration) would wait for it, and a fleet starting at once would queue on each other.
    """
    if _is_current(db, sqlite):
        return
    with _MIGRATING, db.atomic():
        ActionRow._meta.without_rowid = sqlite  # a SQLite-only table option
        db.create_tables(MODELS, safe=True)
        for ddl in _POLL_INDEXES:
            db.execute_sql(ddl)
        row = MetaRow.get_or_none(MetaRow.key == "schema_version")
        found = SCHEMA_VERSION if row is None else int(row.value)
        if found > SCHEMA_VERSION:
            raise SchemaError(
                f"database schema v{found} is newer than this fsm (v{SCHEMA_VERSION}); upgrade fsm"
            )
        if found < 2:
            _add_columns(db, _V2_COLUMNS)
        if found < 3:
            db.execute_sql("DROP INDEX IF EXISTS fsm_action_wake_at")  # v2's full index
        if found < 4:
            _add_columns(db, _V4_COLUMNS)
        if found < 5:
            _add_columns(db, _V5_COUNTS)
            _add_columns(db, _V5_COUNTS, table="fsm_outcome")
            if sqlite:  # v4's end trigger keeps no counts
                db.execute_sql("DROP TRIGGER IF EXISTS fsm_action_end")
        if found < 6:
            _add_columns(db, _V6_COLUMNS)
        for ddl in _LISTING_INDEXES:
            db.execute_sql(ddl)
        if sqlite:
            db.execute_sql(_SQLITE_LOG_TRIGGER)
            db.execute_sql(_SQLITE_END_TRIGGER)
            db.execute_sql(_SQLITE_CHILD_TRIGGER)
        else:
            schema = db.execute_sql("SELECT current_schema()").fetchone()[0]
            for ddl in _postgres_child_trigger(channel_for(str(schema))):
                db.execute_sql(ddl)
        if row is None:
            MetaRow.create(key="schema_version", value=str(SCHEMA_VERSION))
        elif found < SCHEMA_VERSION:
            MetaRow.update(value=str(SCHEMA_VERSION)).where(
                MetaRow.key == "schema_version"
            ).execute()


_MIGRATING = threading.Lock()
"""Held while `migrate` creates tables: the SQLite-only ``without_rowid`` option it sets is
shared by every thread."""


def _is_current(db: peewee.Database, sqlite: bool) -> bool:
    """True when the database holds fsm's schema at `SCHEMA_VERSION` (set in the same
    transaction as the DDL that made it, so nothing of it is missing)."""
    try:
        return check_schema(db.execute_sql, sqlite, db.param) == SCHEMA_VERSION
    except NotAnFsmDatabase:
        return False


def _add_columns(
    db: peewee.Database, columns: tuple[tuple[str, str], ...], table: str = "fsm_action"
) -> None:
    """Add the ``columns`` ``table`` lacks, in place.

    v1 -> v2: incarnations, kept causes, broken and notified marks (``fsm_outcome`` is created
    by ``create_tables``); rows from v1 keep an empty incarnation, so the steps in flight
    during the upgrade keep their ``<id>.<seq>`` idempotency keys. v3 -> v4: ``ending``.
    v4 -> v5: the step and retry counts, on live rows and kept outcomes (0 for what was
    there before: their steps were not counted).
    """
    have = {c.name for c in db.get_columns(table)}
    for name, ddl in columns:
        if name not in have:
            db.execute_sql(f"ALTER TABLE {table} ADD COLUMN {name} {ddl}")


def check_schema(run: Callable[[str, Sequence[Any]], Any], sqlite: bool, param: str) -> int:
    """The read-only open: the schema must be fsm's, and not newer than this code.

    ``run`` runs a statement (nothing here writes); ``param``: the database's parameter
    marker. Returns the version found (an older one is read as it is; see
    `explain_missing`).
    """
    has_table = (
        f"SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = {param}"
        if sqlite
        else f"SELECT 1 WHERE to_regclass({param}) IS NOT NULL"  # on the search path
    )
    try:
        has_meta = run(has_table, ("fsm_meta",)).fetchone() is not None
    except peewee.DatabaseError as exc:
        if "file is not a database" not in str(exc):
            raise
        raise NotAnFsmDatabase("not an fsm database: not a SQLite database file") from None
    row = MetaRow.get_or_none(MetaRow.key == "schema_version") if has_meta else None
    if row is None:
        raise NotAnFsmDatabase("not an fsm database: it has no fsm schema (no fsm_meta table)")
    if not str(row.value).isdigit():
        raise NotAnFsmDatabase(f"not an fsm database: schema version {row.value!r}")
    found = int(row.value)
    if found > SCHEMA_VERSION:
        raise SchemaError(
            f"database schema v{found} is newer than this fsm (v{SCHEMA_VERSION}); "
            "upgrade fsm to read it"
        )
    return found


def explain_missing(exc: peewee.DatabaseError, read_version: int | None) -> None:
    """A read-only store on an older schema lacks what a query needs: say how to upgrade."""
    text = str(exc)
    old = read_version is not None and read_version < SCHEMA_VERSION
    if old and ("no such" in text or "does not exist" in text):
        raise SchemaError(
            f"database schema v{read_version} is older than this fsm "
            f"(v{SCHEMA_VERSION}) and lacks what this command reads ({text}); "
            "run any read-write fsm command (such as fsm worker) on it to upgrade it"
        ) from exc


def schema_version() -> int:
    """The version stored in ``fsm_meta`` (models bound to the database)."""
    return int(MetaRow.get(MetaRow.key == "schema_version").value)
