"""Flat as the table grows: the polls read indexes, and their work does not grow with the table.

The work a statement does is counted, not timed: SQLite's virtual-machine instructions (a
progress handler called on each), PostgreSQL's rows read by the plan's scans (EXPLAIN
ANALYZE). A statement that regresses to a full scan does ten times the work at ten times
the rows, and fails here.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import fsm
from fsm.executor.executor import RESUME_PAGE
from fsm.store import SCHEMA_VERSION, polls
from fsm.testing import bulk

SMALL, LARGE = 1_000, 10_000


def sqlite_steps(store: fsm.Store, statement: str, params: Sequence[Any]) -> int:
    """How many virtual-machine instructions SQLite runs for ``statement`` (rolled back)."""
    conn: sqlite3.Connection = store.db.connection()
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    with store.db.atomic() as tx:
        conn.set_progress_handler(count, 1)
        try:
            conn.execute(statement, params).fetchall()
        finally:
            conn.set_progress_handler(None, 1)
        tx.rollback()
    return steps


def pg_rows_read(store: fsm.Store, statement: str, params: Sequence[Any]) -> int:
    """Rows PostgreSQL's scans return or filter out for ``statement`` (rolled back)."""

    def walk(node: dict[str, Any]) -> int:
        own = 0
        if "Scan" in node["Node Type"]:
            loops = node.get("Actual Loops", 1)
            own = (node["Actual Rows"] + node.get("Rows Removed by Filter", 0)) * loops
        return own + sum(walk(child) for child in node.get("Plans", ()))

    with store.db.atomic() as tx:
        [[plan]] = store.db.execute_sql(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + statement, params
        ).fetchall()
        tx.rollback()
    return walk(plan[0]["Plan"])


def poll_statements(store: fsm.Store) -> dict[str, tuple[str, tuple[Any, ...]]]:
    """Every statement an idle or busy worker polls with, and its parameters."""
    sql = store._sql
    now = bulk.NOW
    with_kinds, kind_params = sql.for_kinds(polls.NEXT_WAKE, {bulk.KIND: 1})
    claim, claim_kinds = sql.for_kinds(sql.claim_due, {bulk.KIND: 1})
    ids = ["a000000000", "a000000002"]
    id_list: Any = str(ids).replace("'", '"') if store.is_sqlite else ids
    return {
        "next_wake": sql.for_kinds(polls.NEXT_WAKE, None),
        "next_wake of kinds": (with_kinds, kind_params * 2),
        "claim_due": (claim, ("me", now + 60, now, now, *claim_kinds, 16)),
        "lease_owners": (sql.lease_owners, ()),
        "release_owner": (sql.release_owner, ("elsewhere:1:dead:0",)),
        "renew": (sql.renew, (now + 60, "elsewhere:1:dead:0", id_list)),
    }


def work_of(store: fsm.Store) -> dict[str, int]:
    measure = sqlite_steps if store.is_sqlite else pg_rows_read
    return {name: measure(store, *call) for name, call in poll_statements(store).items()}


def test_polls_do_not_grow_with_the_table(store_url: str) -> None:
    bulk.fill(store_url, SMALL)
    store = fsm.open_store(store_url)
    try:
        if not store.is_sqlite:
            store.db.execute_sql("ANALYZE fsm_action")
        small = work_of(store)
        bulk.fill(store_url, LARGE - SMALL, start=SMALL)
        if not store.is_sqlite:
            store.db.execute_sql("ANALYZE fsm_action")
        large = work_of(store)
    finally:
        store.close()
    grown = {
        name: (small[name], large[name]) for name in small if large[name] > 2 * small[name] + 50
    }
    assert not grown, f"work at {SMALL} -> {LARGE} rows grew: {grown}"


def test_the_old_next_wake_would_fail_the_check(db_path: Path) -> None:
    """The counter sees a full scan: v2's next_wake read every row."""
    url = str(db_path)
    old = (
        "SELECT MIN(CASE WHEN lease_owner IS NULL OR lease_expires < wake_at "
        "THEN wake_at ELSE lease_expires END) FROM fsm_action "
        "WHERE quarantine IS NULL AND wake_at IS NOT NULL"
    )
    bulk.fill(url, SMALL)
    store = fsm.open_store(url)
    small = sqlite_steps(store, old, ())
    bulk.fill(url, LARGE - SMALL, start=SMALL)
    large = sqlite_steps(store, old, ())
    store.close()
    assert large > 5 * small


def test_next_wake_answers_as_before(store_url: str) -> None:
    """The soonest of the free rows' wake-ups and the leased rows' expiries (or wake-ups)."""
    store = fsm.open_store(store_url)
    try:
        assert store.next_wake() is None
        for action_id, wake in (("free", 500.0), ("held", 5.0), ("held-late", 1e6)):
            store.insert(action_id, "k", "s", 1, "{}", (), 1.0)
            store.db.execute_sql(
                f"UPDATE fsm_action SET wake_at = {store.db.param} WHERE id = {store.db.param}",
                (wake, action_id),
            )
        store.claim("held", "owner", 10.0)  # lease until 10 + ttl, after its wake-up
        store.claim("held-late", "owner", 10.0)  # wakes after its lease expires
        assert store.lease_ttl < 400
        assert store.next_wake() == 10.0 + store.lease_ttl
        assert store.next_wake({"other": 1}) is None
        assert store.next_wake({}) is None
        store.quarantine("held", "set aside")
        store.quarantine("held-late", "set aside")
        assert store.next_wake() == 500.0
    finally:
        store.close()


def test_a_v2_database_is_upgraded_to_v3_and_keeps_its_rows(store_url: str) -> None:
    bulk.fill(store_url, 100)
    store = fsm.open_store(store_url)
    for statement in (
        "DROP INDEX fsm_action_wake",
        "DROP INDEX fsm_action_lease",
        "CREATE INDEX fsm_action_wake_at ON fsm_action (wake_at)",  # v2's index
        "UPDATE fsm_meta SET value = '2' WHERE key = 'schema_version'",
    ):
        store.db.execute_sql(statement)
    before = store.rows()
    store.close()

    store = fsm.open_store(store_url)
    try:
        assert store.schema_version == SCHEMA_VERSION == 3
        assert store.rows() == before
        indexes = (
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'fsm_action' "
            "AND sql IS NOT NULL"
            if store.is_sqlite
            else "SELECT indexname FROM pg_indexes WHERE tablename = 'fsm_action' "
            "AND schemaname = current_schema() AND indexname <> 'fsm_action_pkey'"
        )
        found = {name for (name,) in store.db.execute_sql(indexes).fetchall()}
    finally:
        store.close()
    assert found == {"fsm_action_wake", "fsm_action_lease"}


@pytest.mark.parametrize("rows", [0, 3])
def test_fill_makes_well_formed_rows(store_url: str, rows: int) -> None:
    bulk.fill(store_url, rows)
    store = fsm.open_store(store_url)
    try:
        assert [r.id for r in store.rows()] == [f"a{i:09d}" for i in range(rows)]
        assert all(
            store.payload_of(r.id) == f'{{"key":"{r.id}","n":{i}}}'
            for i, r in enumerate(store.rows())
        )
    finally:
        store.close()


def test_resume_all_pages_through_every_live_row(store_url: str) -> None:
    """Every live row is driven once, in id order, never more than ``concurrency`` at once;
    quarantined rows are reported, a bad row is set aside, a live lease is left alone."""
    rows = RESUME_PAGE * 2 + 100
    bulk.fill(store_url, rows)
    store = fsm.open_store(store_url)
    store.db.execute_sql(
        f"UPDATE fsm_action SET payload = 'not json' WHERE id = {store.db.param}",
        ("a000000004",),
    )
    executor = fsm.Executor(store, kinds=[bulk.ScaleAction])
    inner, running, most = executor.drive, 0, 0

    async def counted(action_id: str, mode: fsm.DriveMode) -> fsm.DriveResult:
        nonlocal running, most
        running += 1
        most = max(most, running)
        try:
            await asyncio.sleep(0)  # let the others start, as a drive waiting on I/O does
            return await inner(action_id, mode)
        finally:
            running -= 1

    executor.drive = counted  # type: ignore[method-assign,assignment]
    try:
        report = asyncio.run(executor.resume_all(concurrency=4, keep_results=True))
    finally:
        store.close()
    set_aside = {f"a{i:09d}" for i in range(rows) if i % 1000 == 7}
    assert [r.id for r in report.results] == [
        f"a{i:09d}" for i in range(rows) if f"a{i:09d}" not in set_aside
    ]
    assert most == 4
    statuses = {r.id: r.status for r in report.results}
    for busy in {f"a{i:09d}" for i in range(1, 32, 2)} - set_aside:  # another host's lease
        assert statuses.pop(busy) is fsm.DriveStatus.BUSY
    assert statuses.pop("a000000004") is fsm.DriveStatus.QUARANTINED
    assert set(statuses.values()) == {fsm.DriveStatus.PARKED}
    assert {r.id for r in report.quarantined} == set_aside | {"a000000004"}


def test_a_cancelled_resume_cancels_its_drives_and_lets_go(db_path: Path) -> None:
    """Cancelling resume_all cancels the drives it runs; their leases are let go at once."""
    url = str(db_path)
    bulk.fill(url, 20)
    store = fsm.open_store(url)
    executor = fsm.Executor(store, kinds=[bulk.ScaleAction])
    started: list[str] = []
    forever = asyncio.Event()

    async def stuck(action_id: str, mode: fsm.DriveMode) -> fsm.DriveResult:
        claimed = store.claim(action_id, executor.owner, store.now())
        assert isinstance(claimed, fsm.store.Claimed)
        started.append(action_id)
        try:
            await forever.wait()
        finally:
            store.unclaim(action_id, claimed.epoch)
        raise AssertionError("never set")

    executor.drive = stuck  # type: ignore[method-assign,assignment]

    async def scenario() -> None:
        resume = asyncio.create_task(executor.resume_all(concurrency=3))
        while len(started) < 3:
            await asyncio.sleep(0)
        resume.cancel()
        with pytest.raises(asyncio.CancelledError):
            await resume
        assert len(started) == 3  # no drive beyond the concurrency was started
        assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []

    try:
        asyncio.run(scenario())
        assert all(r.lease_owner is None for r in store.rows() if r.id in started)
    finally:
        store.close()
