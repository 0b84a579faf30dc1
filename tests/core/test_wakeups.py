"""Wake-ups are never lost, stops are prompt, and old databases upgrade in place (issue 10)."""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any, ClassVar

import attrs
import pytest

import fsm
from fsm import DriveMode, DriveStatus, Kind, State, StepContext


@attrs.frozen
class Job:
    ref: str
    n: int = 0


class World:
    def __init__(self) -> None:
        self.ready = False
        self.during_guard: Any = None
        self.steps = 0
        self.on_step: Any = None


def ready(ctx: StepContext[World], j: Job) -> bool:
    seen = ctx.services.ready
    if ctx.services.during_guard is not None:
        ctx.services.during_guard()  # the event arrives just after the guard looked
    return seen


def count(ctx: StepContext[World], j: Job) -> Job:
    ctx.services.steps += 1
    if ctx.services.on_step is not None:
        ctx.services.on_step(j)
    return attrs.evolve(j, n=j.n + 1)


def more(ctx: StepContext[World], j: Job) -> bool:
    return j.n < 10


class WaitKind(Kind[Job, World]):
    """Waits for a notify only."""

    name = "waiter"
    waiting = State.wait(initial=True)
    done = State.done()
    transitions = (waiting.to(done, guard=ready),)

    @staticmethod
    def action_id(j: Job) -> str:
        return j.ref


class HourlyKind(Kind[Job, World]):
    """Waits for a notify, and polls hourly."""

    name = "hourly"
    hourly = State.wait(initial=True, after=3600)
    done = State.done()
    transitions = (hourly.to(done, guard=ready),)

    @staticmethod
    def action_id(j: Job) -> str:
        return j.ref


KINDS = [WaitKind, HourlyKind]


class LoopKind(Kind[Job, World]):
    name = "looper"
    go = State(initial=True)
    done = State.done()
    transitions = (go.to(go, guard=more, effect=count), go.to(done))

    @staticmethod
    def action_id(j: Job) -> str:
        return j.ref


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.mark.parametrize("kind", [WaitKind, HourlyKind], ids=["notify-only", "hourly"])
def test_a_notify_during_a_drive_is_not_overwritten_by_its_park(
    store: fsm.Store, kind: Any
) -> None:
    world = World()
    ex: fsm.Executor[World] = fsm.Executor(store, world, kinds=KINDS)
    run(ex.start(kind.create(Job("w1"))))
    other: fsm.Executor[World] = fsm.Executor(store, world, kinds=KINDS)

    def event_arrives() -> None:
        world.ready = True
        world.during_guard = None
        busy = run_in_new_loop(other.notify("w1"))
        assert busy.status is DriveStatus.BUSY  # the first driver holds it

    world.during_guard = event_arrives
    parked = run(ex.drive("w1"))
    assert parked.status is DriveStatus.PARKED
    row = store.row("w1")
    assert row is not None and row.wake_at is not None and row.wake_at <= ex.clock()
    # a worker finds it due now, not in an hour (or never)
    due = run(ex.run_due())
    assert due.counts == {DriveStatus.DONE: 1} and due.failures == ()


def run_in_new_loop(coro: Any) -> Any:
    """Another driver's call, made from inside a step (its own event loop, in a thread)."""
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def test_a_park_without_a_notify_keeps_its_wake_up(store: fsm.Store) -> None:
    world = World()
    ex: fsm.Executor[World] = fsm.Executor(store, world, kinds=KINDS)
    run(ex.drive(HourlyKind.create(Job("w2"))))
    row = store.row("w2")
    assert row is not None and row.wake_at is not None and row.wake_at > ex.clock() + 3000


def test_stop_ends_a_drive_after_its_current_step(store: fsm.Store) -> None:
    world = World()
    ex: fsm.Executor[World] = fsm.Executor(store, world, kinds=[LoopKind])

    def stop_at_third(j: Job) -> None:
        if j.n == 2:
            ex.stop()

    world.on_step = stop_at_third
    result = run(ex.drive(LoopKind.create(Job("l1"))))
    assert result.status is DriveStatus.PARKED and result.steps == 3
    assert world.steps == 3
    row = store.row("l1")
    assert row is not None and row.lease_owner is None  # let go, and due at once for others
    assert row.wake_at is not None and row.wake_at <= ex.clock()
    # a fresh executor finishes it
    again: fsm.Executor[World] = fsm.Executor(store, world, kinds=[LoopKind])
    assert run(again.drive("l1")).status is DriveStatus.DONE and world.steps == 10


def test_stop_wakes_a_drive_sleeping_through_a_park(store: fsm.Store) -> None:
    world = World()
    ex: fsm.Executor[World] = fsm.Executor(store, world, kinds=KINDS)

    async def go() -> fsm.DriveResult:
        await ex.start(HourlyKind.create(Job("w3")))
        drive = asyncio.create_task(ex.drive("w3", DriveMode.UNTIL_DONE))
        while "w3" not in ex.naps:  # until it sleeps through its hourly park
            await asyncio.sleep(0)
        ex.stop()
        return await drive

    result = run(go())
    assert result.status is DriveStatus.PARKED
    row = store.row("w3")
    assert row is not None and row.lease_owner is None and row.wake_at is not None


def test_a_notify_wakes_a_drive_of_the_same_executor_sleeping_through_a_park(
    store: fsm.Store,
) -> None:
    world = World()
    ex: fsm.Executor[World] = fsm.Executor(store, world, kinds=KINDS)

    async def go() -> tuple[fsm.DriveResult, fsm.DriveResult]:
        await ex.start(HourlyKind.create(Job("w4")))
        drive = asyncio.create_task(ex.drive("w4", DriveMode.UNTIL_DONE))
        while "w4" not in ex.naps:
            await asyncio.sleep(0)
        world.ready = True
        busy = await ex.notify("w4")
        return busy, await drive

    busy, result = run(go())
    assert busy.status is DriveStatus.BUSY and result.status is DriveStatus.DONE


@attrs.frozen
class Napper(fsm.Action[None]):
    """Parks for an hour, then for a millisecond, then ends; remembers every action object
    it parks with."""

    name = "napper"
    key: str
    n: int = 0
    parked: ClassVar[list[weakref.ref[Napper]]] = []
    keys: ClassVar[list[str]] = []

    @property
    def id(self) -> str:
        return self.key

    @property
    def state(self) -> str:
        return "napping"

    def advance(self, ctx: StepContext[None]) -> fsm.Outcome:
        Napper.keys.append(ctx.idempotency_key)
        if self.n == 2:
            return fsm.Done("rested")
        then = attrs.evolve(self, n=self.n + 1)
        Napper.parked.append(weakref.ref(then))
        return fsm.Park(then, wake_after=3600.0 if self.n == 0 else 0.001)


def test_a_drive_asleep_in_a_park_holds_no_action_and_wakes_to_its_checkpoint(
    store: fsm.Store,
) -> None:
    """What a nap lets go of, the drive rebuilds: it goes on from the checkpoint it wrote,
    under the keys it would have used, and ends as before."""
    Napper.parked.clear()
    Napper.keys.clear()
    ex: fsm.Executor[None] = fsm.Executor(store, kinds=[Napper])

    async def go() -> fsm.DriveResult:
        drive = asyncio.create_task(ex.drive(Napper("n1"), DriveMode.UNTIL_DONE))
        while "n1" not in ex.naps:
            await asyncio.sleep(0)
        gc.collect()
        # the action it parked with is written, then let go of through the nap
        assert [ref() for ref in Napper.parked] == [None]
        assert ex.driving == frozenset({"n1"})
        ex.naps.wake("n1")  # the hour's nap ends early; the millisecond's by its timer
        return await drive

    result = run(go())
    assert result.status is DriveStatus.DONE and result.state == "rested" and result.steps == 3
    assert [key.rsplit(".", 1)[1] for key in Napper.keys] == ["0", "1", "2"]  # as ever
    assert "n1" not in ex.naps and ex.driving == frozenset()
    assert store.row("n1") is None


def test_a_drive_cancelled_in_its_nap_lets_go_of_its_lease_and_its_nap(store: fsm.Store) -> None:
    world = World()
    ex: fsm.Executor[World] = fsm.Executor(store, world, kinds=KINDS)

    async def go() -> None:
        await ex.start(HourlyKind.create(Job("w5")))
        drive = asyncio.create_task(ex.drive("w5", DriveMode.UNTIL_DONE))
        while "w5" not in ex.naps:
            await asyncio.sleep(0)
        drive.cancel()
        with pytest.raises(asyncio.CancelledError):
            await drive

    run(go())
    assert "w5" not in ex.naps and ex.driving == frozenset()
    row = store.row("w5")
    assert row is not None and row.lease_owner is None  # let go at once, not at expiry
    assert row.wake_at is not None and row.wake_at > ex.clock() + 3000  # its park stands


def test_a_v1_database_is_upgraded_in_place_and_keeps_its_keys(store_url: str) -> None:
    """Rows written before incarnations existed keep their ``<id>.<seq>`` keys."""
    store = fsm.open_store(store_url)
    world = World()
    ex: fsm.Executor[World] = fsm.Executor(store, world, kinds=[LoopKind])
    run(ex.start(LoopKind.create(Job("old"))))
    if store.is_sqlite:  # SQLite's end trigger (v4) reads v2's columns
        store.db.execute_sql("DROP TRIGGER fsm_action_end")
        store.db.execute_sql("DROP TRIGGER fsm_child_end")  # v6's, reads v2's incarnation
    store.db.execute_sql("DROP INDEX fsm_action_trouble")  # v5's, reads v2's broken
    for column in ("incarnation", "cause", "broken", "notified"):
        store.db.execute_sql(f"ALTER TABLE fsm_action DROP COLUMN {column}")
    store.db.execute_sql("DROP TABLE fsm_outcome")
    store.db.execute_sql("UPDATE fsm_meta SET value = '1' WHERE key = 'schema_version'")
    store.close()

    upgraded = fsm.open_store(store_url)
    assert upgraded.schema_version == fsm.store.SCHEMA_VERSION
    keys: list[str] = []
    world.on_step = lambda j: None
    ex2: fsm.Executor[World] = fsm.Executor(upgraded, world, kinds=[LoopKind])

    def record(ctx: StepContext[World], j: Job) -> bool:
        keys.append(ctx.idempotency_key)
        return j.n < 2

    class Recording(LoopKind):
        name = "recording"
        go = State(initial=True)
        done = State.done()
        transitions = (go.to(go, guard=record, effect=count), go.to(done))

    upgraded.db.execute_sql("UPDATE fsm_action SET kind = 'recording' WHERE id = 'old'")
    ex2.registry.register(Recording)
    assert run(ex2.drive("old")).status is DriveStatus.DONE
    assert keys[:2] == ["old.0", "old.1"]
    assert upgraded.outcome("old") is not None
    upgraded.close()
