"""Events sent concurrently: several senders into one action while a worker drives it, and
many sends of one key at once. On both databases.

Each sender is a thread with a store (a connection) and an executor of its own, as a web
handler in another process would be; the driver is a real ``fsm worker`` process. What
the worker did is read from the ledger in the store's database (`events_child.services`):
each vote's effect under its step's idempotency key, whose sequence number orders the
steps that took them.
"""

from __future__ import annotations

import asyncio
import collections
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from actions import Ledger
from crash_event_kinds import (
    KINDS,
    OFFER_TIMEOUT,
    Accept,
    Ballot,
    BallotKind,
    Batch,
    FanOutKind,
    Offer,
    OfferKind,
    Vote,
    closing,
)
from processes import child_env
from worker_processes import wait_for

import fsm
from fsm import SendStatus
from fsm.testing import check_invariants

SENDERS = 4
VOTES_EACH = 10


def send_all(url: str, votes: list[tuple[str, Vote, str]], barrier: threading.Barrier,
             results: list[fsm.SendResult]) -> None:  # fmt: skip
    """One sender: its own store and executor; every (action, vote, key) in order, each
    send awaited before the next (so its events are sent in this order)."""

    async def go() -> None:
        store = fsm.open_store(url)
        ex: fsm.Executor[object] = fsm.Executor(store, None, kinds=KINDS)
        try:
            barrier.wait(timeout=60)
            for action_id, vote, key in votes:
                results.append(await ex.send(action_id, vote, key=key))
        finally:
            store.close()

    asyncio.run(go())


def in_threads(url: str, plans: list[list[tuple[str, Vote, str]]]) -> list[list[fsm.SendResult]]:
    """Run one sender per plan, all released at once; their results, per sender."""
    barrier = threading.Barrier(len(plans))
    results: list[list[fsm.SendResult]] = [[] for _ in plans]
    threads = [
        threading.Thread(target=send_all, args=(url, plan, barrier, out))
        for plan, out in zip(plans, results, strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert all(len(out) == len(plan) for plan, out in zip(plans, results, strict=True))
    return results


def spawn_worker(url: str, log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "fsm.cli", "worker", "--db", url, "--poll", "0.05",
               "--module", "crash_event_kinds", "--services", "events_child:services"]  # fmt: skip
    return subprocess.Popen(
        command, env=child_env(), stdout=subprocess.DEVNULL, stderr=log.open("wb")
    )


def taken_in_order(store: fsm.Store, action_id: str) -> list[tuple[str, set[str]]]:
    """(what, keys) of each effect the action made, in the order of its steps."""
    rows = (
        Ledger.in_store(store)
        .execute(
            f"SELECT key, what FROM ledger_call WHERE action_id = {store.db.param}", (action_id,)
        )
        .fetchall()
    )
    by_seq: dict[int, set[str]] = collections.defaultdict(set)
    keys: dict[int, set[str]] = collections.defaultdict(set)
    for key, what in rows:
        seq = int(re.sub(r".*\.", "", str(key)))
        by_seq[seq].add(str(what))
        keys[seq].add(str(key))
    out = []
    for seq in sorted(by_seq):
        assert len(by_seq[seq]) == 1, f"step {seq} made {by_seq[seq]}"
        out.append((by_seq[seq].pop(), keys[seq]))
    return out


@pytest.mark.slow
def test_senders_racing_a_worker_lose_nothing_and_keep_their_order(
    store_url: str, tmp_path: Path
) -> None:
    """Four senders, ten votes each, into one ballot a worker is driving: every vote is
    taken by exactly one step (one effect, one key), each sender's votes in the order it
    sent them, and the ballot closes on all forty."""
    store = fsm.open_store(store_url)
    Ledger.in_store(store)  # the table, before the worker and its steps race to make it
    total = SENDERS * VOTES_EACH
    ex: fsm.Executor[object] = fsm.Executor(store, None, kinds=KINDS)
    asyncio.run(ex.start(BallotKind.create(Ballot("b0", needed=total))))
    worker = spawn_worker(store_url, tmp_path / "worker.log")
    try:
        plans = [
            [("b0", Vote(f"s{s}-{i}"), f"s{s}-{i}") for i in range(VOTES_EACH)]
            for s in range(SENDERS)
        ]
        results = in_threads(store_url, plans)
        assert {r.status for out in results for r in out} == {SendStatus.SENT}
        wait_for(lambda: not store.live_ids(), "the ballot to close", timeout=120)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
    assert worker.returncode == 0, (tmp_path / "worker.log").read_text()

    steps = taken_in_order(store, "b0")
    votes = [what.removeprefix("vote:") for what, _ in steps[:-1]]
    assert sorted(votes) == sorted(f"s{s}-{i}" for s in range(SENDERS) for i in range(VOTES_EACH))
    assert len(set(votes)) == total  # each vote taken by one step only
    for s in range(SENDERS):
        mine = [v for v in votes if v.startswith(f"s{s}-")]
        assert mine == [f"s{s}-{i}" for i in range(VOTES_EACH)], "a sender's order was lost"
    assert steps[-1][0] == closing(tuple(votes))
    kept = store.outcome("b0")
    assert kept is not None and (kept.status, kept.state) == ("done", "closed")
    assert check_invariants(store, KINDS) == []
    store.close()


def test_one_key_sent_at_once_by_many_is_one_event(store: fsm.Store, store_url: str) -> None:
    """Eight senders send the same vote under the same key at the same moment: one SENT,
    seven DUPLICATE; the inbox holds one event, counted once, taken once."""
    ex: fsm.Executor[object] = fsm.Executor(store, None, kinds=KINDS)
    asyncio.run(ex.start(BallotKind.create(Ballot("b0", needed=1))))
    results = in_threads(store_url, [[("b0", Vote("v"), "the-key")] for _ in range(8)])
    statuses = collections.Counter(out[0].status for out in results)
    assert statuses == {SendStatus.SENT: 1, SendStatus.DUPLICATE: 7}
    p = store.db.param
    rows = store.db.execute_sql(
        f"SELECT key, consumed_at FROM fsm_event WHERE action_id = {p}", ("b0",)
    ).fetchall()
    assert [tuple(r) for r in rows] == [("the-key", None)]
    assert check_invariants(store, KINDS) == []  # the row counts one pending event

    ledger = Ledger.in_store(store)
    driver: fsm.Executor[Ledger] = fsm.Executor(store, ledger, kinds=KINDS)
    assert asyncio.run(driver.drive("b0")).status is fsm.DriveStatus.DONE
    assert sorted(what for _, what in ledger.execute("SELECT key, what FROM ledger_call",
                                                     ()).fetchall()) == [
        closing(("v",)), "vote:v"
    ]  # fmt: skip


def test_an_event_sent_from_elsewhere_during_a_nap_beats_the_deadline(
    open_store: Callable[[], fsm.Store], tmp_path: Path
) -> None:
    """An executor drives an offer ``UNTIL_DONE``: it parks until its deadline and its
    drive sleeps, holding the lease. Another executor (another process's store) sends an
    `Accept` before the deadline. When the nap ends at the deadline, the step takes the
    event (events first, then the deadline): the offer is accepted, not expired."""
    holder, sender = open_store(), open_store()
    now = [holder.clock()]
    napping, wake = asyncio.Event(), asyncio.Event()

    async def sleep(seconds: float) -> None:
        napping.set()
        await wake.wait()

    async def scenario() -> fsm.DriveResult:
        ledger = Ledger.on_file(tmp_path / "ledger.sqlite")
        a = fsm.Executor(holder, ledger, kinds=KINDS, clock=lambda: now[0], sleep=sleep)
        b: fsm.Executor[object] = fsm.Executor(sender, None, kinds=KINDS, clock=lambda: now[0])
        drive = asyncio.create_task(
            a.drive(OfferKind.create(Offer("o0")), fsm.DriveMode.UNTIL_DONE)
        )
        await napping.wait()
        assert (await b.send("o0", Accept("ann"), key="ann")).status is SendStatus.SENT
        now[0] += OFFER_TIMEOUT + 1  # the nap ends at the deadline
        wake.set()
        return await drive

    result = asyncio.run(scenario())
    assert (result.status, result.state) == (fsm.DriveStatus.DONE, "accepted")
    kept = holder.outcome("o0")
    assert kept is not None and kept.state == "accepted"


def test_a_childs_end_racing_its_parents_taking_keeps_the_count(pg_url: str) -> None:
    """PostgreSQL: the parent's step has taken the first child's `fsm.ChildEnded` (its
    checkpoint holds the parent's row) when the second child ends; the end's trigger waits
    for the row. Once the step commits, the parent's count is its one pending event (the
    trigger's count must not come from before the step's commit)."""
    import psycopg

    store = fsm.open_store(pg_url)
    ledger = Ledger.in_store(store)
    ex = fsm.Executor(store, ledger, kinds=KINDS)
    asyncio.run(ex.drive(FanOutKind.create(Batch("f0", size=2))))  # spawns f0.job0, f0.job1
    asyncio.run(ex.drive("f0.job0"))  # its end: one ChildEnded pending for f0
    options = pg_url.split("options=", 1)[1].replace("%20", " ").replace("%3D", "=")
    base = pg_url.split("?", 1)[0]
    with (
        psycopg.connect(base, options=options) as step,
        psycopg.connect(base, options=options, autocommit=True) as child,
    ):
        # the parent's step, as `Inbox.with_outbox` writes it: checkpoint first, then take
        step.execute("UPDATE fsm_action SET seq = seq + 1 WHERE id = 'f0'")
        step.execute(
            "UPDATE fsm_event SET consumed_at = 1, consumed_seq = 1 WHERE action_id = 'f0'"
        )
        pid = child.info.backend_pid
        ended = threading.Thread(
            target=lambda: child.execute("DELETE FROM fsm_action WHERE id = 'f0.job1'")
        )
        ended.start()
        waits = "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s"
        wait_for(
            lambda: step.execute(waits, (pid,)).fetchone() == ("Lock",),
            "the child's end to wait for the parent's row",
        )
        step.execute(
            "UPDATE fsm_action SET inbox = (SELECT count(*) FROM fsm_event "
            "WHERE action_id = 'f0' AND consumed_at IS NULL) WHERE id = 'f0'"
        )
        step.commit()
        ended.join(timeout=60)
    assert check_invariants(store, KINDS) == []
    store.close()
