"""Each control racing a running driver: it refuses, or waits, and never writes beside a step.

A driver holds the action's lease for the whole of a step; a control takes that lease like a
driver would, so while a step runs it finds the action busy (`fsm.ActionBusy`), or, with
``wait``, tries again with backoff and acts on the checkpoint the driver left. Notify is the
exception: it lands at once, and the driver's own park leaves the action due. The driver is
a concurrent drive of this process, or a real driver process (`control_child.py`), on SQLite
and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from control_kinds import Booking, BookingKind, Desk
from processes import REPO, child_env, died, spawn_child

import fsm
from fsm import DriveStatus
from fsm.executor.controls import VIAS

LEASED = ("retry", "stop", "unquarantine")
"""The controls written under the lease that a drive holding it refuses (all but notify, and
cancel, which is queued then: see the tests of a queued cancel below)."""


def act(ops: fsm.Controls, control: str, action_id: str, wait: float = 0.0) -> fsm.Controlled:
    if control == "notify":
        return ops.notify(action_id, by="ops")
    if control == "cancel":
        return ops.cancel(action_id, reason="customer asked", by="ops", wait=wait)
    method = getattr(ops, control)
    result: fsm.Controlled = method(action_id, by="ops", wait=wait)
    return result


def vias(store: fsm.Store, action_id: str) -> list[str]:
    return [t.via for t in store.transitions(action_id)]


class Tried:
    """A control's ``sleep`` that says when the control first found the action busy."""

    def __init__(self) -> None:
        self.busy = threading.Event()
        self.pause = threading.Event()

    def sleep(self, seconds: float) -> None:
        self.busy.set()
        self.pause.wait(seconds)  # a real pause; the test never sets it


def gated(store: fsm.Store) -> tuple[fsm.Executor[Any], Desk]:
    desk = Desk()
    desk.gate = asyncio.Event()
    return fsm.Executor(store, desk, kinds=[BookingKind]), desk


# -- a concurrent drive in this process ----------------------------------------------------


@pytest.mark.parametrize("control", LEASED)
def test_a_control_refuses_while_a_drive_is_mid_step(store: fsm.Store, control: str) -> None:
    ex, desk = gated(store)
    ops = fsm.Controls(store, kinds=[BookingKind])

    async def race() -> fsm.DriveResult:
        driving = asyncio.create_task(ex.drive(BookingKind.create(Booking("1"))))
        await desk.entered.wait()  # the step runs: the drive holds the lease
        before = store.checkpoint("booking-1")
        with pytest.raises(fsm.ActionBusy, match="is being driven by"):
            act(ops, control, "booking-1")
        assert store.checkpoint("booking-1") == before
        assert desk.gate is not None
        desk.gate.set()
        return await driving

    result = asyncio.run(race())
    assert (result.status, result.state) == (DriveStatus.PARKED, "held")  # not LEASE_LOST
    assert vias(store, "booking-1") == ["step", "step"]  # the control wrote nothing


def test_a_cancel_during_a_step_is_queued_and_taken_at_the_next_boundary(
    store: fsm.Store,
) -> None:
    """The executor's own controls queue a cancel for the action its drive holds; the drive
    takes it at its next step boundary, through the cancel route of the state it reached
    (``held`` -> ``releasing``), and the cancel's reason is the end's cause."""
    ex, desk = gated(store)

    async def race() -> fsm.DriveResult:
        driving = asyncio.create_task(ex.drive(BookingKind.create(Booking("1"))))
        await desk.entered.wait()
        queued = act(ex.controls, "cancel", "booking-1")
        assert (queued.outcome, queued.state) == ("queued", "reserving")
        assert desk.gate is not None
        desk.gate.set()
        return await driving

    result = asyncio.run(race())
    assert (result.status, result.state) == (DriveStatus.FAILED, "cancelled")
    assert result.cause == "cancelled by ops: customer asked"
    assert vias(store, "booking-1") == ["step", "cancel", "step"]
    assert [c[0] for c in desk.calls] == ["hold", "give_back"]  # the compensation ran
    kept = store.outcome("booking-1")
    assert kept is not None and kept.cause == "cancelled by ops: customer asked"
    assert store.pending_events("booking-1") == []


def test_a_cancel_queued_by_another_process_is_taken_at_the_next_claim(
    store: fsm.Store,
) -> None:
    """Controls of another process cannot tell the drive: the cancel waits in the inbox,
    the drive parks as usual, and the next claim (a worker's) takes it first thing."""
    ex, desk = gated(store)
    ops = fsm.Controls(store, kinds=[BookingKind])

    async def race() -> fsm.DriveResult:
        driving = asyncio.create_task(ex.drive(BookingKind.create(Booking("1"))))
        await desk.entered.wait()
        assert act(ops, "cancel", "booking-1").outcome == "queued"
        assert act(ops, "cancel", "booking-1").outcome == "queued"  # the same cancel: one event
        assert desk.gate is not None
        desk.gate.set()
        return await driving

    parked = asyncio.run(race())
    assert (parked.status, parked.state) == (DriveStatus.PARKED, "held")
    assert [e.name for e in store.pending_events("booking-1")] == ["fsm.Cancel"]
    report = asyncio.run(ex.run_due())  # the park left it due (the cancel notified it)
    assert report.counts == {DriveStatus.FAILED: 1}
    kept = store.outcome("booking-1")
    assert kept is not None and (kept.state, kept.cause) == (
        "cancelled",
        "cancelled by ops: customer asked",
    )
    assert vias(store, "booking-1") == ["step", "step", "cancel", "step"]


def test_a_cancel_from_elsewhere_heard_at_a_lease_renewal_is_taken_at_the_next_boundary(
    store: fsm.Store,
) -> None:
    """A worker reads the inbox counts of what it drives with each lease renewal
    (`Executor.hear`): a cancel queued by another process then reaches the running drive,
    which takes it at its next step boundary instead of at its next claim."""
    ex, desk = gated(store)
    ops = fsm.Controls(store, kinds=[BookingKind])

    async def race() -> fsm.DriveResult:
        driving = asyncio.create_task(ex.drive(BookingKind.create(Booking("1"))))
        await desk.entered.wait()
        assert act(ops, "cancel", "booking-1").outcome == "queued"
        ex.hear(store.inbox_counts(ex.driving))  # what the worker's renewal does
        assert desk.gate is not None
        desk.gate.set()
        return await driving

    result = asyncio.run(race())
    assert (result.status, result.state) == (DriveStatus.FAILED, "cancelled")
    assert vias(store, "booking-1") == ["step", "cancel", "step"]


@pytest.mark.parametrize("control", LEASED)
def test_the_executors_own_controls_see_its_drive_as_busy(store: fsm.Store, control: str) -> None:
    """The executor's controls claim with its own owner token, which a claim may take again:
    they must not act on an action that executor is driving."""
    ex, desk = gated(store)

    async def race() -> fsm.DriveResult:
        driving = asyncio.create_task(ex.drive(BookingKind.create(Booking("1"))))
        await desk.entered.wait()
        with pytest.raises(fsm.ActionBusy):
            act(ex.controls, control, "booking-1")
        assert desk.gate is not None
        desk.gate.set()
        return await driving

    assert asyncio.run(race()).status is DriveStatus.PARKED


def test_a_notify_during_a_step_is_kept_by_the_drives_park(store: fsm.Store) -> None:
    ex, desk = gated(store)
    ops = fsm.Controls(store)

    async def race() -> fsm.DriveResult:
        driving = asyncio.create_task(ex.drive(BookingKind.create(Booking("1"))))
        await desk.entered.wait()
        assert ops.notify("booking-1", by="crm").outcome == "due"
        assert desk.gate is not None
        desk.gate.set()
        return await driving

    result = asyncio.run(race())
    assert (result.status, result.state) == (DriveStatus.PARKED, "held")
    row = store.row("booking-1")
    assert row is not None and row.wake_at is not None  # held waits for a notify: it came
    assert store.due_ids(store.now()) == ["booking-1"]
    assert vias(store, "booking-1") == ["notify", "step", "step"]


@pytest.mark.parametrize("control", ("retry", "cancel", "stop"))
def test_a_waiting_control_acts_after_the_step_never_beside_it(
    store: fsm.Store, control: str
) -> None:
    ex, desk = gated(store)
    tried = Tried()
    ops = fsm.Controls(store, kinds=[BookingKind], sleep=tried.sleep)

    def acting() -> fsm.Controlled:
        try:
            return act(ops, control, "booking-1", wait=3600)
        finally:
            tried.busy.set()  # a control that did not wait must not hang the test

    async def race() -> tuple[fsm.DriveResult, fsm.Controlled]:
        driving = asyncio.create_task(ex.drive(BookingKind.create(Booking("1"))))
        await desk.entered.wait()
        done = asyncio.create_task(asyncio.to_thread(acting))
        await asyncio.to_thread(tried.busy.wait)  # the control found the step running
        assert not done.done()
        assert desk.gate is not None
        desk.gate.set()
        return await driving, await done

    result, done = asyncio.run(race())
    assert (result.status, result.state) == (DriveStatus.PARKED, "held")  # not LEASE_LOST
    assert done.state == "held"  # it acted on the checkpoint the drive left
    assert vias(store, "booking-1") == ["step", "step", VIAS[control]]


# -- a real driver process -----------------------------------------------------------------


@pytest.mark.slow
def test_controls_racing_a_driver_process(store_url: str) -> None:
    store = fsm.open_store(store_url)
    ex: fsm.Executor[Any] = fsm.Executor(store, Desk(), kinds=[BookingKind])
    asyncio.run(ex.start(BookingKind.create(Booking("1"))))
    child = spawn_child("control_child.py", store_url, "booking-1", talk=True)
    assert child.stdin is not None and child.stdout is not None
    try:
        assert child.stdout.readline().strip() == "stepping"  # mid-step, holding the lease
        row = store.row("booking-1")
        assert row is not None and row.lease_owner is not None
        ops = fsm.Controls(store, kinds=[BookingKind])
        before = store.checkpoint("booking-1")
        for control in LEASED:
            with pytest.raises(fsm.ActionBusy):
                act(ops, control, "booking-1")
        assert store.checkpoint("booking-1") == before
        assert act(ops, "notify", "booking-1").outcome == "due"  # lands at once

        tried = Tried()
        waiting = fsm.Controls(store, kinds=[BookingKind], sleep=tried.sleep)
        outcome: list[fsm.Controlled | BaseException] = []

        def cancel() -> None:
            try:
                outcome.append(act(waiting, "cancel", "booking-1", wait=3600))
            except BaseException as exc:
                outcome.append(exc)
            finally:
                tried.busy.set()

        thread = threading.Thread(target=cancel)
        thread.start()
        tried.busy.wait()
        assert not outcome  # still waiting for the driver
        child.stdin.write("\n")
        child.stdin.close()
        assert child.stdout.readline().split() == ["parked", "held"]  # its writes all landed
        thread.join()
    finally:
        child.wait(timeout=120)
    assert child.returncode == 0, child.stderr.read() if child.stderr else ""
    (done,) = outcome
    assert isinstance(done, fsm.Controlled), done
    assert (done.state, done.to_state) == ("held", "releasing")
    assert vias(store, "booking-1") == ["notify", "step", "step", "cancel"]
    store.close()


# -- a control process killed at its write -------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["before", "after"])
def test_a_control_killed_at_its_write_leaves_all_of_it_or_none(store_url: str, phase: str) -> None:
    """``fsm actions cancel`` SIGKILLed right before its fenced write (nothing of the cancel
    is written; its lease, of a certainly dead owner, is taken over at once) or right after
    it committed (the whole cancel is there: route, cause, log row, lease let go)."""
    store = fsm.open_store(store_url, lease_ttl=3600)
    desk = Desk()
    ex: fsm.Executor[Any] = fsm.Executor(store, desk, kinds=[BookingKind])
    assert asyncio.run(ex.drive(BookingKind.create(Booking("1")))).state == "held"
    argv = [sys.executable, "-m", "fsm", "actions", "cancel", "booking-1", "--db", store_url]
    argv += ["--reason", "customer asked", "--module", "control_kinds"]
    env = child_env({"FSM_CRASH": f"control.{phase}:1"})
    proc = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert died(proc), proc.stderr

    row = store.row("booking-1")
    assert row is not None
    if phase == "before":
        assert (row.state, row.cause) == ("held", None)
        assert vias(store, "booking-1") == ["step", "step"]
        assert row.lease_owner is not None  # the dead control's lease: taken over at once
        desk.confirmed = True
        assert asyncio.run(ex.drive("booking-1")).status is DriveStatus.DONE
    else:
        assert (row.state, row.lease_owner) == ("releasing", None)
        assert row.cause is not None and row.cause.endswith(": customer asked")
        assert vias(store, "booking-1") == ["step", "step", "cancel"]
        result = asyncio.run(ex.run_due(keep_results=True)).results[0]
        assert (result.status, result.state) == (DriveStatus.FAILED, "cancelled")
    store.close()


@pytest.mark.parametrize(
    ("plan", "status", "state"),
    [
        ("route", DriveStatus.FAILED, "refunded"),  # through refunding, then its own end
        ("fail", DriveStatus.FAILED, "closed"),
        ("none", DriveStatus.PARKED, "open"),  # no route: the cancel stays queued
        ("raise", DriveStatus.BROKEN, "open"),  # the kind's bug: parked as broken
        ("other", DriveStatus.BROKEN, "open"),  # a route that changes the id: refused
    ],
)
def test_a_queued_cancel_of_a_hand_written_action_takes_its_on_cancel(
    store: fsm.Store, plan: str, status: DriveStatus, state: str
) -> None:
    """A cancel queued while another driver held the action is taken by the next drive
    through ``on_cancel``; what the hook does wrong parks the action as broken (with its
    reason), as a step's bug does, instead of escaping the drive."""
    from control_kinds import Pass

    ex = fsm.Executor(store, kinds=[Pass])
    asyncio.run(ex.drive(Pass("p-1", plan=plan)))
    other = store.claim("p-1", "someone-else:1:1:1", time.time())
    assert isinstance(other, fsm.store.Claimed)
    ops = fsm.Controls(store, kinds=[Pass])
    queued = ops.cancel("p-1", reason="closing", by="ops")
    if plan == "none":
        assert queued.outcome == "queued"
    store.unclaim("p-1", other.epoch)
    result = asyncio.run(ex.drive("p-1"))
    assert (result.status, result.state) == (status, state), result
    if status is DriveStatus.BROKEN:
        row = store.row("p-1")
        assert row is not None and row.broken and row.last_error is not None
        assert (
            ("refund" in row.last_error) if plan == "raise" else ("class and id" in row.last_error)
        )
    if plan == "none":
        assert [e.name for e in store.pending_events("p-1")] == ["fsm.Cancel"]
