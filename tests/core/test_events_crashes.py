"""Events under crashes: a driver SIGKILLed at every write point of a send, of a step that
takes an event, of a spawn and of a child's end loses no event, takes none twice, applies no
effect twice; a deadline outlives the process that set it. On both databases.

The drivers are real child processes (`events_child.py`), killed by the crash runner of
`fsm.testing` (``FSM_CRASH=point:n``, a SIGKILL from inside the store's write point), then
restarted until one exits 0. After every kill the folder is checked as the kill left it
(`fsm.testing.check_invariants`, whose inbox promises an end would otherwise hide: the
count, no orphan event, each taking below the row's sequence), and after the last run the
ledger of the outside world says what happened.
"""

from __future__ import annotations

import asyncio
import collections
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from actions import plain_keys
from crash_event_kinds import (
    KINDS,
    Ballot,
    BallotKind,
    Batch,
    FanOutKind,
    Vote,
    batch_report,
    closing,
)
from events_child import VOTES, ledger_of, url_of
from processes import SUPPORT, child_env, run_child, spawn_child

import fsm
from fsm.testing import CrashReport, Scenario, check_invariants, enumerate_crashes

POINTS = tuple(f"{p}.{phase}" for p in ("send", "inbox", "finish") for phase in ("before", "after"))
"""Where a send, a step that takes an event or spawns, and an end (a child's tells its
parent) write."""
JOBS = 2


def wipe(url: str) -> None:
    """PostgreSQL: the test's schema emptied for the next run (SQLite: a new file each)."""
    if url.startswith("sqlite"):
        return
    store = fsm.open_store(url)
    try:
        store.db.execute_sql(
            "TRUNCATE fsm_event, fsm_resource, fsm_transition, fsm_outcome, fsm_action"
        )
    finally:
        store.close()


@pytest.fixture
def database(store_url: str) -> Callable[[Path], str]:
    """The store of a run in ``folder``: a SQLite file there, or the test's PostgreSQL
    schema, emptied."""

    def make(folder: Path) -> str:
        url = f"sqlite:///{folder / 'a.sqlite'}" if store_url.startswith("sqlite") else store_url
        wipe(url)
        (folder / "db.url").write_text(url)
        return url

    return make


def fsm_checks(folder: Path) -> list[str]:
    store = fsm.open_store(url_of(folder))
    try:
        return check_invariants(store, KINDS)
    finally:
        store.close()


def distinct_keys(folder: Path) -> dict[str, set[str]]:
    """what -> the idempotency keys it was applied under (one key: applied once)."""
    ledger = ledger_of(folder)
    rows = ledger.execute("SELECT key, what FROM ledger_call", ()).fetchall()
    plain_keys({str(k): 1 for k in {r[0] for r in rows}})  # one incarnation per action
    keys: dict[str, set[str]] = collections.defaultdict(set)
    for key, what in rows:
        keys[str(what)].add(str(key))
    return keys


def ended_everything(folder: Path) -> list[str]:
    store = fsm.open_store(url_of(folder))
    try:
        live = store.live_ids()
        return [f"{len(live)} action(s) still live: {live}"] if live else []
    finally:
        store.close()


def scenario(name: str, mode: str, setup: Callable[[Path], None],
             expected: Callable[[], dict[str, int]]) -> Scenario:  # fmt: skip
    """A driver in ``mode`` over what ``setup`` started; the ledger must show each of
    ``expected`` (what -> actions) applied under exactly that many keys, and nothing else."""

    def check(folder: Path) -> list[str]:
        problems = fsm_checks(folder) + ended_everything(folder)
        applied = {what: len(keys) for what, keys in distinct_keys(folder).items()}
        if applied != expected():
            problems.append(f"the ledger shows {applied}, expected {expected()}")
        return problems

    return Scenario(
        name=name,
        setup=setup,
        driver=lambda folder: [
            sys.executable,
            str(SUPPORT / "events_child.py"),
            mode,
            str(folder),
        ],
        database=url_of,
        check=check,
        env=child_env(),
        after_kill=fsm_checks,
    )


def start(url: str, *actions: fsm.Action[object]) -> None:
    async def go() -> None:
        store = fsm.open_store(url)
        ex: fsm.Executor[object] = fsm.Executor(store, None, kinds=KINDS)
        for action in actions:
            await ex.start(action)
        store.close()

    asyncio.run(go())


def assert_clean(report: CrashReport, points: set[str]) -> None:
    """No violation, and a kill that interrupted live work at each of ``points``."""
    assert report.violations == []
    assert report.points == points, "a write point was never hit with live work"


@pytest.mark.slow
def test_a_vote_is_counted_once_whatever_write_the_driver_dies_at(
    tmp_path: Path, database: Callable[[Path], str]
) -> None:
    """Killed before or after any send, any step that takes a vote, or the end: every vote
    is taken exactly once and its effect applied under one key; the ballot's own record of
    what it took, in the order sent, shows each vote once."""

    def setup(folder: Path) -> None:
        start(database(folder), BallotKind.create(Ballot("b0", needed=len(VOTES))))

    def expected() -> dict[str, int]:
        votes = {f"vote:{v}": 1 for v in VOTES}
        return {**votes, closing(VOTES): 1}

    report = enumerate_crashes(scenario("ballot", "ballot", setup, expected), tmp_path,
                               points=POINTS)  # fmt: skip
    # Each vote is one pass of send and one of inbox, each killed before and after, and
    # the end too: 10 kills. Two interrupted nothing: before the first send the driver had
    # not touched the store, after the end nothing was left.
    assert_clean(report, set(POINTS) - {"finish.after"})
    assert (report.kills, report.idle_kills) == (8, 2)


@pytest.mark.slow
def test_children_start_once_and_each_end_reaches_the_parent_once(
    tmp_path: Path, database: Callable[[Path], str]
) -> None:
    """Killed around the step that spawns the jobs, around each job's end (whose trigger
    sends the parent its `fsm.ChildEnded`) and around each taking of one: every job exists
    and works once, the batch hears exactly one end per job and ends."""

    def setup(folder: Path) -> None:
        start(database(folder), FanOutKind.create(Batch("f0", size=JOBS)))

    def expected() -> dict[str, int]:
        return {"work": JOBS, batch_report("f0", JOBS): 1}

    points = tuple(p for p in POINTS if not p.startswith("send"))
    report = enumerate_crashes(scenario("fanout", "fanout", setup, expected), tmp_path,
                               points=points)  # fmt: skip
    assert_clean(report, set(points))


def test_the_invariants_catch_each_broken_promise_of_the_inbox(
    store: fsm.Store, tmp_path: Path
) -> None:
    ex: fsm.Executor[object] = fsm.Executor(store, ledger_of(tmp_path), kinds=KINDS)

    async def two_votes_one_taken() -> None:
        await ex.start(BallotKind.create(Ballot("b0")))
        await ex.send("b0", Vote("e0"), key="k0")
        await ex.drive("b0")
        await ex.send("b0", Vote("e1"), key="k1")

    asyncio.run(two_votes_one_taken())
    assert check_invariants(store, KINDS) == []
    sql = store.db.execute_sql

    sql("UPDATE fsm_action SET inbox = 5 WHERE id = 'b0'")
    assert check_invariants(store, KINDS) == [
        "action b0: its inbox count is 5, but 1 event(s) are pending"
    ]
    sql("UPDATE fsm_action SET inbox = 1 WHERE id = 'b0'")

    sql("UPDATE fsm_event SET consumed_seq = 7 WHERE consumed_seq IS NOT NULL")
    assert check_invariants(store, KINDS) == [
        "action b0: event 1 was taken by step 7, but the row is at step 1 (the taking "
        "step's checkpoint did not move the sequence on)"
    ]
    sql("UPDATE fsm_event SET consumed_seq = 0 WHERE consumed_seq IS NOT NULL")

    sql("UPDATE fsm_event SET consumed_at = 1, consumed_seq = 0 WHERE key = 'k1'")
    sql("UPDATE fsm_action SET inbox = 0 WHERE id = 'b0'")
    assert check_invariants(store, KINDS) == [
        "action b0: step 0 took 2 events (a step takes at most one)"
    ]


def test_the_invariants_catch_an_event_of_no_live_action(db_path: Path) -> None:
    store = fsm.Store.sqlite(db_path)
    store.db.execute_sql("PRAGMA foreign_keys = OFF")
    store.db.execute_sql(
        "INSERT INTO fsm_event (action_id, key, name, payload, sent_at) "
        "VALUES ('gone', 'k', 'Vote', '{}', 0)"
    )
    assert check_invariants(store, KINDS) == ["event 1 (Vote) belongs to 'gone', which is not live"]
    store.close()


def test_the_crash_points_name_every_write_of_the_inbox() -> None:
    """The enumeration kills at every point the store names, the inbox's among them."""
    from fsm.testing.faults import COMMITS, all_points

    assert set(POINTS) <= set(all_points())
    assert "inbox.after" in COMMITS  # a step that took an event is a committed step


@pytest.fixture
def offer_folder(tmp_path: Path, database: Callable[[Path], str]) -> Iterator[Path]:
    database(tmp_path)
    yield tmp_path


@pytest.mark.slow
def test_a_deadline_fires_after_the_process_that_set_it_was_killed(offer_folder: Path) -> None:
    """The driver parks the offer until its deadline and sleeps; it is SIGKILLed asleep. A
    new executor that steps it before the deadline parks it again until the same deadline
    (the one set, not started again); one after it takes the timeout route."""
    from crash_event_kinds import OFFER_TIMEOUT

    driver = spawn_child("events_child.py", "offer", offer_folder, talk=True)
    try:
        assert driver.stdout is not None
        assert driver.stdout.readline().strip() == "parked"
        driver.send_signal(signal.SIGKILL)
    finally:
        driver.wait(timeout=60)
    assert driver.returncode == -signal.SIGKILL
    store = fsm.open_store(url_of(offer_folder))
    try:
        row = store.row("o0")
        assert row is not None and row.state == "waiting" and row.lease_owner is not None
        deadline = row.wake_at
        assert deadline is not None and deadline > store.clock() + OFFER_TIMEOUT / 2

        early = run_child("events_child.py", "later", offer_folder, str(OFFER_TIMEOUT / 2))
        assert early.returncode == 0, early.stderr
        assert early.stdout.split() == ["o0", "waiting"]
        row = store.row("o0")
        assert row is not None and row.wake_at == deadline  # kept, not moved on

        late = run_child("events_child.py", "later", offer_folder, str(OFFER_TIMEOUT * 1.5))
        assert late.returncode == 0, late.stderr
        assert late.stdout.split() == ["o0", "ended"]
        kept = store.outcome("o0")
        assert kept is not None and (kept.status, kept.state) == ("done", "expired")
        assert check_invariants(store, KINDS) == []
    finally:
        store.close()
