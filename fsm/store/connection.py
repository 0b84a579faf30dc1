"""One database connection kept usable: statements, transactions, write points, errors.

A connection can break under us: PostgreSQL terminates a backend (a restart, a failover,
``pg_terminate_backend``), the network drops, a SQLite rollback fails. The call that meets
the failure raises, as it must: the store never repeats a statement on its own, because a
write whose COMMIT was sent may or may not have committed. The *next* call finds the broken
connection and opens a new one.

Why repeating is left to the caller, and why that is safe: the executor treats any failed
write as "let go of the action and claim it again later". Claiming bumps the fencing epoch
and re-reads the row, so whatever the lost write's fate, the next drive starts from what the
database holds: the write's state if it committed (nothing is redone), the state before it
if not (the step runs again under the same idempotency key). A write still carrying the old
epoch, from this process or any other, matches no row once the action has been claimed
again, and is refused with `LeaseLost`.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import peewee

from fsm.store.hooks import StoreHooks

log = logging.getLogger("fsm.store")

WRAP_ERRORS = peewee.__exception_wrapper__  # type: ignore[attr-defined]
"""peewee's translation of driver errors into its own types, the same on every database."""

# psycopg.pq.TransactionStatus values (psycopg is imported only when PostgreSQL is used)
_PG_IDLE = 0
_PG_INERROR = 3

_NO_POINT = contextlib.nullcontext()


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


def _is_broken(conn: Any) -> bool:
    """True when a driver connection can no longer run statements (psycopg marks it closed)."""
    return bool(getattr(conn, "closed", False))


def _pg_status(conn: Any) -> int:
    """A psycopg connection's transaction status (``_PG_IDLE``, ``_PG_INERROR``, ...)."""
    return int(conn.pgconn.transaction_status)


@contextmanager
def _armed_point(point: Any, name: str) -> Iterator[None]:
    point(f"{name}.before")
    yield
    point(f"{name}.after")


class Link:
    """The store's connection to its database, and the hooks run around what it sends.

    ``failed_calls`` counts the statements that raised so far (a worker asks whether a
    drive met a failure).
    """

    def __init__(self, db: peewee.Database, hooks: StoreHooks) -> None:
        self.db = db
        self._state = db._state  # type: ignore[attr-defined]  # peewee: this thread's connection
        self.sqlite = isinstance(db, peewee.SqliteDatabase)
        self._begin = "BEGIN IMMEDIATE" if self.sqlite else "BEGIN"
        self.hooks = hooks
        self.failed_calls = 0

    @property
    def hooks(self) -> StoreHooks:
        return self._hooks

    @hooks.setter
    def hooks(self, hooks: StoreHooks) -> None:
        self._hooks = hooks
        self._point = hooks.point
        self._statement = hooks.statement

    def exec(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement; the driver's own statement cache keeps it prepared."""
        try:
            if self._statement is not None and sql != "ROLLBACK":
                self._statement(self.sqlite)
            return self.connection().execute(sql, params)
        except Exception:
            self.failed_calls += 1
            with WRAP_ERRORS:  # the driver's error as peewee's type, entered only on failure
                raise

    def write_point(self, name: str) -> contextlib.AbstractContextManager[None]:
        """The named write point around a write: ``<name>.before`` and ``<name>.after``.

        Without a point hook this is a shared no-op context (the hot path pays nothing).
        """
        if self._point is None:
            return _NO_POINT
        return _armed_point(self._point, name)

    def connection(self) -> Any:
        """The driver connection, made usable first.

        A closed or broken connection is replaced. On PostgreSQL, an aborted transaction
        left on the connection (by any code sharing it) is rolled back: it can only refuse
        every statement until then ("current transaction is aborted").
        """
        if self.sqlite:  # a SQLite connection does not break under us
            state = self._state  # this thread's (peewee's ``Database.connection``, inlined)
            return self.db.connection() if state.closed else state.conn
        conn = self.db.connection()
        if _is_broken(conn):
            log.warning("the database connection was lost; reconnecting")
            self._discard()
            return self.db.connection()
        if not self.sqlite and _pg_status(conn) == _PG_INERROR:
            log.warning("rolling back an aborted transaction left on the connection")
            conn.rollback()
        return conn

    def _discard(self) -> None:
        """Drop the current connection (its transaction with it); the next call opens one."""
        conn = self._current()
        if conn is not None:
            with contextlib.suppress(Exception):  # closing a dead connection may fail: it is gone
                conn.close()
        self.db.dispose()

    def _current(self) -> Any:
        """The driver connection now open, or ``None``; never opens one."""
        return None if self.db.is_closed() else self.db.connection()

    def usable(self) -> bool:
        """True when a connection is open and not broken (it may be in a transaction)."""
        conn = self._current()
        return conn is not None and not _is_broken(conn)

    def idle(self) -> bool:
        """True when the connection is usable and has no transaction open."""
        conn = self._current()
        if conn is None or _is_broken(conn):
            return False
        if self.sqlite:
            return not conn.in_transaction
        return _pg_status(conn) == _PG_IDLE

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One explicit transaction; whatever fails inside it, none stays open afterwards.

        On any error the transaction is rolled back; if the rollback fails too, or the
        connection still reports a transaction (an aborted PostgreSQL transaction, a SQLite
        "database is locked" or disk I/O error at COMMIT), the connection is dropped, so
        the next call starts on a fresh one instead of failing for ever with "current
        transaction is aborted" or "cannot start a transaction within a transaction".
        """
        try:
            self.exec(self._begin)
            yield
            self.exec("COMMIT")
        except BaseException:
            self._abandon()
            raise

    @contextmanager
    def pipeline(self) -> Iterator[None]:
        """PostgreSQL: one transaction in one round trip (psycopg's pipeline mode).

        ``BEGIN``, the statements `exec` sends inside the block, and ``COMMIT`` go out
        together and are synced once, as the block ends: a cursor `exec` returned inside
        the block holds its result only after that. An error of any of them (raised as the
        block ends) rolls the transaction back as `transaction` does; see
        `fsm.store.pipeline.refused` for which statement it was.
        """
        conn = self.connection()
        try:
            with WRAP_ERRORS, conn.pipeline():
                self.exec("BEGIN")
                yield
                self.exec("COMMIT")
        except BaseException:
            self.failed_calls += 1
            self._abandon()
            raise

    def _abandon(self) -> None:
        """Roll back on the same connection (never a new one); drop it if that fails."""
        conn = self._current()
        if conn is not None and not _is_broken(conn):
            try:
                conn.execute("ROLLBACK")
            except Exception as exc:  # nothing to roll back, or the connection is gone
                log.debug("rollback failed: %s", exc)
        if not self.idle():
            log.warning("a failed transaction could not be rolled back; dropping the connection")
            self._discard()
