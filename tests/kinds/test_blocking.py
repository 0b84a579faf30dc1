"""Blocking callbacks (``blocking = True``): they run on the executor's thread pool.

Overlap is proven with `threading.Barrier`s, never with timings: a barrier of n only opens
when n callbacks are inside at once, so serialised callbacks break it (its timeout is there
only to fail the test instead of hanging it, not a speed limit).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import attrs
import pytest

import fsm
from fsm import DriveStatus, Kind, State, StepContext
from fsm.blocking import BlockingPool

HANG_LIMIT = 30.0
"""Seconds a barrier waits before it breaks and fails the test (serialised callbacks)."""


@attrs.frozen
class Job:
    job_id: str
    note: str = ""


class Probe:
    """The services: what a test wants its callbacks to do, and what they saw."""

    def __init__(self, barrier: threading.Barrier | None = None) -> None:
        self.barrier = barrier
        self.threads: list[tuple[str, int]] = []
        self.lock = threading.Lock()
        self.inside = 0
        self.peak = 0
        self.raises: BaseException | None = None

    def enter(self, what: str) -> None:
        with self.lock:
            self.threads.append((what, threading.get_ident()))
            self.inside += 1
            self.peak = max(self.peak, self.inside)
        try:
            if self.barrier is not None:
                self.barrier.wait(HANG_LIMIT)
        finally:
            with self.lock:
                self.inside -= 1
        if self.raises is not None:
            raise self.raises


def work(ctx: StepContext[Probe], j: Job) -> Job:
    ctx.services.enter("work")
    return attrs.evolve(j, note="worked")


def check(ctx: StepContext[Probe], j: Job) -> bool:
    ctx.services.enter("check")
    return True


async def awork(ctx: StepContext[Probe], j: Job) -> Job:
    ctx.services.threads.append(("awork", threading.get_ident()))
    return j


def refused(ctx: StepContext[Probe], j: Job, error: BaseException) -> fsm.Outcome:
    ctx.services.threads.append(("refused", threading.get_ident()))
    return BlockingKind.goto(attrs.evolve(j, note=str(error)), BlockingKind.gave_up)


class BlockingKind(Kind[Job, Probe]):
    name = "blocking_job"
    blocking = True

    start = State.wait(initial=True)
    working = State(blocking=False)  # its own say wins over the kind's
    finishing = State()
    done = State.done()
    gave_up = State.failed()

    transitions = (
        start.to(working, guard=check, effect=work),
        working.to(finishing, effect=work),
        finishing.to(done, effect=awork),
        start.rejected(handler=refused, to=(gave_up,)),
    )

    @staticmethod
    def action_id(j: Job) -> str:
        return j.job_id


def one_step(blocking: bool | None, effect: Any = work, **kind: Any) -> type[Kind[Job, Probe]]:
    class OneStep(Kind[Job, Probe]):
        name = "one_step"
        a = State(initial=True, blocking=blocking, **kind)
        end = State.done()
        stopped = State.failed()
        transitions = (a.to(end, effect=effect), a.rejected(to=stopped))

        @staticmethod
        def action_id(j: Job) -> str:
            return j.job_id

    return OneStep


async def drive_all(ex: fsm.Executor[Probe], kind: Any, n: int) -> list[fsm.DriveResult]:
    jobs = [kind.create(Job(f"j{i}")) for i in range(n)]
    return list(await asyncio.gather(*(ex.drive(j) for j in jobs)))  # a broken barrier parks


def test_four_blocking_effects_at_concurrency_four_run_at_once(store: fsm.Store) -> None:
    probe = Probe(threading.Barrier(4))
    kind = one_step(True)
    ex: fsm.Executor[Probe] = fsm.Executor(store, probe, kinds=[kind])
    results = asyncio.run(drive_all(ex, kind, 4))
    assert [r.status for r in results] == [DriveStatus.DONE] * 4  # the barrier did not break
    assert probe.peak == 4


def test_the_pool_bounds_how_many_blocking_callbacks_run_at_once(store: fsm.Store) -> None:
    probe = Probe(threading.Barrier(2))  # pairs: at least two at once, the pool allows no third
    kind = one_step(True)
    ex: fsm.Executor[Probe] = fsm.Executor(store, probe, kinds=[kind], blocking_threads=2)
    results = asyncio.run(drive_all(ex, kind, 6))
    assert [r.status for r in results] == [DriveStatus.DONE] * 6
    assert probe.peak == 2
    assert len({ident for _, ident in probe.threads}) == 2


def test_sync_callbacks_run_on_the_loop_thread_unless_their_state_blocks(
    store: fsm.Store,
) -> None:
    probe = Probe()
    ex: fsm.Executor[Probe] = fsm.Executor(store, probe, kinds=[BlockingKind])

    async def go() -> tuple[fsm.DriveResult, int]:
        return await ex.drive(BlockingKind.create(Job("k1"))), threading.get_ident()

    result, loop_thread = asyncio.run(go())
    assert result.status is DriveStatus.DONE
    seen = dict(probe.threads[:2])  # start's guard and effect (inherited from the kind)
    assert seen["check"] != loop_thread and seen["work"] != loop_thread
    assert probe.threads[2] == ("work", loop_thread)  # working: blocking=False
    assert probe.threads[3] == ("awork", loop_thread)  # async callbacks stay on the loop


def test_a_plain_kind_runs_its_sync_callbacks_on_the_loop_thread(store: fsm.Store) -> None:
    probe = Probe()
    kind = one_step(None)
    ex: fsm.Executor[Probe] = fsm.Executor(store, probe, kinds=[kind])

    async def go() -> int:
        await ex.drive(kind.create(Job("p1")))
        return threading.get_ident()

    loop_thread = asyncio.run(go())
    assert probe.threads == [("work", loop_thread)]


@pytest.mark.parametrize(
    ("error", "status", "state"),
    [
        (fsm.Rejected("no"), DriveStatus.FAILED, "stopped"),  # the rejection route
        (TypeError("bug"), DriveStatus.BROKEN, "a"),  # a bug of the kind
        (OSError("flaky"), DriveStatus.PARKED, "a"),  # transient: backoff
    ],
)
def test_errors_of_a_blocking_callback_are_classified_as_on_the_loop(
    store: fsm.Store, error: BaseException, status: DriveStatus, state: str
) -> None:
    probe = Probe()
    probe.raises = error
    kind = one_step(True)
    ex: fsm.Executor[Probe] = fsm.Executor(store, probe, kinds=[kind])
    result = asyncio.run(ex.drive(kind.create(Job("e1"))))
    assert (result.status, result.state) == (status, state)
    row = store.row("e1")
    if status is DriveStatus.PARKED:
        assert row is not None and row.attempts == 1 and not row.broken
    if status is DriveStatus.BROKEN:
        assert row is not None and row.broken and "TypeError" in (row.last_error or "")


def test_a_blocking_rejection_handler_runs_on_a_thread(store: fsm.Store) -> None:
    probe = Probe()
    probe.raises = fsm.Rejected("refused")
    ex: fsm.Executor[Probe] = fsm.Executor(store, probe, kinds=[BlockingKind])

    async def go() -> tuple[fsm.DriveResult, int]:
        return await ex.drive(BlockingKind.create(Job("r1"))), threading.get_ident()

    result, loop_thread = asyncio.run(go())
    assert (result.status, result.state) == (DriveStatus.FAILED, "gave_up")
    handler = [ident for what, ident in probe.threads if what == "refused"]
    assert handler and handler[0] != loop_thread


def test_a_timed_out_blocking_effect_is_a_step_timeout_and_its_late_result_never_written(
    store: fsm.Store,
) -> None:
    gate, returned = threading.Event(), threading.Event()

    def hangs(ctx: StepContext[Probe], j: Job) -> Job:
        if not gate.wait(HANG_LIMIT):
            raise AssertionError("the test never released the blocked effect")
        returned.set()
        return attrs.evolve(j, note="late")

    kind = one_step(True, effect=hangs, step_timeout=0.05)
    ex: fsm.Executor[Probe] = fsm.Executor(store, Probe(), kinds=[kind])

    async def go() -> fsm.DriveResult:
        first = await ex.drive(kind.create(Job("t1")))
        gate.set()  # the abandoned thread now returns its result ...
        await asyncio.get_running_loop().run_in_executor(None, returned.wait, HANG_LIMIT)
        for _ in range(5):
            await asyncio.sleep(0)  # ... and the loop gets to see it (and drops it)
        return first

    first = asyncio.run(go())
    assert first.status is DriveStatus.PARKED
    row = store.row("t1")
    assert row is not None and row.state == "a" and row.attempts == 1 and row.lease_owner is None
    assert "StepTimeout" in (row.last_error or "")
    assert "late" not in store.payload_of("t1")
    again = asyncio.run(ex.drive("t1"))  # the gate is open: the retry goes through
    assert again.status is DriveStatus.DONE


# -- hand-written actions ------------------------------------------------------------------


@attrs.frozen
class Manual(fsm.Action[Probe]):
    name = "manual_blocking"
    blocking = True
    job_id: str

    @property
    def id(self) -> str:
        return self.job_id

    def advance(self, ctx: StepContext[Probe]) -> fsm.Outcome:
        ctx.services.enter("advance")
        return fsm.Done()

    def on_rejection(self, ctx: StepContext[Probe], error: fsm.Rejected) -> fsm.Outcome:
        ctx.services.threads.append(("on_rejection", threading.get_ident()))
        return fsm.Failed(error)


def test_a_blocking_hand_written_action_advances_on_the_pool(store: fsm.Store) -> None:
    probe = Probe(threading.Barrier(3))
    ex: fsm.Executor[Probe] = fsm.Executor(store, probe, kinds=[Manual])

    async def go() -> list[fsm.DriveResult]:
        return list(await asyncio.gather(*(ex.drive(Manual(f"m{i}")) for i in range(3))))

    assert [r.status for r in asyncio.run(go())] == [DriveStatus.DONE] * 3
    assert probe.peak == 3


def test_a_blocking_hand_written_action_handles_its_rejection_on_the_pool(
    store: fsm.Store,
) -> None:
    probe = Probe()
    probe.raises = fsm.Rejected("no")
    ex: fsm.Executor[Probe] = fsm.Executor(store, probe, kinds=[Manual])

    async def go() -> tuple[fsm.DriveResult, int]:
        return await ex.drive(Manual("m9")), threading.get_ident()

    result, loop_thread = asyncio.run(go())
    assert result.status is DriveStatus.FAILED
    assert [w for w, i in probe.threads if i != loop_thread] == ["advance", "on_rejection"]


def test_a_data_field_named_blocking_does_not_send_an_action_to_a_thread(
    store: fsm.Store,
) -> None:
    @attrs.frozen
    class Field(fsm.Action[Any]):
        name = "field_blocking"
        blocking: bool  # a field, not the class's say
        ident: int = 0

        @property
        def id(self) -> str:
            return "f1"

        def advance(self, ctx: StepContext[Any]) -> fsm.Outcome:
            ctx.services.append(threading.get_ident())
            return fsm.Done()

    seen: list[int] = []
    ex: fsm.Executor[Any] = fsm.Executor(store, seen, kinds=[Field])

    async def go() -> int:
        await ex.drive(Field(True))
        return threading.get_ident()

    loop_thread = asyncio.run(go())
    assert seen == [loop_thread]


def test_the_pool_refuses_a_bound_below_one() -> None:
    for bad in (0, -1, True, 2.5):
        with pytest.raises(ValueError, match="blocking_threads"):
            BlockingPool(bad)  # type: ignore[arg-type]


# -- definition-time checks ----------------------------------------------------------------


def test_a_non_bool_blocking_is_a_definition_error() -> None:
    with pytest.raises(fsm.DefinitionError, match=r"state 'a': blocking is 'yes'. Fix: use True"):
        one_step("yes")  # type: ignore[arg-type]
    with pytest.raises(fsm.DefinitionError, match=r"\(Flagged\): blocking is 1. Fix: use True"):

        class Flagged(Kind[Job, Probe]):
            name = "flagged"
            blocking = 1  # type: ignore[assignment]
            a = State(initial=True)
            end = State.done()
            transitions = (a.to(end, effect=work),)

            @staticmethod
            def action_id(j: Job) -> str:
                return j.job_id


def test_blocking_on_a_state_whose_callbacks_are_all_async_is_a_definition_error() -> None:
    with pytest.raises(fsm.DefinitionError) as err:
        one_step(True, effect=awork)
    text = str(err.value)
    assert "state 'a': `blocking=True` has no effect: its callbacks (awork) are all async" in text
    assert "Fix: drop `blocking=True`" in text


def test_a_blocking_kind_with_no_sync_callback_is_a_definition_error() -> None:
    with pytest.raises(fsm.DefinitionError, match="no state of the kind has a synchronous"):

        class AllAsync(Kind[Job, Probe]):
            name = "all_async"
            blocking = True
            a = State(initial=True)
            end = State.done()
            transitions = (a.to(end, effect=awork),)

            @staticmethod
            def action_id(j: Job) -> str:
                return j.job_id


def test_a_state_inherits_the_kinds_blocking_and_may_refuse_it() -> None:
    states = BlockingKind.__fsm_compiled__.states
    assert states["start"].blocking and states["start"].handler_blocks
    assert not states["working"].blocking  # blocking=False
    assert not states["finishing"].blocking  # only async callbacks: nothing to send
    assert not one_step(None).__fsm_compiled__.states["a"].blocking


def test_a_state_named_blocking_is_refused() -> None:
    with pytest.raises(fsm.DefinitionError, match="state 'blocking': this name is taken"):

        class Named(Kind[Job, Probe]):
            name = "named"
            blocking = State(initial=True)  # type: ignore[assignment]
            end = State.done()
            transitions = (blocking.to(end),)

            @staticmethod
            def action_id(j: Job) -> str:
                return j.job_id
