"""The store and the worker through database faults: killed backends, outages, lost files.

PostgreSQL faults are real: the tests terminate the backends of their own connections with
``pg_terminate_backend`` (never anyone else's), or point workers at a TCP proxy they stop.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import peewee
import psycopg
import pytest
from actions import Ledger, Transfer, start_transfers
from needs import PG_URL
from tcpproxy import TcpProxy
from worker_processes import check_ledger, finish_and_stop, held_by, spawn_worker, wait_for

import fsm
from fsm import DriveStatus
from fsm.errors import LeaseLost, ResourceConflict
from fsm.store import Bookkeeping

# -- helpers ------------------------------------------------------------------------------


def backend_pid(store: fsm.Store) -> int:
    """The PostgreSQL backend serving ``store``'s own connection."""
    return int(store.db.execute_sql("SELECT pg_backend_pid()").fetchone()[0])


def writer_pid(store: fsm.Store) -> int:
    """The PostgreSQL backend of ``store``'s committer, whose connection writes the steps."""
    return store.committer.call(None, lambda _: backend_pid(store), solo=True)


def kill_backend(pid: int) -> None:
    """Terminate one backend (ours) and wait until it is gone."""
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        row = conn.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,)).fetchone()
    assert row is not None and row[0] is True


class KillingLedger(Ledger):
    """The ledger in the store's database, which kills the backend writing the store's steps
    (its committer's) right after its first effect."""

    store: fsm.Store
    first: str | None = None

    async def apply(self, key: str, action_id: str, what: str) -> None:
        await super().apply(key, action_id, what)
        if self.first is None:
            self.first = key
            kill_backend(writer_pid(self.store))


# -- the store reconnects -----------------------------------------------------------------


def test_a_store_reconnects_on_the_call_after_its_backend_was_killed(pg_url: str) -> None:
    store = fsm.open_store(pg_url)
    start_transfers(store, 1)
    first = backend_pid(store)
    kill_backend(first)
    with pytest.raises(peewee.OperationalError):  # the call that meets the failure raises
        store.next_wake()
    assert store.next_wake() is not None  # the next one runs on a new connection
    assert backend_pid(store) != first
    kill_backend(backend_pid(store))
    with pytest.raises(peewee.OperationalError):
        store.next_wake()
    assert [r.id for r in store.rows()] == ["t0000"]  # cold paths reconnect too
    store.close()


def test_a_write_that_met_a_killed_backend_lets_go_and_the_action_ends_once(
    pg_url: str,
) -> None:
    """The failed write is not repeated: the drive lets go, the next drive re-reads the row."""
    store = fsm.open_store(pg_url)
    start_transfers(store, 1)
    ledger = KillingLedger.in_store(store)
    ledger.store = store
    ex: fsm.Executor[Any] = fsm.Executor(store, ledger, kinds=[Transfer])
    first = asyncio.run(ex.drive("t0000"))
    assert first.status is DriveStatus.ERROR
    row = store.row("t0000")
    assert row is not None and row.state == "debit"  # the checkpoint was not written...
    assert row.lease_owner is None  # ...and the lease was released on the new connection
    second = asyncio.run(ex.drive("t0000"))
    assert second.status is DriveStatus.DONE
    # the step whose write was lost ran again under the same key; nothing else twice
    calls = ledger.effects()
    assert len(calls) == 3 and calls.pop(str(ledger.first)) == 2
    assert set(calls.values()) == {1}
    store.close()


def test_a_stale_write_after_a_reconnect_is_refused_by_the_epoch(pg_url: str) -> None:
    store = fsm.open_store(pg_url)
    other = fsm.open_store(pg_url)
    start_transfers(store, 1)
    mine = store.claim("t0000", "me", 0.0)
    assert not isinstance(mine, str)
    kill_backend(backend_pid(store))
    with pytest.raises(peewee.OperationalError):
        store.next_wake()
    taken = other.claim("t0000", "other", 1e12)  # our lease has expired by then
    assert not isinstance(taken, str) and taken.epoch > mine.epoch
    with pytest.raises(LeaseLost):  # reconnected, but still fenced
        store.write(
            "t0000",
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
    assert other.payload_of("t0000") == taken.payload
    store.close()
    other.close()


def test_an_aborted_transaction_left_on_the_connection_does_not_stick(pg_url: str) -> None:
    store = fsm.open_store(pg_url)
    conn = store.db.connection()  # any code sharing the store's connection
    conn.execute("BEGIN")
    with pytest.raises(psycopg.errors.DivisionByZero):
        conn.execute("SELECT 1 / 0")
    start_transfers(store, 1)  # an explicit transaction
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


# -- the worker rides out outages ---------------------------------------------------------


def worker_backends(app: str) -> set[int]:
    """The backends of the worker process started with ``PGAPPNAME=app`` (and only its)."""
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (app,)
        ).fetchall()
    return {int(r[0]) for r in rows}


def proxied(url: str, proxy: TcpProxy) -> str:
    return url.replace("@127.0.0.1:5432/", f"@127.0.0.1:{proxy.port}/")


def failures_logged(log: Path) -> int:
    return log.read_text().count("database unavailable (failure")


@pytest.mark.slow
def test_a_worker_rides_out_killed_backends(pg_url: str, tmp_path: Path) -> None:
    n = 300
    store = fsm.open_store(pg_url)
    start_transfers(store, n)
    app = f"fsm-test-{uuid.uuid4().hex[:8]}"
    env = {"FSM_TEST_STEP_SECONDS": "0.05", "PGAPPNAME": app}
    log = tmp_path / "w.log"
    worker = spawn_worker(pg_url, "--concurrency", "4", log=log, env=env)
    killed: set[int] = set()
    for _ in range(5):
        wait_for(lambda: bool(worker_backends(app) - killed), "the worker's connections")
        left = len(store.live_ids())
        for pid in worker_backends(app) - killed:
            kill_backend(pid)
            killed.add(pid)
        wait_for(
            lambda: worker.poll() is not None or len(store.live_ids()) < left,  # noqa: B023
            "progress after the kill",
        )
        assert worker.poll() is None, log.read_text()[-3000:]
    finish_and_stop([worker], store)
    assert worker.returncode == 0, log.read_text()[-3000:]
    check_ledger(store, n)
    assert "reconnecting" in log.read_text()
    store.close()


@pytest.mark.slow
def test_a_worker_waits_out_an_unreachable_server(pg_url: str, tmp_path: Path) -> None:
    """Drives in flight fail and let go; the worker backs off, then finishes everything."""
    n = 100
    proxy = TcpProxy("127.0.0.1", 5432)
    proxy.start()
    store = fsm.open_store(pg_url)  # the test's own connection does not go through the proxy
    start_transfers(store, n)
    env = {"FSM_TEST_STEP_SECONDS": "0.05"}
    log = tmp_path / "w.log"
    worker = spawn_worker(proxied(pg_url, proxy), "--concurrency", "4", log=log, env=env)
    wait_for(lambda: bool(held_by(store, worker.pid)), "the worker to claim actions")
    proxy.stop()
    wait_for(lambda: worker.poll() is not None or failures_logged(log) >= 5, "5 failures")
    assert worker.poll() is None, log.read_text()[-3000:]
    proxy.start()
    finish_and_stop([worker], store)  # leases held when the server went away are released
    assert worker.returncode == 0, log.read_text()[-3000:]
    check_ledger(store, n)
    assert "database back after" in log.read_text()
    proxy.close()
    store.close()


@pytest.mark.slow
def test_a_worker_gives_up_after_max_outage(pg_url: str, tmp_path: Path) -> None:
    proxy = TcpProxy("127.0.0.1", 5432)
    proxy.start()
    log = tmp_path / "w.log"
    worker = spawn_worker(proxied(pg_url, proxy), "--max-outage", "2", log=log)
    wait_for(lambda: "started" in log.read_text(), "the worker to start")
    proxy.stop()
    assert worker.wait(timeout=120) == 1
    text = log.read_text()
    assert text.count("giving up") == 1, text
    lines = text.strip().splitlines()
    assert "giving up" in lines[-1]
    assert all(line[:2] == "20" for line in lines), text  # a timestamp: one record per line
    # backoff, not a hot loop: the waits double from 0.1 s (jitter halves them at most)
    assert 2 <= failures_logged(log) <= 8, text
    proxy.close()


@pytest.mark.slow
def test_sigterm_during_an_outage_stops_the_worker_cleanly(pg_url: str, tmp_path: Path) -> None:
    """The backoff wait ends on SIGTERM; the leases held run out, as after any crash."""
    proxy = TcpProxy("127.0.0.1", 5432)
    proxy.start()
    log = tmp_path / "w.log"
    worker = spawn_worker(proxied(pg_url, proxy), "--max-outage", "inf", log=log)
    wait_for(lambda: "started" in log.read_text(), "the worker to start")
    proxy.stop()
    wait_for(lambda: worker.poll() is not None or failures_logged(log) >= 3, "3 failures")
    assert worker.poll() is None, log.read_text()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0, log.read_text()
    assert "stopped" in log.read_text().strip().splitlines()[-1]
    proxy.close()


@pytest.mark.slow
def test_a_worker_survives_injected_database_faults(db_path: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{db_path}"
    store = fsm.open_store(url)
    start_transfers(store, 100)
    env = {"FSM_DB_FAULTS": "0.05:7", "FSM_DB_FAULTS_TRACE": str(tmp_path / "f")}
    log = tmp_path / "w.log"
    worker = spawn_worker(url, "--concurrency", "4", log=log, env=env)
    # Every injected fault costs a backoff (a failed batch, all its drives): on a loaded
    # machine this run takes minutes; the bound only catches a hung worker.
    finish_and_stop([worker], store, timeout=600)
    assert worker.returncode == 0, log.read_text()[-3000:]
    check_ledger(store, 100)
    assert (tmp_path / "f").read_text().count("\n") > 10  # faults were injected
    assert failures_logged(log) >= 1  # some hit the worker's own loop
    store.close()


@pytest.mark.slow
@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_worker_stops_when_its_sqlite_file_is_lost(
    how: str, db_path: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{db_path}"
    fsm.open_store(url).close()
    log = tmp_path / "w.log"
    worker = spawn_worker(url, log=log)
    wait_for(lambda: "started" in log.read_text(), "the worker to start")
    if how == "deleted":
        db_path.unlink()
    else:
        copy = tmp_path / "copy.sqlite"
        shutil.copyfile(db_path, copy)
        os.replace(copy, db_path)
    assert worker.wait(timeout=120) == 1
    lines = [line for line in log.read_text().splitlines() if str(db_path) in line]
    assert len(lines) == 1 and f"was {how}" in lines[0], log.read_text()
