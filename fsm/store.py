"""The checkpoint store: peewee models for the schema, prepared SQL for the hot path.

One row per live action (``fsm_action``), one row per held resource (``fsm_resource``), one
row per step in the transition log (``fsm_transition``), and the schema version
(``fsm_meta``). The models create and describe the tables and serve the cold paths (listing,
inspection); the three statements every step runs (claim, fenced update, terminal delete) are
plain SQL strings sent through peewee's database object, because the query builder costs
several times the commit itself on SQLite.

Every checkpoint write is *fenced*: ``UPDATE ... WHERE id = ? AND epoch = ?``. A drive claims
the row by bumping ``epoch`` and setting a lease (owner, expiry); any write from an older
claim matches no row and is refused with `LeaseLost`. On one host a lease whose owner process
is dead is taken over at once, so a crashed driver never blocks the next run.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import math
import os
import socket
import sqlite3
import sys
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar

import attrs
import orjson
import peewee

from fsm.errors import LeaseLost, NotAnFsmDatabase, ResourceConflict, SchemaError
from fsm.faults import CrashPlan, DatabaseFaults

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
_WRAP_ERRORS = peewee.__exception_wrapper__  # type: ignore[attr-defined]
# psycopg.pq.TransactionStatus values (psycopg is imported only when PostgreSQL is used)
_PG_IDLE = 0
_PG_INERROR = 3
HOST = socket.gethostname()


class _Base(peewee.Model):
    class Meta:
        legacy_table_names = False


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
    wake_at = peewee.DoubleField(null=True, index=True)
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


class TransitionRow(_Base):
    """One step of one action, written in the step's own transaction.

    No secondary indexes: every index is one more page written per step, and the log is read
    only on cold paths (inspection, invariant checks, pruning by ``id``).
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

    class Meta:
        table_name = "fsm_outcome"
        primary_key = peewee.CompositeKey("id", "incarnation")


class MetaRow(_Base):
    key = peewee.CharField(primary_key=True, max_length=64)
    value = peewee.TextField()

    class Meta:
        table_name = "fsm_meta"


MODELS: tuple[type[_Base], ...] = (ActionRow, ResourceRow, TransitionRow, OutcomeRow, MetaRow)


@attrs.frozen(slots=True)
class Claimed:
    """A row we now hold the lease on, as read in the same statement that claimed it."""

    id: str
    kind: str
    state: str
    version: int
    payload: str
    seq: int
    attempts: int
    last_error: str | None
    wake_at: float | None
    epoch: int
    lease_expires: float
    incarnation: str
    cause: str | None
    broken: bool

    @property
    def bookkeeping(self) -> Bookkeeping:
        """The row's bookkeeping columns as claimed (what a first write compares against)."""
        return Bookkeeping(
            self.version,
            self.attempts,
            self.last_error,
            self.wake_at,
            self.lease_expires,
            bool(self.broken),
            self.cause,
        )


ClaimMiss = Literal["missing", "busy", "quarantined"]


@attrs.frozen(slots=True)
class Bookkeeping:
    """The columns of a row a drive changes besides the checkpoint itself.

    The executor keeps the row's current values and asks for new ones; the store writes only
    the columns that differ. ``lease_expires`` of ``None`` means not leased. ``broken``: the
    kind's code failed on this step and the action waits for a fix; ``cause``: the error of
    the rejection (or spent retry budget) whose route the action is following.
    """

    version: int
    attempts: int
    last_error: str | None
    wake_at: float | None
    lease_expires: float | None
    broken: bool = False
    cause: str | None = None


_STEP_COLUMNS = (
    "state",
    "payload",
    "seq",
    "updated_at",
    "step_outcome",
    "step_via",
    "step_duration",
)
_BOOKKEEPING = ("version", "attempts", "last_error", "wake_at", "lease_expires", "broken", "cause")


@attrs.frozen(slots=True)
class LogEntry:
    """What the transition log records for one step (``seq``: the step's sequence number)."""

    kind: str
    seq: int
    from_state: str
    to_state: str | None
    outcome: str
    via: str
    attempt: int
    error: str | None
    duration: float


@attrs.frozen(slots=True)
class RowInfo:
    """A row as seen by the cold paths (listing, inspection, quarantine reports)."""

    id: str
    kind: str
    state: str
    version: int
    attempts: int
    last_error: str | None
    wake_at: float | None
    lease_owner: str | None
    quarantine: str | None
    broken: bool = False
    incarnation: str = ""
    cause: str | None = None


@attrs.frozen(slots=True)
class KeptOutcome:
    """How an incarnation of an action ended (``status``: done, failed or stopped)."""

    id: str
    incarnation: str
    kind: str
    state: str
    status: str
    error: str | None
    cause: str | None
    started_at: float
    finished_at: float


P = ParamSpec("P")
R = TypeVar("R")


def _cold(method: Callable[Concatenate[Store, P], R]) -> Callable[Concatenate[Store, P], R]:
    """Run a cold-path method with the models bound to this store's database.

    Models are bound per call, not once globally, so several stores (a SQLite file and a
    PostgreSQL database, or two files) can live in one process.
    """

    @functools.wraps(method)
    def bound(self: Store, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with _WRAP_ERRORS:
            self._connection()  # reconnects first if the last connection broke
        with self.db.bind_ctx(MODELS):
            try:
                return method(self, *args, **kwargs)
            except (peewee.OperationalError, peewee.ProgrammingError) as exc:
                self._explain_missing(exc)
                raise

    return bound


_NO_POINT = contextlib.nullcontext()


@contextmanager
def _armed_point(crash: CrashPlan, name: str) -> Iterator[None]:
    crash.hit(f"{name}.before")
    yield
    crash.hit(f"{name}.after")


@functools.cache
def _process_space() -> str | None:
    """A short hash naming where a pid means this process: host, boot and PID namespace.

    Two processes with the same pid name the same process only if all three agree: workers in
    containers sharing a hostname (host networking) have PID namespaces of their own, and a
    host that rebooted reuses pids. ``None`` when ``/proc`` does not tell (then no owner is
    ever certainly dead).
    """
    try:
        pid_ns = os.readlink("/proc/self/ns/pid")
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            boot = f.read().strip()
    except OSError:
        return None
    return hashlib.sha256(f"{HOST}\0{boot}\0{pid_ns}".encode()).hexdigest()[:12]


def new_owner() -> str:
    """A lease owner token: ``host:pid:random:space`` (see `_process_space`).

    The random part keeps two executors of one process apart. Without a readable ``/proc``
    the token has no space part, and no one will ever take its leases before they expire.
    """
    token = f"{HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    space = _process_space()
    return token if space is None else f"{token}:{space}"


def _owner_is_dead(owner: str) -> bool:
    """True only when ``owner`` is certainly dead: a process of our space that is gone.

    Anything else (another host, another container, another boot, an older token without a
    space, an unreadable ``/proc``) may be alive, and its lease is left to expire: taking a
    live lease lets two drivers run one step at once. (A reused pid only makes a dead owner
    look alive: the safe direction.)
    """
    parts = owner.split(":")
    here = _process_space()
    if len(parts) != 4 or here is None:
        return False
    host, pid_text, _, space = parts
    if host != HOST or space != here or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _is_broken(conn: Any) -> bool:
    """True when a driver connection can no longer run statements (psycopg marks it closed)."""
    return bool(getattr(conn, "closed", False))


def _pg_status(conn: Any) -> int:
    """A psycopg connection's transaction status (``_PG_IDLE``, ``_PG_INERROR``, ...)."""
    return int(conn.pgconn.transaction_status)


def is_transient(exc: BaseException) -> bool:
    """True for a database error that can go away by itself, with no change to code or setup.

    A lost or refused connection, a server shutting down or restarting, a lock or I/O error
    (``OperationalError``), an unusable connection (``InterfaceError``), an aborted
    transaction (``InternalError``): peewee's wrapped types and the drivers' own. Anything
    else (a missing table, a permission refused, bad data) needs a person.
    """
    transient: tuple[type[BaseException], ...] = (
        peewee.OperationalError,
        peewee.InterfaceError,
        peewee.InternalError,
        sqlite3.OperationalError,
    )
    if isinstance(exc, transient):
        return True
    psycopg = sys.modules.get("psycopg")  # only ever raised when it was imported
    return psycopg is not None and isinstance(
        exc, (psycopg.OperationalError, psycopg.InterfaceError, psycopg.InternalError)
    )


def open_store(url: str, **kwargs: Any) -> Store:
    """A store from a URL.

    ``sqlite:///relative/path``, ``sqlite:////abs/path`` or a plain file path: SQLite (WAL).
    ``postgresql://user@host:port/dbname`` (``postgres://`` too): PostgreSQL through psycopg
    (``pip install 'fsm[postgres]'``); ``?options=-c%20search_path%3Dmyschema`` and other
    query parameters are passed to the driver. Raises ``ValueError`` naming the accepted
    forms for anything else.

    ``readonly=True`` opens an existing database for inspection only (see `Store`): nothing
    is created, migrated or switched, on SQLite or PostgreSQL.
    """
    if url.startswith("sqlite:///"):
        return Store.sqlite(url[len("sqlite:///") :], **kwargs)
    scheme = url.split("://", 1)[0] if "://" in url else None
    if scheme in ("postgres", "postgresql"):
        from playhouse.db_url import parse

        params = parse(url)
        params.pop("autorollback", None)
        return _postgres(params, **kwargs)
    if scheme is not None:
        raise ValueError(
            f"unsupported database URL scheme {scheme!r}: use sqlite:///PATH, a file path, "
            "or postgresql://USER@HOST:PORT/DB"
        )
    return Store.sqlite(url, **kwargs)


def _postgres(params: dict[str, Any], **kwargs: Any) -> Store:
    """A store on PostgreSQL; ``params`` are peewee/psycopg connection parameters."""
    try:
        import psycopg  # noqa: F401  (peewee picks psycopg 3 when it is importable)
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ValueError(
            "PostgreSQL needs the psycopg driver: pip install 'fsm[postgres]'"
        ) from exc
    database = params.pop("database")
    if kwargs.get("readonly"):
        # A session setting given at connect time, so it holds on every reconnection too.
        params["options"] = f"{params.get('options', '')} -c default_transaction_read_only=on"
    return Store(peewee.PostgresqlDatabase(database, **params), **kwargs)


class Store:
    """The checkpoint store over one peewee database (SQLite by default).

    ``synchronous``: SQLite's durability level; ``NORMAL`` (the default) loses at most the
    last commits on power loss, never on a process crash; ``FULL`` syncs every commit.
    ``lease_ttl``: seconds a claim stays valid without a write.
    ``log_transitions``: write the per-step transition log.
    ``faults``: inject database errors into a fraction of the statements (testing only).
    ``local_clock``: this host's clock (unix seconds); `now` corrects it to the database's.
    The ``FSM_CRASH``, ``FSM_CRASH_TRACE`` and ``FSM_DB_FAULTS`` environment variables arm
    a crash point, trace the write points, or switch database faults on (see `fsm.faults`).
    ``readonly``: inspection only (``fsm actions``, ``fsm diagram --db``), safe to point at
    any file: no table is created and nothing migrated; through `open_store` or `sqlite` the
    connection cannot write either (SQLite ``mode=ro``, a PostgreSQL read-only session).
    The schema must be fsm's (`NotAnFsmDatabase` otherwise) and not newer than this code
    (`SchemaError`); an older one is read as it is, and a query needing what it lacks raises
    `SchemaError` saying how to upgrade.
    """

    def __init__(
        self,
        database: peewee.Database,
        *,
        lease_ttl: float = 30.0,
        log_transitions: bool = True,
        faults: DatabaseFaults | None = None,
        local_clock: Callable[[], float] = time.time,
        readonly: bool = False,
    ) -> None:
        self.db = database
        self.readonly = readonly
        self._read_version: int | None = None
        if not (isinstance(lease_ttl, int | float) and 0 < lease_ttl < math.inf):
            raise ValueError(f"lease_ttl must be a finite number of seconds > 0, got {lease_ttl}")
        self.lease_ttl = lease_ttl
        self.log_transitions = log_transitions
        self.faults = faults if faults is not None else DatabaseFaults.from_env()
        self.crash = CrashPlan.from_env()
        self.failed_calls = 0
        """Statements that raised so far (a worker asks whether a drive met a failure)."""
        self._sqlite = isinstance(database, peewee.SqliteDatabase)
        self._begin = "BEGIN IMMEDIATE" if self._sqlite else "BEGIN"
        self._sql = _Statements(database.param)
        self._local_clock = local_clock
        self._clock_offset = 0.0
        self._clock_checked_at = -_CLOCK_CHECK_EVERY
        self.db.connect(reuse_if_open=True)
        if readonly:
            self._check_schema()
        else:
            self._migrate()
        if not self._sqlite:
            self._measure_clock()

    @classmethod
    def sqlite(
        cls,
        path: str | os.PathLike[str],
        *,
        synchronous: Literal["OFF", "NORMAL", "FULL"] = "NORMAL",
        busy_timeout: float = 10.0,
        readonly: bool = False,
        **kwargs: Any,
    ) -> Store:
        """A store on a SQLite file in WAL mode; a new file is created owner-only (0600).

        ``readonly``: open the existing file through a ``mode=ro`` URI, without switching its
        journal mode (see `_readonly_uri`).
        """
        if readonly:
            uri = peewee.SqliteDatabase(_readonly_uri(path), uri=True, timeout=busy_timeout)
            return cls(uri, readonly=True, **kwargs)
        _create_private(path)
        db = peewee.SqliteDatabase(
            os.fspath(path),
            pragmas={
                "journal_mode": "wal",
                "synchronous": synchronous,
                "foreign_keys": 1,
            },
            timeout=busy_timeout,
        )
        return cls(db, **kwargs)

    @property
    def is_sqlite(self) -> bool:
        return self._sqlite

    # -- schema ---------------------------------------------------------------------------

    @_cold
    def _migrate(self) -> None:
        with self.db.atomic():
            ActionRow._meta.without_rowid = self._sqlite  # a SQLite-only table option
            self.db.create_tables(MODELS, safe=True)
            if self._sqlite:
                self.db.execute_sql(_SQLITE_LOG_TRIGGER)
            row = MetaRow.get_or_none(MetaRow.key == "schema_version")
            if row is None:
                MetaRow.create(key="schema_version", value=str(SCHEMA_VERSION))
                return
            found = int(row.value)
            if found > SCHEMA_VERSION:
                raise SchemaError(
                    f"database schema v{found} is newer than this fsm (v{SCHEMA_VERSION}); "
                    "upgrade fsm"
                )
            if found < 2:
                self._migrate_to_v2()
            if found < SCHEMA_VERSION:
                MetaRow.update(value=str(SCHEMA_VERSION)).where(
                    MetaRow.key == "schema_version"
                ).execute()

    def _migrate_to_v2(self) -> None:
        """v1 -> v2: incarnations, kept causes, broken and notified marks (``fsm_outcome`` is
        created by ``create_tables``). Rows from v1 keep an empty incarnation, so the steps in
        flight during the upgrade keep their ``<id>.<seq>`` idempotency keys."""
        have = {c.name for c in self.db.get_columns("fsm_action")}
        for name, ddl in _V2_COLUMNS:
            if name not in have:
                self.db.execute_sql(f"ALTER TABLE fsm_action ADD COLUMN {name} {ddl}")

    @_cold
    def _check_schema(self) -> None:
        """The read-only open: the schema must be fsm's, and not newer than this code."""
        try:
            has_meta = self._has_table("fsm_meta")
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
        self._read_version = found

    def _has_table(self, name: str) -> bool:
        """Whether table ``name`` exists (on PostgreSQL: on the search path), read-only."""
        p = self.db.param
        sql = (
            f"SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = {p}"
            if self._sqlite
            else f"SELECT 1 WHERE to_regclass({p}) IS NOT NULL"
        )
        return self._exec(sql, (name,)).fetchone() is not None

    def _explain_missing(self, exc: peewee.DatabaseError) -> None:
        """A read-only store on an older schema lacks what a query needs: say how to upgrade."""
        text = str(exc)
        old = self._read_version is not None and self._read_version < SCHEMA_VERSION
        if old and ("no such" in text or "does not exist" in text):
            raise SchemaError(
                f"database schema v{self._read_version} is older than this fsm "
                f"(v{SCHEMA_VERSION}) and lacks what this command reads ({text}); "
                "run any read-write fsm command (such as fsm worker) on it to upgrade it"
            ) from exc

    @property
    @_cold
    def schema_version(self) -> int:
        return int(MetaRow.get(MetaRow.key == "schema_version").value)

    def close(self) -> None:
        self.db.close()

    # -- the clock ------------------------------------------------------------------------

    def now(self) -> float:
        """The current unix time on the database's clock (the executor's default clock).

        Lease expiries, wake-ups and claims written by many hosts must agree on one clock, or
        a host whose clock runs ahead takes live leases. SQLite serves one host: its clock.
        PostgreSQL: the local clock plus its offset from the server's ``clock_timestamp()``,
        measured at connect and again every `_CLOCK_CHECK_EVERY` seconds (one cheap query,
        never on each call).
        """
        if not self._sqlite and time.monotonic() - self._clock_checked_at >= _CLOCK_CHECK_EVERY:
            self._measure_clock()
        return self._local_clock() + self._clock_offset

    def _measure_clock(self) -> None:
        """Measure the database clock's offset from the local one; keep the old on failure."""
        self._clock_checked_at = time.monotonic()
        try:
            before = self._local_clock()
            with _WRAP_ERRORS:  # not a write: injected faults (``faults``) leave it alone
                server = self.db.connection().execute(self._sql.server_clock).fetchone()[0]
            after = self._local_clock()
        except Exception as exc:  # measured again at the next check; the old offset stands
            log.warning("could not read the database clock, keeping the last offset: %s", exc)
            return
        self._clock_offset = float(server) - (before + after) / 2

    # -- the hot path ---------------------------------------------------------------------

    def _exec(self, sql: str, params: Sequence[Any] = ()) -> Any:
        # The driver's own statement cache keeps these prepared; peewee's exception wrapper
        # turns driver errors into peewee's types, the same on every database.
        try:
            with _WRAP_ERRORS:
                if self.faults is not None and sql != "ROLLBACK":
                    self.faults.maybe_fail(self._sqlite)
                return self._connection().execute(sql, params)
        except Exception:
            self.failed_calls += 1
            raise

    # -- the connection -------------------------------------------------------------------
    #
    # A connection can break under us: PostgreSQL terminates a backend (a restart, a failover,
    # ``pg_terminate_backend``), the network drops, a SQLite rollback fails. The call that
    # meets the failure raises, as it must: the store never repeats a statement on its own,
    # because a write whose COMMIT was sent may or may not have committed. The *next* call
    # finds the broken connection and opens a new one.
    #
    # Why repeating is left to the caller, and why that is safe: the executor treats any
    # failed write as "let go of the action and claim it again later". Claiming bumps the
    # fencing epoch and re-reads the row, so whatever the lost write's fate, the next drive
    # starts from what the database holds: the write's state if it committed (nothing is
    # redone), the state before it if not (the step runs again under the same idempotency
    # key). A write still carrying the old epoch, from this process or any other, matches no
    # row once the action has been claimed again, and is refused with `LeaseLost`.

    def _connection(self) -> Any:
        """The driver connection, made usable first.

        A closed or broken connection is replaced. On PostgreSQL, an aborted transaction
        left on the connection (by any code sharing it) is rolled back: it can only refuse
        every statement until then ("current transaction is aborted").
        """
        conn = self.db.connection()
        if _is_broken(conn):
            log.warning("the database connection was lost; reconnecting")
            self._discard_connection()
            return self.db.connection()
        if not self._sqlite and _pg_status(conn) == _PG_INERROR:
            log.warning("rolling back an aborted transaction left on the connection")
            conn.rollback()
        return conn

    def _discard_connection(self) -> None:
        """Drop the current connection (its transaction with it); the next call opens one."""
        conn = self._current_connection()
        if conn is not None:
            with contextlib.suppress(Exception):  # closing a dead connection may fail: it is gone
                conn.close()
        self.db.dispose()

    def _current_connection(self) -> Any:
        """The driver connection now open, or ``None``; never opens one."""
        return None if self.db.is_closed() else self.db.connection()

    def _idle(self) -> bool:
        """True when the connection is usable and has no transaction open."""
        conn = self._current_connection()
        if conn is None or _is_broken(conn):
            return False
        if self._sqlite:
            return not conn.in_transaction
        return _pg_status(conn) == _PG_IDLE

    def _write_point(self, name: str) -> contextlib.AbstractContextManager[None]:
        """The named write point around a write: ``<name>.before`` and ``<name>.after``.

        Without a crash plan this is a shared no-op context (the hot path pays nothing).
        """
        if self.crash is None:
            return _NO_POINT
        return _armed_point(self.crash, name)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One explicit transaction; whatever fails inside it, none stays open afterwards.

        On any error the transaction is rolled back; if the rollback fails too, or the
        connection still reports a transaction (an aborted PostgreSQL transaction, a SQLite
        "database is locked" or disk I/O error at COMMIT), the connection is dropped, so
        the next call starts on a fresh one instead of failing for ever with "current
        transaction is aborted" or "cannot start a transaction within a transaction".
        """
        try:
            self._exec(self._begin)
            yield
            self._exec("COMMIT")
        except BaseException:
            self._abandon_transaction()
            raise

    def _abandon_transaction(self) -> None:
        """Roll back on the same connection (never a new one); drop it if that fails."""
        conn = self._current_connection()
        if conn is not None and not _is_broken(conn):
            try:
                conn.execute("ROLLBACK")
            except Exception as exc:  # nothing to roll back, or the connection is gone
                log.debug("rollback failed: %s", exc)
        if not self._idle():
            log.warning("a failed transaction could not be rolled back; dropping the connection")
            self._discard_connection()

    def insert(
        self,
        action_id: str,
        kind: str,
        state: str,
        version: int,
        payload: str,
        resources: Iterable[str],
        now: float,
        *,
        incarnation: str = "",
        ended_since: float | None = None,
    ) -> str | KeptOutcome | None:
        """Create a live action (a new ``incarnation`` of its id) with its resources, atomically.

        Returns ``None`` if created. Otherwise nothing is changed and it returns the kind of the
        live action that already has this id, or, when ``ended_since`` is given, the kept
        outcome of an incarnation of this id that ended at or after that time. Raises
        `ResourceConflict` if a resource is taken.
        """
        since = _NEVER if ended_since is None else ended_since
        params = (action_id, kind, state, version, payload, now, now, now, incarnation)
        with self._write_point("start"), self._transaction():
            cur = self._exec(self._sql.insert, (*params, action_id, since))
            if cur.rowcount != 1:
                row = self._exec(self._sql.kind_of, (action_id,)).fetchone()
                if row is not None:
                    return str(row[0])
                kept = self._exec(self._sql.outcome_of, (action_id,)).fetchone()
                if kept is None:  # pragma: no cover - the insert lost a race with a delete
                    raise LeaseLost(f"action {action_id}: changed while being started; retry")
                return KeptOutcome(*kept)
            self._acquire(action_id, resources, now)
            self.wake_workers()
        return None

    def claim(self, action_id: str, owner: str, now: float) -> Claimed | ClaimMiss:
        """Take the lease on a live action and read it, in one statement.

        Returns ``"busy"`` when another live driver holds it, ``"missing"`` when there is no
        such action, ``"quarantined"`` when the row is set aside. A lease ``owner`` already
        holds (left behind by a drive whose store call failed) is taken again at once; the
        executor keeps two of its own tasks apart in memory.
        """
        params = (owner, now + self.lease_ttl, action_id, now, owner)
        with self._write_point("claim"):
            row = self._exec(self._sql.claim, params).fetchone()
        if row is not None:
            return Claimed(action_id, *row)
        info = self._exec(self._sql.lease_of, (action_id,)).fetchone()
        if info is None:
            return "missing"
        holder, quarantined = info
        if quarantined is not None:
            return "quarantined"
        if holder is not None and _owner_is_dead(holder):
            log.info("action %s: taking over the lease of dead driver %s", action_id, holder)
            params2 = (owner, now + self.lease_ttl, action_id, holder)
            row = self._exec(self._sql.steal, params2).fetchone()
            if row is not None:
                return Claimed(action_id, *row)
        return "busy"

    def write(
        self,
        action_id: str,
        epoch: int,
        *,
        state: str,
        payload: str,
        seq: int,
        was: Bookkeeping,
        new: Bookkeeping,
        acquired: Sequence[str],
        released: Sequence[str],
        entry: LogEntry | None,
        now: float,
    ) -> None:
        """Persist a checkpoint, its resource changes and its log entry atomically.

        ``was`` is the row's bookkeeping as it stands, ``new`` what it must become; only the
        columns that differ are written (a typical step changes none of them, and every
        column left out is work SQLite does not do). ``new.lease_expires`` of ``None`` lets go
        of the lease (the drive is returning). Raises `LeaseLost` if another driver has
        claimed the row since.

        A step without resource changes is one autocommit statement: on SQLite an ``UPDATE``
        whose log row a trigger writes inside the same statement; on PostgreSQL an ``UPDATE``
        and the log ``INSERT`` joined in one data-modifying CTE (one round-trip). Anything
        else runs in an explicit transaction. A new ``wake_at`` is written only if no notify
        arrived since the claim (`mark_due`); otherwise the action is left due now.
        """
        logged = entry is not None and self.log_transitions
        columns = list(_STEP_COLUMNS)
        params: list[Any] = [
            state,
            payload,
            seq,
            now,
            entry.outcome if logged and entry else None,
            entry.via if entry else None,
            entry.duration if entry else None,
        ]
        for name in _BOOKKEEPING:
            value = getattr(new, name)
            if value != getattr(was, name):
                columns.append(name)
                params.append(value)
                if name == "wake_at":  # a notify that came meanwhile keeps the action due
                    params.append(now if value is None or value > now else value)
        if new.lease_expires is None and was.lease_expires is not None:
            columns.append("lease_owner")
            params.append(None)
        sql = self._sql.update(tuple(columns))
        params += [action_id, epoch]
        if not acquired and not released:
            if logged and entry is not None and not self._sqlite:
                sql = self._sql.logged(sql)
                params += [*_log_values(entry)[1:], now]
            with self._write_point("checkpoint"):
                if self._exec(sql, params).rowcount != 1:
                    raise LeaseLost(f"action {action_id}: claim epoch {epoch} was taken over")
            return
        with self._write_point("resources"), self._transaction():
            if self._exec(sql, params).rowcount != 1:
                raise LeaseLost(f"action {action_id}: claim epoch {epoch} was taken over")
            if acquired:
                self._acquire(action_id, acquired, now)
            for name in released:
                self._exec(self._sql.release_one, (name, action_id))
            if logged and entry is not None and not self._sqlite:
                self._log(action_id, entry, now)

    def record_failure(
        self,
        action_id: str,
        epoch: int,
        *,
        attempts: int,
        error: str,
        wake_at: float | None,
        broken: bool,
        now: float,
    ) -> None:
        """Record a failed step on the row, keeping its checkpoint, and let go of the lease.

        The fallback when a step's own write failed: the attempt, its error and its backoff
        (or the broken mark) still reach the row, so the action is neither due again at once
        nor silently retried. Raises `LeaseLost` if another driver holds the row now.
        """
        params = (attempts, error, wake_at, broken, now, action_id, epoch)
        with self._write_point("checkpoint"):
            if self._exec(self._sql.record_failure, params).rowcount != 1:
                raise LeaseLost(f"action {action_id}: claim epoch {epoch} was taken over")

    def finish(
        self,
        action_id: str,
        epoch: int,
        entry: LogEntry,
        now: float,
        *,
        status: str,
        state: str,
        error: str | None = None,
        cause: str | None = None,
    ) -> None:
        """Terminal: delete the row (its resources go with it, by cascade), keep its outcome
        (``status`` done, failed or stopped, the terminal ``state``, the ``error`` and the
        ``cause`` it carried) and log the end, in one transaction."""
        kept = (state, status, error, cause, now)
        logged = self.log_transitions
        if not self._sqlite:
            log = (*_log_values(entry)[1:], now) if logged else ()
            with self._write_point("finish"):
                cur = self._exec(self._sql.finish(logged), (action_id, epoch, *log, *kept))
                if cur.rowcount != 1:
                    raise LeaseLost(f"action {action_id}: claim epoch {epoch} was taken over")
            return
        with self._write_point("finish"), self._transaction():
            self._exec(self._sql.keep_outcome, (*kept, action_id, epoch))
            if self._exec(self._sql.delete_fenced, (action_id, epoch)).rowcount != 1:
                raise LeaseLost(f"action {action_id}: claim epoch {epoch} was taken over")
            if logged:
                self._log(action_id, entry, now)

    def claim_due(
        self, owner: str, now: float, limit: int, kinds: Mapping[str, int] | None = None
    ) -> list[Claimed]:
        """Take the leases of up to ``limit`` due actions (a worker's batch), oldest first.

        Due: not quarantined, ``wake_at`` passed, no live lease. ``kinds`` (name -> newest
        version the caller can read) restricts the batch to the rows the caller can drive:
        a worker must not claim (and quarantine) a kind it does not load, or a row written by
        a newer version of its kind; those wait for a worker that can. ``None``: every kind.
        On PostgreSQL the rows are picked ``FOR UPDATE SKIP LOCKED``, so concurrent workers
        never wait on each other; on SQLite the statement runs under the database's single
        write lock.
        """
        if kinds is not None and not kinds:
            return []
        sql, kind_params = self._sql.for_kinds(self._sql.claim_due, kinds)
        params = (owner, now + self.lease_ttl, now, now, *kind_params, limit)
        with self._write_point("claim"):
            rows = self._exec(sql, params).fetchall()
        return [Claimed(*row) for row in rows]

    def release_dead_leases(self) -> int:
        """Let go of the leases of certainly dead owners (see `_owner_is_dead`); returns how many.

        A worker's batch claim cannot ask whether a lease's owner is alive, so without this
        the actions of a driver that crashed would wait for their leases to expire. The
        release bumps the epoch: were the owner alive after all, its writes are refused.
        """
        owners = self._exec(self._sql.lease_owners).fetchall()
        released = 0
        for (owner,) in owners:
            if _owner_is_dead(owner):
                log.info("releasing the leases of dead driver %s", owner)
                released += self._exec(self._sql.release_owner, (owner,)).rowcount
        return released

    def renew(self, owner: str, until: float, ids: Iterable[str]) -> int:
        """Extend the leases ``owner`` holds on ``ids`` to ``until``; returns how many it holds.

        Only the actions being driven right now: a lease left behind by a drive that ended
        (its release failed) must expire, or no one drives that action again while its owner
        lives. One statement whatever the number of ids (a JSON array on SQLite, an array
        parameter on PostgreSQL).
        """
        wanted = list(ids)
        if not wanted:
            return 0
        id_list = orjson.dumps(wanted).decode() if self._sqlite else wanted
        return int(self._exec(self._sql.renew, (until, owner, id_list)).rowcount)

    def wake_workers(self) -> None:
        """Tell listening workers that something became due (PostgreSQL NOTIFY; no-op else)."""
        if not self._sqlite:
            self._exec("NOTIFY fsm_due")

    def unclaim(self, action_id: str, epoch: int) -> None:
        """Let go of the lease without touching the checkpoint (the epoch moves on)."""
        with self._write_point("unclaim"):
            self._exec(self._sql.unclaim, (action_id, epoch))

    def _acquire(self, action_id: str, names: Iterable[str], now: float) -> None:
        for name in names:
            cur = self._exec(self._sql.acquire, (name, action_id, now))
            if cur.rowcount == 1:
                continue
            row = self._exec(self._sql.holder_of, (name,)).fetchone()
            if row is not None and row[0] != action_id:
                raise ResourceConflict(name, row[0], action_id)

    def _log(self, action_id: str, e: LogEntry, now: float) -> None:
        self._exec(self._sql.log, (action_id, *_log_values(e), now))

    # -- reads used by steps --------------------------------------------------------------

    def holder_of(self, name: str) -> str | None:
        row = self._exec(self._sql.holder_of, (name,)).fetchone()
        return None if row is None else str(row[0])

    def resources_of(self, action_id: str) -> list[str]:
        rows = self._exec(self._sql.resources_of, (action_id,)).fetchall()
        return [str(r[0]) for r in rows]

    # -- cold paths -----------------------------------------------------------------------

    @_cold
    def quarantine(self, action_id: str, reason: str) -> None:
        """Set a row aside: never driven, never deleted, reported with ``reason``."""
        with self._write_point("quarantine"):
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

    @_cold
    def remove_quarantined(self, action_id: str) -> None:
        """Delete a quarantined row and its resources (manual clean-up only)."""
        with self.db.atomic():
            ActionRow.delete().where(
                ActionRow.id == action_id, ActionRow.quarantine.is_null(False)
            ).execute()
            ResourceRow.delete().where(ResourceRow.action == action_id).execute()

    @_cold
    def release_quarantine(self, action_id: str) -> bool:
        """Put a quarantined row back into service (after fixing the code or the row)."""
        n = ActionRow.update(quarantine=None).where(ActionRow.id == action_id).execute()
        return bool(n)

    @_cold
    def mark_due(self, action_id: str, now: float) -> bool:
        """Make the action due now, and mark it notified.

        The mark is what keeps a notify that arrives while a driver holds the action: that
        driver's park (which would set a later wake-up, or none) sees it and leaves the
        action due instead; every claim clears it, since a drive starts from the newest state.
        """
        with self._write_point("wake"):
            n = (
                ActionRow.update(wake_at=now, notified=True)
                .where(ActionRow.id == action_id)
                .execute()
            )
        self.wake_workers()
        return bool(n)

    def outcome(self, action_id: str) -> KeptOutcome | None:
        """The kept outcome of the latest ended incarnation of ``action_id``, if any."""
        row = self._exec(self._sql.outcome_of, (action_id,)).fetchone()
        return None if row is None else KeptOutcome(*row)

    @_cold
    def prune_outcomes(self, older_than: float) -> int:
        """Forget the outcomes of actions that ended before ``older_than`` (a unix time)."""
        return int(OutcomeRow.delete().where(OutcomeRow.finished_at < older_than).execute())

    @_cold
    def live_ids(self) -> list[str]:
        q = (
            ActionRow.select(ActionRow.id)
            .where(ActionRow.quarantine.is_null())
            .order_by(ActionRow.created_at, ActionRow.id)
        )
        return [r.id for r in q]

    @_cold
    def due_ids(self, now: float, limit: int = 1000) -> list[str]:
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

    def next_wake(self, kinds: Mapping[str, int] | None = None) -> float | None:
        """When the next action becomes claimable: its wake-up time, or its lease's expiry.

        ``kinds``: as in `claim_due`, so that a due row of a kind the caller does not drive
        does not wake it at once, again and again.
        """
        if kinds is not None and not kinds:
            return None
        sql, params = self._sql.for_kinds(self._sql.next_wake, kinds)
        value = self._exec(sql, params).fetchone()[0]
        return None if value is None else float(value)

    @_cold
    def quarantined(self) -> list[RowInfo]:
        q = ActionRow.select().where(ActionRow.quarantine.is_null(False)).order_by(ActionRow.id)
        return [_info(r) for r in q]

    @_cold
    def row(self, action_id: str) -> RowInfo | None:
        r = ActionRow.get_or_none(ActionRow.id == action_id)
        return None if r is None else _info(r)

    def payload_of(self, action_id: str) -> str:
        """The stored checkpoint payload of an action (inspection and invariant checks)."""
        row = self._exec(self._sql.payload_of, (action_id,)).fetchone()
        if row is None:
            raise KeyError(f"no action {action_id!r}")
        return str(row[0])

    @_cold
    def rows(self) -> list[RowInfo]:
        return [_info(r) for r in ActionRow.select().order_by(ActionRow.id)]

    @_cold
    def count_by_state(self, kind: str | None = None) -> dict[tuple[str, str], int]:
        q = ActionRow.select(ActionRow.kind, ActionRow.state, peewee.fn.COUNT(ActionRow.id))
        if kind is not None:
            q = q.where(ActionRow.kind == kind)
        q = q.group_by(ActionRow.kind, ActionRow.state).tuples()
        return {(str(k), str(s)): int(n) for k, s, n in q.iterator()}

    @_cold
    def transitions(self, action_id: str | None = None) -> list[TransitionRow]:
        q = TransitionRow.select().order_by(TransitionRow.id)
        if action_id is not None:
            q = q.where(TransitionRow.action_id == action_id)
        return list(q)

    @_cold
    def prune_log(self, older_than: float) -> int:
        """Delete transition-log rows written before ``older_than`` (a unix time)."""
        return int(TransitionRow.delete().where(TransitionRow.at < older_than).execute())

    def all_resources(self) -> dict[str, str]:
        return {str(name): str(holder) for name, holder in self._exec(self._sql.all_resources)}


def _readonly_uri(path: str | os.PathLike[str]) -> str:
    """A ``mode=ro`` SQLite URI for ``path``, which reads without ever writing the file.

    A WAL database needs its ``-shm`` file to be read; in a directory nobody can write (a
    read-only mount) SQLite cannot create it. When there is also no ``-wal`` file, nothing
    can be writing the database (a writer needs one), so the file is opened ``immutable``.
    """
    absolute = os.path.abspath(os.fspath(path))
    query = "mode=ro"
    folder = os.path.dirname(absolute)
    if not os.access(folder, os.W_OK) and not os.path.exists(absolute + "-wal"):
        query += "&immutable=1"
    return f"file:{urllib.parse.quote(absolute)}?{query}"


def _create_private(path: str | os.PathLike[str]) -> None:
    """Create a new database file owner-only (0600): SQLite gives its -wal and -shm files the
    main file's mode, so the actions and their payloads are never world-readable.

    An existing file is left as it is; any other failure is left for SQLite to report.
    """
    name = os.fspath(path)
    if name in ("", ":memory:") or name.startswith("file:"):
        return
    try:
        os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError:
        return


def _log_values(e: LogEntry) -> tuple[Any, ...]:
    """The log row's columns after ``action_id`` and before ``at``."""
    return (
        e.kind,
        e.seq,
        e.from_state,
        e.to_state,
        e.outcome,
        e.via,
        e.attempt,
        e.error,
        e.duration,
    )


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


_NEVER = float("inf")
"""``ended_since`` of a start that ignores kept outcomes (a deliberate new incarnation)."""

_CLOCK_CHECK_EVERY = 60.0
"""Seconds between two measurements of the database clock's offset (`Store.now`)."""

_KINDS = "/*kinds*/"
"""Where `_Statements.for_kinds` puts its kind filter in a statement (a no-op comment)."""

_LOG_COLUMNS = (
    "action_id, kind, seq, from_state, to_state, outcome, via, attempt, error, duration, at"
)

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


class _Statements:
    """The hot-path SQL, written once with the database's parameter marker."""

    def __init__(self, p: str) -> None:
        cols = (
            "kind, state, version, payload, seq, attempts, last_error, wake_at, epoch, "
            "lease_expires, incarnation, cause, broken"
        )
        self.insert = (
            "INSERT INTO fsm_action (id, kind, state, version, payload, seq, attempts, "
            "wake_at, epoch, created_at, updated_at, incarnation) "
            f"SELECT {p}, {p}, {p}, {p}, {p}, 0, 0, {p}, 0, {p}, {p}, {p} "
            f"WHERE NOT EXISTS (SELECT 1 FROM fsm_outcome WHERE id = {p} AND finished_at >= {p}) "
            "ON CONFLICT (id) DO NOTHING"
        )
        outcome_cols = "id, incarnation, kind, state, status, error, cause, started_at, finished_at"
        self.outcome_of = (
            f"SELECT {outcome_cols} FROM fsm_outcome WHERE id = {p} "
            "ORDER BY finished_at DESC LIMIT 1"
        )
        self.keep_outcome = (
            f"INSERT INTO fsm_outcome ({outcome_cols}) "
            f"SELECT id, incarnation, kind, {p}, {p}, {p}, {p}, created_at, {p} "
            f"FROM fsm_action WHERE id = {p} AND epoch = {p} "
            "ON CONFLICT (id, incarnation) DO NOTHING"
        )
        self._outcome_cols = outcome_cols
        self.record_failure = (
            f"UPDATE fsm_action SET attempts = {p}, last_error = {p}, "
            f"wake_at = CASE WHEN notified THEN 0 ELSE {p} END, broken = {p}, updated_at = {p}, "
            "lease_owner = NULL, lease_expires = NULL, epoch = epoch + 1 "
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
        self.server_clock = "SELECT EXTRACT(EPOCH FROM clock_timestamp())"
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
        self._p = p
        self._logged: dict[str, str] = {}
        self._finish: dict[bool, str] = {}
        self._updates: dict[tuple[str, ...], str] = {}
        self._for_kinds: dict[tuple[str, tuple[str, ...]], str] = {}
        self.log = (
            "INSERT INTO fsm_transition (action_id, kind, seq, from_state, to_state, outcome, "
            f"via, attempt, error, duration, at) VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, "
            f"{p}, {p}, {p}, {p})"
        )

    def update(self, columns: tuple[str, ...]) -> str:
        """The fenced UPDATE setting ``columns``, built once per column set.

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
            cached = self._updates[columns] = (
                f"UPDATE fsm_action SET {sets} WHERE id = {self._p} AND epoch = {self._p}"
            )
        return cached

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
                f"created_at){log} INSERT INTO fsm_outcome ({self._outcome_cols}) "
                f"SELECT gone.id, gone.incarnation, gone.kind, {p}, {p}, {p}, {p}, "
                f"gone.created_at, {p} FROM gone"
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
