"""The store and the worker through database faults: killed backends, outages, lost files.

PostgreSQL faults are real: the tests terminate the backends of their own connections with
``pg_terminate_backend`` (never anyone else's), or point workers at a TCP proxy they stop.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import peewee
import psycopg
import pytest
import workerkinds
from conftest import PG_URL

import fsm
from fsm import DriveStatus
from fsm.errors import LeaseLost, ResourceConflict
from fsm.store import Bookkeeping

# -- helpers ------------------------------------------------------------------------------


def backend_pid(store: fsm.Store) -> int:
    """The PostgreSQL backend serving ``store``'s own connection."""
    return int(store.db.execute_sql("SELECT pg_backend_pid()").fetchone()[0])


def kill_backend(pid: int) -> None:
    """Terminate one backend (ours) and wait until it is gone."""
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        row = conn.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,)).fetchone()
    assert row is not None and row[0] is True


def start_job(store: fsm.Store, name: str = "job-0000") -> None:
    ex: fsm.Executor[Any] = fsm.Executor(store, None, kinds=[workerkinds.Job])
    asyncio.run(ex.start(workerkinds.Job(name)))


class KillingLedger(workerkinds.Ledger):
    """The worker tests' ledger, which kills the store's backend right after one effect."""

    def __init__(self, store: fsm.Store, kill_after: str) -> None:
        super().__init__(store)
        self.store = store
        self.kill_after = kill_after

    def apply(self, key: str) -> None:
        super().apply(key)
        if key == self.kill_after:
            self.kill_after = ""
            kill_backend(backend_pid(self.store))


# -- the store reconnects -----------------------------------------------------------------


def test_a_store_reconnects_on_the_call_after_its_backend_was_killed(pg_url: str) -> None:
    store = fsm.open_store(pg_url)
    start_job(store)
    first = backend_pid(store)
    kill_backend(first)
    with pytest.raises(peewee.OperationalError):  # the call that meets the failure raises
        store.next_wake()
    assert store.next_wake() is not None  # the next one runs on a new connection
    assert backend_pid(store) != first
    kill_backend(backend_pid(store))
    with pytest.raises(peewee.OperationalError):
        store.next_wake()
    assert [r.id for r in store.rows()] == ["job-0000"]  # cold paths reconnect too
    store.close()


def test_a_write_that_met_a_killed_backend_lets_go_and_the_action_ends_once(
    pg_url: str,
) -> None:
    """The failed write is not repeated: the drive lets go, the next drive re-reads the row."""
    store = fsm.open_store(pg_url)
    start_job(store)
    ledger = KillingLedger(store, kill_after="job-0000.0")
    ex: fsm.Executor[Any] = fsm.Executor(store, ledger, kinds=[workerkinds.Job])
    first = asyncio.run(ex.drive("job-0000"))
    assert first.status is DriveStatus.ERROR
    row = store.row("job-0000")
    assert row is not None and row.state == "step0"  # the checkpoint was not written...
    assert row.lease_owner is None  # ...and the lease was released on the new connection
    second = asyncio.run(ex.drive("job-0000"))
    assert second.status is DriveStatus.DONE
    # the step whose write was lost ran again under the same key; nothing else twice
    assert ledger.rows() == {"job-0000.0": 2, "job-0000.1": 1, "job-0000.2": 1}
    store.close()


def test_a_stale_write_after_a_reconnect_is_refused_by_the_epoch(pg_url: str) -> None:
    store = fsm.open_store(pg_url)
    other = fsm.open_store(pg_url)
    start_job(store)
    mine = store.claim("job-0000", "me", 0.0)
    assert not isinstance(mine, str)
    kill_backend(backend_pid(store))
    with pytest.raises(peewee.OperationalError):
        store.next_wake()
    taken = other.claim("job-0000", "other", 1e12)  # our lease has expired by then
    assert not isinstance(taken, str) and taken.epoch > mine.epoch
    with pytest.raises(LeaseLost):  # reconnected, but still fenced
        store.write(
            "job-0000",
            mine.epoch,
            state="step1",
            payload=mine.payload,
            seq=mine.seq + 1,
            was=mine.bookkeeping,
            new=Bookkeeping(mine.version, 0, None, None, None),
            acquired=(),
            released=(),
            entry=None,
            now=2.0,
        )
    assert other.payload_of("job-0000") == taken.payload
    store.close()
    other.close()


def test_an_aborted_transaction_left_on_the_connection_does_not_stick(pg_url: str) -> None:
    store = fsm.open_store(pg_url)
    conn = store.db.connection()  # any code sharing the store's connection
    conn.execute("BEGIN")
    with pytest.raises(psycopg.errors.DivisionByZero):
        conn.execute("SELECT 1 / 0")
    start_job(store)  # an explicit transaction
    assert store.next_wake() is not None  # and a single statement
    conn = store.db.connection()
    conn.execute("BEGIN")
    with pytest.raises(psycopg.errors.DivisionByZero):
        conn.execute("SELECT 1 / 0")
    assert store.next_wake() is not None
    store.close()


def test_a_failed_sqlite_rollback_does_not_leave_the_transaction_open(db_path: Path) -> None:
    """A rollback refused by SQLite (here by an authorizer, as a disk I/O error would)."""
    store = fsm.Store.sqlite(db_path)
    other = fsm.Store.sqlite(db_path, busy_timeout=0.1)
    assert store.insert("a", "k", "s", 1, "{}", ["r"], 1.0) is None

    def refuse_rollback(action: int, arg1: str | None, *_: Any) -> int:
        if action == sqlite3.SQLITE_TRANSACTION and arg1 == "ROLLBACK":
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK

    store.db.connection().set_authorizer(refuse_rollback)
    with pytest.raises(ResourceConflict):  # fails inside the transaction, rollback refused
        store.insert("b", "k", "s", 1, "{}", ["r"], 1.0)
    assert other.insert("c", "k", "s", 1, "{}", [], 1.0) is None  # the write lock is free
    assert store.insert("d", "k", "s", 1, "{}", [], 1.0) is None  # no transaction left open
    assert sorted(store.live_ids()) == ["a", "c", "d"]
    store.close()
    other.close()


def test_a_sqlite_transaction_left_open_fails_one_call_only(db_path: Path) -> None:
    store = fsm.Store.sqlite(db_path)
    store.db.connection().execute("BEGIN IMMEDIATE")  # left behind by some failure
    with pytest.raises(peewee.OperationalError, match="within a transaction"):
        store.insert("a", "k", "s", 1, "{}", [], 1.0)
    assert store.insert("a", "k", "s", 1, "{}", [], 1.0) is None
    other = fsm.Store.sqlite(db_path, busy_timeout=0.1)
    assert other.live_ids() == ["a"]
    store.close()
    other.close()
