"""The committer's failure cases: what a batch of several drives' writes does when one of
them, or the database, fails; and that batches form at all.

The writes are submitted together (`asyncio.gather`), so they are ready in the same turn of
the event loop and the committer writes them as one batch (`Store.committer.batches`).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import psycopg
import pytest
from processes import died, run_child

import fsm
from fsm.errors import LeaseLost, ResourceConflict
from fsm.store import Claimed, LogEntry, StoreHooks, is_transient
from fsm.store.waking import TURN, Waking

T0 = 1_000_000.0
OWNER = "owner-a"


def started(
    store: fsm.Store, ids: list[str], resources: dict[str, tuple[str, ...]] | None = None
) -> list[Claimed]:
    claims = []
    for action_id in ids:
        held = (resources or {}).get(action_id, ())
        assert store.insert(action_id, "k", "s0", 1, '{"n": 0}', held, T0) is None
        claimed = store.claim(action_id, OWNER, T0)
        assert isinstance(claimed, Claimed)
        claims.append(claimed)
    return claims


async def write(store: fsm.Store, c: Claimed, acquired: tuple[str, ...] = ()) -> None:
    """The write of ``c``'s first step (s0 -> s1), through the committer."""
    entry = LogEntry("k", 0, "s0", "s1", "next", "step", 0, None, 0.001)
    step = ("s1", '{"n": 1}', 1, c.bookkeeping, c.bookkeeping, acquired, (), entry, T0 + 1)
    await store.write_soon(c.id, c.epoch, step)


async def together(*writes: Any) -> list[Any]:
    return list(await asyncio.gather(*writes, return_exceptions=True))


def states(store: fsm.Store) -> dict[str, str]:
    return {r.id: r.state for r in store.rows()}


def test_one_bad_write_in_a_batch_fails_alone(store: fsm.Store) -> None:
    """A resource conflict rolls the batch back; its writes are redone one by one."""
    a, b, c = started(store, ["a", "b", "c"], {"a": ("coin",)})
    results = asyncio.run(together(write(store, a), write(store, b, ("coin",)), write(store, c)))
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], ResourceConflict)
    assert states(store) == {"a": "s1", "b": "s0", "c": "s1"}
    assert store.holder_of("coin") == "a"
    assert [t.action_id for t in store.transitions()] == ["a", "c"]


def test_a_lost_lease_in_a_batch_refuses_that_write_only(store: fsm.Store) -> None:
    a, b, c = started(store, ["a", "b", "c"])
    store.unclaim("b", b.epoch)  # another driver's turn: b's claim is stale
    results = asyncio.run(together(write(store, a), write(store, b), write(store, c)))
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], LeaseLost)
    assert store.committer.batches == 1  # one transaction: the stale write did not split it
    assert states(store) == {"a": "s1", "b": "s0", "c": "s1"}


def test_a_batch_wakes_its_waiters_in_order_a_turn_at_a_time_after_its_commit(
    open_store: Callable[[], fsm.Store],
) -> None:
    """One batch of 3 turns and a half: every waiter is woken, in the order the writes were
    made, `TURN` per turn of the loop (the first to run finds only its turn's futures done,
    and a cancelled one), a stale write's waiter with its `LeaseLost`, a cancelled waiter
    skipped (its write still made); and each, when it runs on, finds its step already
    visible to another connection."""
    store, other = open_store(), open_store()
    n = 3 * TURN + TURN // 2
    claims = started(store, [f"w{i:02d}" for i in range(n)])
    store.unclaim(claims[5].id, claims[5].epoch)  # another driver's turn: a stale claim
    futures: list[asyncio.Future[None]] = []
    woken: list[tuple[int, str, int, str]] = []  # index, how, futures done, state seen

    async def one(i: int, c: Claimed) -> None:
        entry = LogEntry("k", 0, "s0", "s1", "next", "step", 0, None, 0.001)
        step = ("s1", '{"n": 1}', 1, c.bookkeeping, c.bookkeeping, (), (), entry, T0 + 1)
        future = store.write_soon(c.id, c.epoch, step)
        assert isinstance(future, asyncio.Future)
        futures.append(future)
        try:
            await future
            how = "written"
        except LeaseLost:
            how = "lost"
        row = other.row(c.id)
        woken.append((i, how, sum(f.done() for f in futures), row.state if row else "-"))

    async def run() -> None:
        tasks = [asyncio.create_task(one(i, c)) for i, c in enumerate(claims)]
        await asyncio.sleep(0)  # every write is made; the batch is not handed over yet
        tasks[1].cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(run())
    assert store.committer.batches == 1
    assert [w[0] for w in woken] == [i for i in range(n) if i != 1]  # in order, all
    assert [w[1] for w in woken] == ["lost" if w[0] == 5 else "written" for w in woken]
    assert woken[0][2] == TURN + 1  # the first turn's, and the cancelled one
    assert woken[-1][2] == n
    assert all(w[3] == ("s0" if w[0] == 5 else "s1") for w in woken)
    assert states(store)[claims[1].id] == "s1"  # a cancelled waiter's write is made all the same


def test_the_writes_of_drives_woken_in_turns_go_in_one_batch(store: fsm.Store) -> None:
    """Drives woken a few per turn write a few per turn; those writes wait on the loop
    until it has woken the last of them, then go as one batch (handed over a turn at a
    time, they made a batch per turn whenever the committer's thread was quick to take
    them). Seen from the loop: when the last drive makes its write, none was handed over."""
    n = 3 * TURN + 2
    claims = started(store, [f"d{i:02d}" for i in range(n)])
    entry = LogEntry("k", 1, "s1", "s2", "next", "step", 0, None, 0.001)
    waiting: list[int] = []  # the loop's writes not handed over, as the last one is made

    async def drive(c: Claimed) -> None:
        await write(store, c)
        step = ("s2", '{"n": 2}', 2, c.bookkeeping, c.bookkeeping, (), (), entry, T0 + 2)
        second = store.write_soon(c.id, c.epoch, step)
        if c is claims[-1]:
            pending = store.committer._pending  # what `Committer.run` holds per loop
            waiting.append(len(pending.get(asyncio.get_running_loop(), [])))
        await second

    async def run() -> None:
        await asyncio.gather(*(drive(c) for c in claims))

    asyncio.run(run())
    assert waiting == [n]
    assert set(states(store).values()) == {"s2"}
    assert store.committer.batches == 2


@attrs.define
class Waiter:
    """What `Waking` reads of a committed job."""

    loop: asyncio.AbstractEventLoop | None
    future: asyncio.Future[Any] | None
    done: None = None
    result: Any = None
    error: BaseException | None = None


def test_batches_committed_together_share_their_loops_turns() -> None:
    """Two batches settled before their loop runs, the second with a failed job: one queue,
    oldest first, `TURN` waiters per turn in all (not per batch), every one woken."""
    waking = Waking(lambda _: None)
    seen: list[tuple[int, int]] = []  # waiter, futures done when it ran on

    async def run() -> None:
        loop = asyncio.get_running_loop()
        jobs = [Waiter(loop, loop.create_future(), result=i) for i in range(3 * TURN)]
        jobs[TURN + 1].error = LeaseLost("a", "stale")

        async def waits(job: Waiter) -> None:
            assert job.future is not None
            with contextlib.suppress(LeaseLost):
                await job.future
            seen.append((jobs.index(job), sum(j.future.done() for j in jobs if j.future)))

        tasks = [asyncio.create_task(waits(job)) for job in jobs]
        await asyncio.sleep(0)
        waking.settle(jobs[:TURN])
        waking.settle(jobs[TURN:])
        await asyncio.gather(*tasks)

    asyncio.run(run())
    assert [i for i, _ in seen] == list(range(3 * TURN))
    assert [done for _, done in seen] == [TURN] * TURN + [2 * TURN] * TURN + [3 * TURN] * TURN


def failing(n: int, sqlite: bool) -> Callable[[bool], None]:
    """A statement hook failing the committer thread's ``n``-th statement with a lock
    (SQLite) or a lost connection (PostgreSQL)."""
    count = 0

    def hook(_: bool) -> None:
        nonlocal count
        if threading.current_thread().name != "fsm-committer":
            return
        count += 1
        if count != n:
            return
        if sqlite:
            raise sqlite3.OperationalError("database is locked")
        import psycopg

        raise psycopg.OperationalError("server closed the connection unexpectedly")

    return hook


def test_a_transient_error_of_one_write_fails_that_write_only(store: fsm.Store) -> None:
    """The batch is rolled back; the failing write reports its error, the others are
    written one by one."""
    claims = started(store, ["a", "b", "c"])
    store.hooks = StoreHooks(statement=failing(3, store.is_sqlite))  # BEGIN, a, then b
    results = asyncio.run(together(*(write(store, c) for c in claims)))
    assert results[0] is None and results[2] is None and is_transient(results[1])
    assert states(store) == {"a": "s1", "b": "s0", "c": "s1"}


def test_a_statement_the_server_refuses_mid_pipeline_fails_that_write_only(pg_url: str) -> None:
    """PostgreSQL sends a batch as one pipeline and skips what follows a refused statement:
    the refused one (here a lock timeout: transient) reports its error, the others are
    written one by one, not failed with it."""
    store = fsm.open_store(pg_url + "%20-c%20lock_timeout%3D200")
    claims = started(store, ["a", "b", "c"])
    with psycopg.connect(pg_url) as holder:
        holder.execute("SELECT 1 FROM fsm_action WHERE id = 'b' FOR UPDATE")  # until the end
        results = asyncio.run(together(*(write(store, c) for c in claims)))
    assert results[0] is None and results[2] is None and is_transient(results[1])
    assert "lock" in str(results[1])
    assert states(store) == {"a": "s1", "b": "s0", "c": "s1"}
    store.close()


def test_a_failed_begin_fails_every_write_of_the_batch(store: fsm.Store) -> None:
    claims = started(store, ["a", "b", "c"])
    store.hooks = StoreHooks(statement=failing(1, store.is_sqlite))
    results = asyncio.run(together(*(write(store, c) for c in claims)))
    assert all(is_transient(r) for r in results) and len({id(r) for r in results}) == 1
    assert states(store) == {"a": "s0", "b": "s0", "c": "s0"}


def test_a_failed_commit_fails_every_write_and_writes_none(store: fsm.Store) -> None:
    """BEGIN, a, b, c, then the COMMIT fails: no write is durable, none is repeated (on
    PostgreSQL the batch is one pipeline, whose statements the server ran: rolled back)."""
    claims = started(store, ["a", "b", "c"])
    store.hooks = StoreHooks(statement=failing(5, store.is_sqlite))
    results = asyncio.run(together(*(write(store, c) for c in claims)))
    assert all(is_transient(r) for r in results) and len({id(r) for r in results}) == 1
    assert states(store) == {"a": "s0", "b": "s0", "c": "s0"}
    assert store.transitions() == []


def test_a_failed_batch_backs_off_like_any_failed_write(db_path: Path) -> None:
    """Through the executor: every drive of the failed batch records the failure, keeps its
    checkpoint and waits for its backoff."""
    store = fsm.Store.sqlite(db_path)

    def arm() -> None:  # once every drive is in its step: the next BEGIN fails
        if store.hooks.statement is None:
            store.hooks = StoreHooks(statement=failing(1, True))

    ex: fsm.Executor[Any] = fsm.Executor(store, (Barrier(3), arm), kinds=[Arming])

    async def run() -> list[fsm.DriveResult]:
        for label in "abc":
            await ex.start(Arming(label))
        return list(await asyncio.gather(*(ex.drive(label) for label in "abc")))

    results = asyncio.run(run())
    assert [r.status for r in results] == [fsm.DriveStatus.ERROR] * 3
    rows = store.rows()
    assert {r.state for r in rows} == {"s0"} and all(r.attempts == 1 for r in rows)
    assert all(r.wake_at is not None and r.wake_at > ex.clock() for r in rows)
    store.close()


def test_batches_form_when_drives_are_ready_together(db_path: Path) -> None:
    """Counted through the write points: in a batch, several ``before`` come before the
    ``after`` of the first; every step passes both."""
    passes: list[str] = []
    store = fsm.Store.sqlite(db_path, hooks=StoreHooks(point=passes.append))
    ex: fsm.Executor[Any] = fsm.Executor(store, None, kinds=[Lockstep])

    async def run() -> fsm.ResumeReport:
        for i in range(20):
            await ex.start(Lockstep(f"l{i}"))
        passes.clear()
        return await ex.resume_all(concurrency=20)

    report = asyncio.run(run())
    assert report.count(fsm.DriveStatus.DONE) == 20
    passes[:] = [p for p in passes if not p.startswith(("claim", "unclaim"))]
    befores = [p for p in passes if p.endswith(".before")]
    assert len(befores) == 20 * 3 and len(passes) == 2 * len(befores)
    commits = sum(
        1
        for i, p in enumerate(passes)
        if p.endswith(".after") and (i == 0 or passes[i - 1].endswith(".before"))
    )
    assert commits < len(befores)  # fewer commits than steps
    assert store.committer.batches >= 1
    store.close()


@pytest.mark.slow
@pytest.mark.parametrize("point", ["checkpoint.before", "checkpoint.after"])
def test_a_crash_in_a_batch_leaves_no_step_reported_that_is_not_durable(
    tmp_path: Path, store_url: str, point: str
) -> None:
    """SIGKILL inside the second batch (5 drives' writes): before its commit, or after it
    and before any drive was woken. No drive reported a step of that batch; every step a
    drive reported is in the database; after a restart the steps that were not written run
    again under the same keys, and every action ends. (On PostgreSQL the batch is one
    pipeline: its ``before`` passes come as its statements are queued, none sent yet.)"""
    report, keys, trace = (tmp_path / n for n in ("report", "keys", "trace"))
    db = store_url.removeprefix("sqlite:///")
    store = fsm.open_store(store_url)
    ex: fsm.Executor[Any] = fsm.Executor(store, None, kinds=[Together])

    async def start() -> None:
        for i in range(5):
            await ex.start(Together(f"t{i}"))

    asyncio.run(start())
    env = {"FSM_CRASH": f"{point}:7", "FSM_CRASH_TRACE": str(trace)}
    first = run_child("committer_child.py", db, report, keys, env=env)
    assert died(first), first.stderr
    passes = [p for p in trace.read_text().split() if p.startswith("checkpoint")]
    assert passes[:10] == ["checkpoint.before"] * 5 + ["checkpoint.after"] * 5  # one batch
    told = [line.split() for line in report.read_text().splitlines()]
    assert sorted(told) == [[f"t{i}", "0"] for i in range(5)]  # the first batch only
    durable = states(store)
    written = "s2" if point.endswith("after") else "s1"
    assert durable == {f"t{i}": written for i in range(5)}
    second = run_child("committer_child.py", db, report, keys)
    assert second.returncode == 0, second.stderr
    assert store.live_ids() == []
    ran = keys.read_text().split()
    again = 2 if point.endswith("before") else 1  # the lost step ran twice, under one key
    assert sorted(set(ran)) == sorted(ran[:5] + ran[5:10] + ran[-5:])
    assert {k: ran.count(k) for k in ran[5:10]} == {k: again for k in ran[5:10]}
    store.close()


from committer_child import Barrier, Together  # noqa: E402


class Arming(Together):
    """`Together` whose services are its barrier and a callable run once all are past it."""

    name = "arming"

    async def advance(self, ctx: fsm.StepContext[Any]) -> fsm.Outcome:  # type: ignore[override]
        barrier, arm = ctx.services
        await barrier.wait()
        arm()
        return fsm.Next(attrs.evolve(self, n=self.n + 1))


class Lockstep(Together):
    """`Together` without its barrier: three steps, each awaiting nothing."""

    name = "lockstep"

    async def advance(self, ctx: fsm.StepContext[Any]) -> fsm.Outcome:  # type: ignore[override]
        await asyncio.sleep(0)
        if self.n + 1 >= 3:
            return fsm.Done()
        return fsm.Next(attrs.evolve(self, n=self.n + 1))


def test_the_wal_is_checkpointed_in_the_background(db_path: Path) -> None:
    """SQLite's auto-checkpoint is off (it would stall a commit); the committer's thread
    checkpoints every few hundred writes, so the WAL stays small however much is written."""
    store = fsm.Store.sqlite(db_path)
    assert store.db.execute_sql("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    (c,) = started(store, ["a"])
    for seq in range(1, 2001):  # 2,000 checkpoints of 4 KB: over 16 MB of WAL unchecked
        store.write(
            "a",
            c.epoch,
            state="s1",
            payload=f'{{"n": {seq}, "note": "{"x" * 4000}"}}',
            seq=seq,
            was=c.bookkeeping,
            new=c.bookkeeping,
            acquired=(),
            released=(),
            entry=None,
            now=T0 + seq,
        )
    store.committer.close()
    assert (db_path.parent / (db_path.name + "-wal")).stat().st_size < 8_000_000
    store.close()
