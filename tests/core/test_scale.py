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
from fsm.store import SCHEMA_VERSION, census, polls
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
    """Every statement an idle or busy worker polls with, and its parameters (and the
    oldest-due gauge's, read at every metrics scrape)."""
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
        "oldest_due (a gauge)": (census.OLDEST_DUE.format(p=store.db.param), (now, now, now)),
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


def test_a_v2_database_is_upgraded_and_keeps_its_rows(store_url: str) -> None:
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
        assert store.schema_version == SCHEMA_VERSION
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
    assert found == {"fsm_action_wake", "fsm_action_lease", "fsm_action_parent", *V5_ACTION_INDEXES}


V5_ACTION_INDEXES = ("fsm_action_started", "fsm_action_trouble")
V5_OTHER_INDEXES = ("fsm_outcome_ended", "fsm_outcome_trouble", "fsm_transition_action")

V4_END_TRIGGER = """
CREATE TRIGGER fsm_action_end AFTER UPDATE OF ending ON fsm_action WHEN NEW.ending IS NOT NULL
BEGIN
    INSERT INTO fsm_outcome (id, incarnation, kind, state, status, error, cause, started_at,
                             finished_at)
    VALUES (NEW.id, NEW.incarnation, NEW.kind, NEW.state, NEW.ending,
            CASE WHEN NEW.ending = 'done' THEN NULL ELSE NEW.last_error END, NEW.cause,
            NEW.created_at, NEW.updated_at)
    ON CONFLICT (id, incarnation) DO NOTHING;
    INSERT INTO fsm_transition (action_id, kind, seq, from_state, to_state, outcome, via,
                                attempt, error, duration, at)
    SELECT NEW.id, NEW.kind, OLD.seq, OLD.state, NULL, NEW.step_outcome, NEW.step_via,
           NEW.attempts, NEW.last_error, NEW.step_duration, NEW.updated_at
    WHERE NEW.step_outcome IS NOT NULL;
    DELETE FROM fsm_action WHERE id = NEW.id;
END
"""
"""Schema v4's end trigger, as v4 created it (it keeps no counts)."""


def make_v5(store: fsm.Store) -> None:
    """Turn a v6 database into what v5 left: no inbox, no parents, no child trigger."""
    if store.is_sqlite:
        store.db.execute_sql("DROP TRIGGER fsm_child_end")
    else:
        store.db.execute_sql("DROP TRIGGER fsm_child_end ON fsm_action")
        store.db.execute_sql("DROP FUNCTION fsm_child_end()")
    store.db.execute_sql("DROP INDEX fsm_action_parent")
    store.db.execute_sql("DROP TABLE fsm_event")
    for column in ("inbox", "parent", "parent_incarnation"):
        store.db.execute_sql(f"ALTER TABLE fsm_action DROP COLUMN {column}")
    store.db.execute_sql("UPDATE fsm_meta SET value = '5' WHERE key = 'schema_version'")


def test_a_v5_database_is_upgraded_to_hold_events_and_children(store_url: str) -> None:
    """v5 -> v6: live rows get an empty inbox and no parent, and events and children work
    on them at once."""
    store = fsm.open_store(store_url)
    store.insert("old", "k", "s0", 1, "{}", (), bulk.NOW)
    before = store.rows()
    make_v5(store)
    store.close()

    store = fsm.open_store(store_url)
    try:
        assert store.schema_version == SCHEMA_VERSION == 6
        assert store.rows() == before
        claimed = store.claim("old", "me", bulk.NOW)
        assert isinstance(claimed, fsm.store.Claimed) and claimed.inbox == 0
        sent = store.send_event_now("old", "E", "{}", "k1", bulk.NOW, lambda k, s: ("accept", None))
        assert sent == ("sent", None)
        assert [e.key for e in store.pending_events("old")] == ["k1"]
    finally:
        store.close()


def make_v4(store: fsm.Store) -> None:
    """Turn a v5 database into what v4 left: no counts, no listing indexes, v4's trigger."""
    make_v5(store)
    for index in (*V5_ACTION_INDEXES, *V5_OTHER_INDEXES):
        store.db.execute_sql(f"DROP INDEX {index}")
    if store.is_sqlite:
        store.db.execute_sql("DROP TRIGGER fsm_action_end")
    for table in ("fsm_action", "fsm_outcome"):
        for column in ("steps", "retries"):
            store.db.execute_sql(f"ALTER TABLE {table} DROP COLUMN {column}")
    if store.is_sqlite:
        store.db.execute_sql(V4_END_TRIGGER)
    store.db.execute_sql("UPDATE fsm_meta SET value = '4' WHERE key = 'schema_version'")


def test_a_v4_database_is_upgraded_to_count_steps_and_list(store_url: str) -> None:
    """v4 -> v5: the counts start at 0 on what was there, the end keeps them from then on,
    and the listing's indexes exist; a read-only open of the v4 file says how to upgrade."""
    bulk.fill(store_url, 100)
    store = fsm.open_store(store_url)
    store.insert("old", "k", "s0", 1, "{}", (), bulk.NOW)
    claimed = store.claim("old", "me", bulk.NOW)
    assert isinstance(claimed, fsm.store.Claimed)
    end = fsm.LogEntry("k", 0, "s0", None, "done", "step", 0, None, 0.0)
    store.finish("old", claimed.epoch, end, bulk.NOW + 1, status="done", state="s0")
    store.insert("again", "k", "s0", 1, "{}", (), bulk.NOW)
    before = store.rows()
    make_v4(store)
    store.close()

    reader = fsm.open_store(store_url, readonly=True)
    try:
        with pytest.raises(fsm.SchemaError, match="v4 is older than this fsm"):
            reader.list_actions()
    finally:
        reader.close()

    store = fsm.open_store(store_url)
    try:
        assert store.schema_version == SCHEMA_VERSION
        assert store.rows() == before
        kept = store.outcome("old")
        assert kept is not None and (kept.status, kept.steps, kept.retries) == ("done", 0, 0)
        claimed = store.claim("again", "me", bulk.NOW)
        assert isinstance(claimed, fsm.store.Claimed)
        store.finish("again", claimed.epoch, end, bulk.NOW + 2, status="done", state="s0")
        kept = store.outcome("again")
        assert kept is not None and (kept.steps, kept.retries) == (1, 0)
        page = store.list_actions(fsm.ActionFilter(statuses=("done",)))
        assert [a.id for a in page] == ["again", "old"]
    finally:
        store.close()


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


PAGING_LIVE, PAGING_ENDED = 60_000, 40_000
"""100,000 rows for the paging test: live actions and kept outcomes."""


def test_paging_through_100000_rows_lists_each_once_in_order(store_url: str) -> None:
    """Every row once, newest first, each page after the last; filters keep what they say
    (correctness at scale, not time: `benchmarks/scale.py` times the pages)."""
    bulk.fill(store_url, PAGING_LIVE)
    bulk.fill_ended(store_url, PAGING_ENDED)
    store = fsm.open_store(store_url)
    try:
        seen = [a for page in store.walk_actions(page=997) for a in page]
        keys = [(a.at, a.id, a.incarnation) for a in seen]
        assert len(seen) == PAGING_LIVE + PAGING_ENDED == len(set(keys))
        assert keys == sorted(keys, reverse=True)
        assert {a.id for a in seen} == {f"a{i:09d}" for i in range(PAGING_LIVE)} | {
            f"e{i:09d}" for i in range(PAGING_ENDED)
        }

        def walk(**where: Any) -> list[fsm.ActionSummary]:
            flt = fsm.ActionFilter(**where)
            return [a for page in store.walk_actions(flt, page=1000) for a in page]

        failed = walk(statuses=("failed",))
        assert [a.id for a in failed] == [
            f"e{i:09d}" for i in reversed(range(PAGING_ENDED)) if i % 10 == 4
        ]
        assert all(
            a.retries == 1 and a.error == f"remote said no ({a.id[1:].lstrip('0')})" for a in failed
        )
        quarantined = walk(statuses=("quarantined",))
        assert [a.id for a in quarantined] == [
            f"a{i:09d}" for i in reversed(range(PAGING_LIVE)) if i % 1000 == 7
        ]
        since = bulk.NOW - 100_000 + PAGING_ENDED - 2_500  # the last 2,500 ends
        recent = walk(statuses=("ended",), since=since)
        assert len(recent) == 2_500 and all((a.ended_at or 0) >= since for a in recent)
        said = walk(error="SAID NO (3999")
        assert [a.id for a in said] == ["e000039994"]
    finally:
        store.close()


LISTINGS = {
    "every action": fsm.ActionFilter(),
    "failed": fsm.ActionFilter(statuses=("failed",)),
    "broken or quarantined": fsm.ActionFilter(statuses=("broken", "quarantined")),
    "ended since": fsm.ActionFilter(statuses=("ended",), since=bulk.NOW - 100_000 + 500),
}
"""Listings whose first page must cost the same at any table size. (A search of error texts
reads the rows in trouble, by a partial index: it grows with the trouble, not the table.)"""


def listing_statements(store: fsm.Store) -> dict[str, tuple[str, tuple[Any, ...]]]:
    """Each statement the first page of each of `LISTINGS` runs (caught on their way)."""
    caught: dict[str, tuple[str, tuple[Any, ...]]] = {}
    run = store._link.exec
    for name, where in LISTINGS.items():

        def catch(sql: str, params: Sequence[Any] = (), name: str = name) -> Any:
            if sql.startswith("SELECT"):
                caught[f"{name} #{len([k for k in caught if k.startswith(name)])}"] = (
                    sql,
                    tuple(params),
                )
            return run(sql, params)

        store._link.exec = catch  # type: ignore[method-assign]
        try:
            store.list_actions(where, limit=1, now=bulk.NOW)  # one row: the seek alone
        finally:
            store._link.exec = run  # type: ignore[method-assign]
    return caught


def test_a_listings_first_page_does_not_grow_with_the_tables(store_url: str) -> None:
    def work() -> dict[str, int]:
        store = fsm.open_store(store_url)
        try:
            if not store.is_sqlite:
                for table in ("fsm_action", "fsm_outcome"):
                    store.db.execute_sql(f"ANALYZE {table}")
            measure = sqlite_steps if store.is_sqlite else pg_rows_read
            return {n: measure(store, *call) for n, call in listing_statements(store).items()}
        finally:
            store.close()

    bulk.fill(store_url, SMALL)
    bulk.fill_ended(store_url, SMALL)
    small = work()
    bulk.fill(store_url, LARGE - SMALL, start=SMALL)
    bulk.fill_ended(store_url, LARGE - SMALL, start=SMALL)
    large = work()
    assert len(small) >= len(LISTINGS)
    grown = {n: (small[n], large[n]) for n in small if large[n] > 2 * small[n] + 50}
    assert not grown, f"work at {SMALL} -> {LARGE} rows grew: {grown}"
