"""The store on its own, on real SQLite files and PostgreSQL: no executor, explicit clocks.

Each test drives the store's calls the way a drive does (insert, claim, write, finish) and
asserts what the database then holds, read back through the store's cold reads.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import peewee
import pytest
from processes import child_env, dead_owner

import fsm
from fsm.errors import (
    DatabaseNotFound,
    LeaseLost,
    NotAnFsmDatabase,
    ResourceConflict,
    SchemaError,
)
from fsm.store import (
    NO_HOOKS,
    SCHEMA_VERSION,
    WRITE_POINTS,
    Bookkeeping,
    Claimed,
    ClaimMiss,
    KeptOutcome,
    LogEntry,
    LoggedStep,
    RowInfo,
    StoreHooks,
    is_transient,
    open_store,
)

T0 = 1_000_000.0
OWNER = "owner-a"
OTHER = "owner-b"

OpenStore = Callable[..., fsm.Store]


@pytest.fixture
def stores(store_url: str) -> Iterator[OpenStore]:
    """Opens stores (with options) on this test's database; closes them all at the end."""
    opened: list[fsm.Store] = []

    def make(**kwargs: Any) -> fsm.Store:
        s = open_store(store_url, **kwargs)
        opened.append(s)
        return s

    yield make
    for s in opened:
        s.close()


def start(store: fsm.Store, action_id: str = "a", resources: tuple[str, ...] = ()) -> None:
    assert store.insert(action_id, "k", "s0", 1, '{"n": 0}', resources, T0) is None


def claim(store: fsm.Store, action_id: str = "a", owner: str = OWNER, now: float = T0) -> Claimed:
    claimed = store.claim(action_id, owner, now)
    assert isinstance(claimed, Claimed)
    return claimed


def entry(
    seq: int, from_state: str, to_state: str | None, outcome: str = "next", error: str | None = None
) -> LogEntry:
    return LogEntry("k", seq, from_state, to_state, outcome, "step", 0, error, 0.001)


def step(
    store: fsm.Store,
    c: Claimed,
    state: str,
    seq: int,
    *,
    was: Bookkeeping | None = None,
    new: Bookkeeping | None = None,
    acquired: tuple[str, ...] = (),
    released: tuple[str, ...] = (),
    now: float = T0 + 1,
) -> Bookkeeping:
    """Write one step from ``c``'s state (seq ``seq``) to ``state``; returns the new bookkeeping."""
    was = c.bookkeeping if was is None else was
    new = was if new is None else new
    store.write(
        c.id,
        c.epoch,
        state=state,
        payload=f'{{"state": "{state}"}}',
        seq=seq + 1,
        was=was,
        new=new,
        acquired=acquired,
        released=released,
        entry=entry(seq, c.state, state),
        now=now,
    )
    return new


# -- insert -----------------------------------------------------------------------------------


def test_insert_creates_a_live_action_with_its_resources(store: fsm.Store) -> None:
    start(store, "a", ("coin-1", "coin-2"))
    assert store.row("a") == RowInfo("a", "k", "s0", 1, 0, None, T0, None, None)
    assert store.resources_of("a") == ["coin-1", "coin-2"]
    assert store.holder_of("coin-1") == "a"
    assert store.payload_of("a") == '{"n": 0}'
    assert store.live_ids() == ["a"]


def test_insert_of_a_live_id_changes_nothing_and_names_its_kind(store: fsm.Store) -> None:
    start(store)
    assert store.insert("a", "other", "x", 1, "{}", ("coin",), T0 + 1) == "k"
    assert store.row("a") == RowInfo("a", "k", "s0", 1, 0, None, T0, None, None)
    assert store.all_resources() == {}


def test_a_taken_resource_refuses_the_whole_insert(store: fsm.Store) -> None:
    start(store, "a", ("coin",))
    with pytest.raises(ResourceConflict):
        store.insert("b", "k", "s0", 1, "{}", ("free", "coin"), T0)
    assert store.row("b") is None
    assert store.all_resources() == {"coin": "a"}


# -- claim ------------------------------------------------------------------------------------


def test_claim_reads_the_row_and_keeps_others_out(store: fsm.Store) -> None:
    start(store)
    c = claim(store)
    assert (c.id, c.kind, c.state, c.seq, c.payload) == ("a", "k", "s0", 0, '{"n": 0}')
    assert c.lease_expires == T0 + store.lease_ttl
    assert store.claim("a", OTHER, T0 + 1) is ClaimMiss.BUSY
    assert store.row("a").lease_owner == OWNER  # type: ignore[union-attr]
    again = claim(store, owner=OWNER, now=T0 + 2)  # its own lease, left behind: taken again
    assert again.epoch == c.epoch + 1


def test_claim_misses_are_an_enum(store: fsm.Store) -> None:
    assert store.claim("nobody", OWNER, T0) is ClaimMiss.MISSING
    start(store)
    store.quarantine("a", "bad payload")
    assert store.claim("a", OWNER, T0) is ClaimMiss.QUARANTINED
    assert [m.value for m in ClaimMiss] == ["missing", "busy", "quarantined"]


def test_an_expired_lease_is_taken_and_fences_the_old_claim(store: fsm.Store) -> None:
    start(store)
    old = claim(store)
    new = claim(store, owner=OTHER, now=T0 + store.lease_ttl + 1)
    assert new.epoch > old.epoch
    with pytest.raises(LeaseLost):
        step(store, old, "s1", 0)
    step(store, new, "s1", 0)
    assert store.row("a").state == "s1"  # type: ignore[union-attr]


# -- write ------------------------------------------------------------------------------------


def test_a_step_writes_checkpoint_and_log_row(store: fsm.Store) -> None:
    start(store)
    c = claim(store)
    step(store, c, "s1", 0, now=T0 + 5)
    assert store.payload_of("a") == '{"state": "s1"}'
    [logged] = store.transitions("a")
    assert isinstance(logged, LoggedStep)
    assert attrs.asdict(logged) == {
        "id": logged.id,
        "action_id": "a",
        "kind": "k",
        "seq": 0,
        "from_state": "s0",
        "to_state": "s1",
        "outcome": "next",
        "via": "step",
        "attempt": 0,
        "error": None,
        "duration": 0.001,
        "at": T0 + 5,
    }


def test_bookkeeping_changes_reach_the_row(store: fsm.Store) -> None:
    start(store)
    c = claim(store)
    parked = attrs.evolve(c.bookkeeping, attempts=2, last_error="boom", wake_at=T0 + 60)
    step(store, c, "s0", 0, new=attrs.evolve(parked, lease_expires=None))
    row = store.row("a")
    assert row is not None
    assert (row.attempts, row.last_error, row.wake_at) == (2, "boom", T0 + 60)
    assert row.lease_owner is None
    assert isinstance(store.claim("a", OTHER, T0 + 2), Claimed)  # the lease was let go


def test_resources_change_with_the_checkpoint(store: fsm.Store) -> None:
    start(store, "a", ("coin-1",))
    start(store, "b", ("coin-2",))
    c = claim(store)
    book = step(store, c, "s1", 0, acquired=("coin-3",), released=("coin-1",))
    assert store.resources_of("a") == ["coin-3"]
    with pytest.raises(ResourceConflict):
        step(store, attrs.evolve(c, state="s1", seq=1), "s2", 1, was=book, acquired=("coin-2",))
    assert store.row("a").state == "s1"  # type: ignore[union-attr]  # the failed step left nothing
    assert store.all_resources() == {"coin-2": "b", "coin-3": "a"}


def test_record_failure_keeps_the_checkpoint_and_lets_go(store: fsm.Store) -> None:
    start(store)
    c = claim(store)
    store.record_failure(
        "a", c.epoch, attempts=1, error="lost", wake_at=T0 + 9, broken=False, now=T0 + 1
    )
    row = store.row("a")
    assert row is not None
    assert (row.state, row.attempts, row.last_error, row.wake_at, row.lease_owner) == (
        "s0",
        1,
        "lost",
        T0 + 9,
        None,
    )
    with pytest.raises(LeaseLost):
        store.record_failure(
            "a", c.epoch, attempts=2, error="x", wake_at=None, broken=True, now=T0 + 2
        )


# -- finish and outcomes ----------------------------------------------------------------------


def test_finish_deletes_releases_keeps_the_outcome_and_logs_the_end(store: fsm.Store) -> None:
    start(store, "a", ("coin",))
    c = claim(store)
    store.finish("a", c.epoch, entry(0, "s0", None, "done"), T0 + 3, status="done", state="ok")
    assert store.row("a") is None
    assert store.all_resources() == {}
    kept = KeptOutcome("a", "", "k", "ok", "done", None, None, T0, T0 + 3, steps=1)
    assert store.outcome("a") == kept
    assert [(t.from_state, t.to_state, t.outcome) for t in store.transitions("a")] == [
        ("s0", None, "done")
    ]
    with pytest.raises(LeaseLost):
        store.finish("a", c.epoch, entry(0, "s0", None, "done"), T0 + 4, status="done", state="ok")


def test_an_end_keeps_one_error_for_its_outcome_and_its_log(store: fsm.Store) -> None:
    start(store)
    c = claim(store)
    with pytest.raises(ValueError, match="an end's error must be its log entry's"):
        store.finish("a", c.epoch, entry(0, "s0", None, "failed"), T0 + 3, status="failed",
                     state="s0", error="refused")  # fmt: skip
    with pytest.raises(ValueError, match="an end's error must be its log entry's"):
        store.finish("a", c.epoch, entry(0, "s0", None, "done"), T0 + 3, status="done",
                     state="s0", error="refused")  # fmt: skip
    assert store.row("a") is not None  # refused before any statement ran
    store.finish("a", c.epoch, entry(0, "s0", None, "done", "a retried fault"), T0 + 3,
                 status="done", state="s1", cause="why")  # fmt: skip
    kept = store.outcome("a")
    assert kept is not None and (kept.state, kept.error, kept.cause) == ("s1", None, "why")
    assert [t.error for t in store.transitions("a")] == ["a retried fault"]


def test_a_recent_outcome_answers_a_start_delivered_again(store: fsm.Store) -> None:
    start(store)
    c = claim(store)
    store.finish("a", c.epoch, entry(0, "s0", None, "failed", "refused"), T0 + 3,
                 status="failed", state="s0", error="refused")  # fmt: skip
    kept = store.insert("a", "k", "s0", 1, "{}", (), T0 + 4, incarnation="i2", ended_since=T0)
    assert isinstance(kept, KeptOutcome)
    assert (kept.status, kept.error) == ("failed", "refused")
    again = store.insert("a", "k", "s0", 1, "{}", (), T0 + 4, incarnation="i2", ended_since=T0 + 5)
    assert again is None
    assert store.row("a").incarnation == "i2"  # type: ignore[union-attr]
    assert store.prune_outcomes(T0 + 4) == 1
    assert store.outcome("a") is None


# -- leases -----------------------------------------------------------------------------------


def test_renew_extends_only_the_leases_the_owner_holds(store: fsm.Store) -> None:
    for action_id in ("a", "b"):
        start(store, action_id)
    claim(store, "a")
    claim(store, "b", owner=OTHER)
    assert store.renew(OWNER, T0 + 500, ["a", "b", "missing"]) == 1
    assert store.renew(OWNER, T0 + 500, []) == 0
    assert store.claim("a", OTHER, T0 + 400) is ClaimMiss.BUSY
    assert isinstance(store.claim("b", OWNER, T0 + 400), Claimed)


def test_unclaim_lets_go_and_moves_the_epoch_on(store: fsm.Store) -> None:
    start(store)
    c = claim(store)
    store.unclaim("a", c.epoch)
    assert store.row("a").lease_owner is None  # type: ignore[union-attr]
    with pytest.raises(LeaseLost):
        step(store, c, "s1", 0)


def test_claim_due_takes_only_due_rows_of_the_kinds_asked(store: fsm.Store) -> None:
    for action_id, kind, version in (("a", "k", 1), ("b", "k", 2), ("c", "other", 1)):
        assert store.insert(action_id, kind, "s0", version, "{}", (), T0) is None
    start(store, "later")
    later = claim(store, "later")
    step(store, later, "s0", 0, new=attrs.evolve(later.bookkeeping, wake_at=T0 + 100,
                                                 lease_expires=None))  # fmt: skip
    assert store.due_ids(T0 + 1) == ["a", "b", "c"]
    assert store.next_wake({"nothing": 1}) is None
    batch = store.claim_due(OWNER, T0 + 1, 10, {"k": 1})
    assert [c.id for c in batch] == ["a"]  # b is of a newer version, c of another kind
    assert store.claim_due(OWNER, T0 + 1, 10, {}) == []
    assert {c.id for c in store.claim_due(OTHER, T0 + 1, 10)} == {"b", "c"}
    assert store.claim_due(OTHER, T0 + 1, 10) == []  # all leased now
    assert store.next_wake() == T0 + 1 + store.lease_ttl  # the first lease to run out


def test_a_notify_during_a_drive_keeps_the_action_due(store: fsm.Store) -> None:
    start(store)
    c = claim(store)
    assert store.mark_due("a", T0 + 1)
    step(store, c, "s1", 0, new=attrs.evolve(c.bookkeeping, wake_at=T0 + 1000, lease_expires=None),
         now=T0 + 2)  # fmt: skip
    assert store.row("a").wake_at == T0 + 2  # type: ignore[union-attr]
    assert not store.mark_due("missing", T0)


def test_the_leases_of_a_dead_process_of_this_host_are_released(store: fsm.Store) -> None:
    dead = dead_owner()
    start(store, "a")
    start(store, "b")
    claim(store, "a", owner=dead)
    claim(store, "b", owner=OWNER)  # alive (no such process space): left alone
    assert store.release_dead_leases() == 1
    assert store.row("a").lease_owner is None  # type: ignore[union-attr]
    assert store.row("b").lease_owner == OWNER  # type: ignore[union-attr]


# -- quarantine -------------------------------------------------------------------------------


def test_quarantine_sets_a_row_aside_until_released_or_removed(store: fsm.Store) -> None:
    start(store, "a", ("coin",))
    start(store, "b")
    c = claim(store, "a")
    store.quarantine("a", "unknown kind")
    with pytest.raises(LeaseLost):
        step(store, c, "s1", 0)
    assert store.live_ids() == ["b"]
    assert [(r.id, r.quarantine) for r in store.quarantined()] == [("a", "unknown kind")]
    assert store.release_quarantine("a")
    assert store.quarantined() == []
    store.quarantine("a", "again")
    store.remove_quarantined("a")
    store.remove_quarantined("b")  # not quarantined: kept
    assert [r.id for r in store.rows()] == ["b"]
    assert store.all_resources() == {}


# -- cold reads -------------------------------------------------------------------------------


def test_cold_reads_are_plain_records(store: fsm.Store) -> None:
    start(store, "a")
    start(store, "b")
    step(store, claim(store, "a"), "s1", 0)
    records: list[object] = [*store.rows(), *store.transitions()]
    assert records and all(not isinstance(r, peewee.Model) for r in records)
    assert all(attrs.has(type(r)) for r in records)
    assert store.count_by_state() == {("k", "s0"): 1, ("k", "s1"): 1}
    assert store.count_by_state("none") == {}
    assert store.prune_log(T0 + 2) == 1
    assert store.transitions() == []


# -- read-only opens --------------------------------------------------------------------------


def test_a_readonly_open_never_creates_a_database(tmp_path: Path) -> None:
    missing = tmp_path / "typo.sqlite"
    for url in (str(missing), f"sqlite:///{missing}"):
        with pytest.raises(DatabaseNotFound, match=r"typo\.sqlite"):
            open_store(url, readonly=True)
    with pytest.raises(DatabaseNotFound):
        fsm.Store.sqlite(tmp_path, readonly=True)  # a folder is no database either
    assert list(tmp_path.iterdir()) == []


def test_a_readonly_store_reads_and_cannot_write(stores: OpenStore) -> None:
    writer = stores()
    start(writer)
    reader = stores(readonly=True)
    assert [r.id for r in reader.rows()] == ["a"]
    assert reader.schema_version == SCHEMA_VERSION
    with pytest.raises(peewee.DatabaseError):
        reader.insert("b", "k", "s0", 1, "{}", (), T0)
    assert [r.id for r in writer.rows()] == ["a"]


def test_a_readonly_open_refuses_foreign_and_newer_files(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE t (x)")
    with pytest.raises(NotAnFsmDatabase):
        open_store(str(foreign), readonly=True)
    newer = tmp_path / "newer.sqlite"
    open_store(str(newer)).close()
    with sqlite3.connect(newer) as conn:
        conn.execute("UPDATE fsm_meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(SchemaError, match="v99 is newer"):
        open_store(str(newer), readonly=True)
    with pytest.raises(SchemaError, match="v99 is newer"):
        open_store(str(newer))


def test_a_new_sqlite_file_is_owner_only(tmp_path: Path) -> None:
    open_store(str(tmp_path / "new.sqlite")).close()
    assert os.stat(tmp_path / "new.sqlite").st_mode & 0o777 == 0o600


def test_unsupported_urls_name_the_accepted_forms() -> None:
    with pytest.raises(ValueError, match="sqlite:///PATH"):
        open_store("mysql://x/y")


# -- migration --------------------------------------------------------------------------------


def test_a_v1_database_is_migrated_in_place(stores: OpenStore) -> None:
    store = stores()
    start(store)
    if store.is_sqlite:  # SQLite's end trigger (v4) reads v2's columns
        store.db.execute_sql("DROP TRIGGER fsm_action_end")
        store.db.execute_sql("DROP TRIGGER fsm_child_end")  # v6's, reads v2's incarnation
    store.db.execute_sql("DROP INDEX fsm_action_trouble")  # v5's, reads v2's broken
    for column in ("incarnation", "cause", "broken", "notified", "ending", "steps", "retries"):
        store.db.execute_sql(f"ALTER TABLE fsm_action DROP COLUMN {column}")
    store.db.execute_sql("DROP TABLE fsm_outcome")
    store.db.execute_sql("UPDATE fsm_meta SET value = '1' WHERE key = 'schema_version'")
    old = stores(readonly=True)  # read as it is; what it lacks is explained
    assert old.live_ids() == ["a"]
    with pytest.raises(SchemaError, match="v1 is older than this fsm"):
        old.rows()
    upgraded = stores()
    assert upgraded.schema_version == SCHEMA_VERSION
    row = upgraded.row("a")
    assert row is not None and (row.incarnation, row.broken, row.cause) == ("", False, None)
    c = claim(upgraded)
    upgraded.finish("a", c.epoch, entry(0, "s0", None, "done"), T0 + 1, status="done", state="s0")
    assert upgraded.outcome("a") is not None


def test_postgres_connections_give_up_on_a_server_that_never_answers(pg_url: str) -> None:
    """A connection attempt to a server that accepts and then says nothing (a partition, a
    proxy forwarding nothing) fails after libpq's connect_timeout instead of hanging the
    committer's thread, and with it the worker, for ever; keepalives are on, so a peer that
    goes silent mid-session is dropped too."""
    import socket

    store = open_store(pg_url)
    given = store.db.connection().info.get_parameters()
    assert given["connect_timeout"] == "10" and given["keepalives"] == "1"
    store.close()
    silent = socket.create_server(("127.0.0.1", 0))  # the kernel accepts; nobody answers
    port = silent.getsockname()[1]
    url = f"postgresql://postgres@127.0.0.1:{port}/test?connect_timeout=1"
    outcome: list[BaseException | None] = []

    def attempt() -> None:
        try:
            open_store(url).close()
            outcome.append(None)
        except BaseException as exc:  # the assertion below says what it was
            outcome.append(exc)

    trying = threading.Thread(target=attempt, daemon=True)
    trying.start()
    trying.join(60)  # the bound of a hung test, not a speed
    silent.close()
    assert len(outcome) == 1 and isinstance(outcome[0], peewee.OperationalError), outcome


def test_a_deleted_sqlite_file_is_never_created_again_by_a_connection(db_path: Path) -> None:
    """The file is created when the store opens; a later connection (another thread's, the
    committer's after a pause) finds it gone and fails, instead of creating an empty
    database in its place that a worker would then write into."""
    store = fsm.Store.sqlite(db_path)
    db_path.unlink()
    errors: list[BaseException] = []

    def other_thread() -> None:
        try:
            store.live_ids()
        except BaseException as exc:  # the assertion below says what it was
            errors.append(exc)

    reader = threading.Thread(target=other_thread)
    reader.start()
    reader.join()
    assert len(errors) == 1 and "unable to open database file" in str(errors[0])
    assert not db_path.exists()
    store.close()


def test_opening_a_current_schema_waits_on_no_lock(pg_url: str) -> None:
    """A worker opening a current database runs no DDL: a lock another session holds on
    ``fsm_action`` (a long transaction, a migration) does not hold up its start."""
    import psycopg

    open_store(pg_url).close()
    with psycopg.connect(pg_url) as locker:
        locker.execute("LOCK TABLE fsm_action IN EXCLUSIVE MODE")  # CREATE INDEX waits on it
        # lock_timeout turns a wait into an error: the open must need no lock at all
        store = open_store(pg_url.replace("search_path", "lock_timeout%3D200%20-c%20search_path"))
        assert store.schema_version == SCHEMA_VERSION and store.live_ids() == []
        store.close()
        locker.rollback()


def test_stores_in_several_threads_each_read_and_write_their_own_database(
    tmp_path: Path,
) -> None:
    """Four threads, each opening its own file, again and again, and writing and reading
    it: every query meets its own store's tables (a global model binding let one thread's
    store swap in another's database mid-query: "no such table", or a row in the wrong
    file)."""
    errors: list[str] = []

    def work(n: int) -> None:
        try:
            for round_ in range(15):
                store = fsm.Store.sqlite(tmp_path / f"{n}.sqlite")
                store.insert(f"t{n}-{round_}", "k", "s", 1, "{}", [], T0)
                store.quarantine(f"t{n}-{round_}", f"thread {n}")
                assert {r.quarantine for r in store.rows()} == {f"thread {n}"}
                store.close()
        except Exception as exc:  # reported below, with the thread's number
            errors.append(f"thread {n}: {exc!r}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for n in range(4):
        with sqlite3.connect(tmp_path / f"{n}.sqlite") as conn:
            ids = {row[0] for row in conn.execute("SELECT id FROM fsm_action")}
        assert ids == {f"t{n}-{r}" for r in range(15)}


# -- hooks ------------------------------------------------------------------------------------


def test_hooks_see_every_write_point_and_statement(store: fsm.Store) -> None:
    points: list[str] = []
    statements: list[bool] = []
    store.hooks = StoreHooks(point=points.append) | StoreHooks(statement=statements.append)
    start(store)
    c = claim(store)
    step(store, c, "s1", 0)
    store.finish("a", c.epoch, entry(1, "s1", None, "done"), T0 + 2, status="done", state="s1")
    assert points == [
        f"{point}.{phase}" for point in ("start", "claim", "checkpoint", "finish")
        for phase in ("before", "after")
    ]  # fmt: skip
    assert {p.split(".")[0] for p in points} <= set(WRITE_POINTS)
    assert statements and set(statements) == {store.is_sqlite}
    store.hooks = NO_HOOKS
    store.row("a")
    assert len(points) == 8


def test_a_failing_statement_hook_fails_the_call_like_the_database(store: fsm.Store) -> None:
    def fail(sqlite: bool) -> None:
        raise sqlite3.OperationalError("database is locked")

    start(store)
    store.hooks = StoreHooks(statement=fail)
    with pytest.raises(peewee.OperationalError) as raised:
        store.claim("a", OWNER, T0)
    assert is_transient(raised.value)
    assert store.failed_calls == 1
    store.hooks = NO_HOOKS
    claim(store)  # the connection is usable again


def test_is_transient_tells_outages_from_mistakes() -> None:
    assert is_transient(peewee.OperationalError("server closed the connection"))
    assert is_transient(sqlite3.OperationalError("disk I/O error"))
    assert not is_transient(peewee.IntegrityError("duplicate key"))
    assert not is_transient(ValueError("bad"))


def test_the_environment_arms_a_store_of_any_program(tmp_path: Path) -> None:
    """``FSM_CRASH`` reaches a store even in a program that imports nothing but the store."""
    db = tmp_path / "env.sqlite"
    code = "import sys; from fsm.store import open_store; open_store(sys.argv[1]).insert("
    code += "'a', 'k', 's0', 1, '{}', (), 0.0)"
    env = child_env({"FSM_CRASH": "start.after:1"})
    child = subprocess.run([sys.executable, "-c", code, str(db)], env=env, capture_output=True)
    assert child.returncode == -9, child.stderr.decode()
    assert b"FSM_CRASH='start.after:1' is set" in child.stderr
    store = fsm.Store.sqlite(db)
    try:
        assert store.live_ids() == ["a"]  # killed right after the start committed
    finally:
        store.close()


def test_importing_fsm_loads_no_testing_tool_unless_the_environment_arms_one() -> None:
    """Production pays nothing for the test seam: the tools load only when a variable is set."""
    code = (
        "import sys, fsm; s = fsm.Store.sqlite(':memory:'); "
        "print(sorted(m for m in sys.modules if m.startswith('fsm.testing'))); s.close()"
    )
    plain = subprocess.run([sys.executable, "-c", code], env=child_env({}), capture_output=True)
    assert plain.returncode == 0, plain.stderr.decode()
    assert plain.stdout.decode().strip() == "[]"
    armed_env = child_env({"FSM_DB_FAULTS": "0:1"})
    armed = subprocess.run([sys.executable, "-c", code], env=armed_env, capture_output=True)
    assert armed.returncode == 0, armed.stderr.decode()
    assert "'fsm.testing.faults'" in armed.stdout.decode()
    assert b"FSM_DB_FAULTS='0:1' is set" in armed.stderr
