"""The operator's controls (`fsm.Controls`): what each writes, on SQLite and PostgreSQL.

Each control is a claim, one fenced write that also logs it and lets go of the lease, like a
step; the races with a running driver are in ``test_control_races.py``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from control_kinds import Booking, BookingKind, Desk, Pass

import fsm
from fsm import DriveStatus
from fsm.store import Claimed, LogEntry, StoreHooks
from fsm.store.controls import Taken


def make(store: fsm.Store, desk: Desk | None = None) -> tuple[fsm.Executor[Any], Desk]:
    desk = desk if desk is not None else Desk()
    return fsm.Executor(store, desk, kinds=[BookingKind, Pass]), desk


def controls(store: fsm.Store) -> fsm.Controls:
    """An operator's controls, as another process has them (its own lease owner)."""
    return fsm.Controls(store, kinds=[BookingKind, Pass])


def booked(store: fsm.Store, ref: str = "1", desk: Desk | None = None) -> tuple[str, Desk]:
    """A booking driven until it waits in ``held`` for a confirmation."""
    ex, desk = make(store, desk)
    result = asyncio.run(ex.drive(BookingKind.create(Booking(ref))))
    assert result.status is DriveStatus.PARKED and result.state == "held"
    return f"booking-{ref}", desk


def history(store: fsm.Store, action_id: str) -> list[tuple[str, str | None, str, str]]:
    return [(t.from_state, t.to_state, t.outcome, t.via) for t in store.transitions(action_id)]


def row(store: fsm.Store, action_id: str) -> fsm.store.RowInfo:
    found = store.row(action_id)
    assert found is not None
    return found


# -- retry ---------------------------------------------------------------------------------


def test_retry_wakes_a_broken_action_under_the_same_key(store: fsm.Store) -> None:
    desk = Desk()
    desk.fault = TypeError("a bug in the kind")
    ex, _ = make(store, desk)
    assert asyncio.run(ex.drive(BookingKind.create(Booking("1")))).status is DriveStatus.BROKEN
    broken = row(store, "booking-1")
    assert broken.broken and broken.wake_at is None

    done = controls(store).retry("booking-1", by="ops", reason="fix deployed")

    assert (done.control, done.state, done.outcome) == ("retry", "reserving", "due")
    assert done.note == "retried by ops: fix deployed"
    after = row(store, "booking-1")
    assert not after.broken and after.wake_at is not None and after.lease_owner is None
    assert store.due_ids(store.now()) == ["booking-1"]
    last = store.transitions("booking-1")[-1]
    assert (last.via, last.outcome, last.error) == (
        "retry_now",
        "due",
        "retried by ops: fix deployed",
    )
    desk.fault = None  # the fix
    assert asyncio.run(ex.run_due(keep_results=True)).results[0].state == "held"
    keys = [key for what, key in desk.calls if what == "hold"]
    assert len(keys) == 2 and keys[0] == keys[1]  # the step ran again under its key


def test_retry_can_reset_the_attempts(store: fsm.Store) -> None:
    desk = Desk()
    desk.fault = OSError("seat service down")
    ex, _ = make(store, desk)
    asyncio.run(ex.drive(BookingKind.create(Booking("1"))))
    asyncio.run(ex.drive("booking-1"))  # not due yet: the drive runs it anyway
    assert row(store, "booking-1").attempts == 2

    kept = controls(store).retry("booking-1")
    assert kept.attempts == 2 and row(store, "booking-1").attempts == 2
    reset = controls(store).retry("booking-1", reset_attempts=True)
    assert reset.attempts == 0 and row(store, "booking-1").attempts == 0
    assert reset.note == "retried"
    assert [t.attempt for t in store.transitions("booking-1")][-2:] == [2, 0]


def test_retry_refuses_a_quarantined_row_and_a_missing_one(store: fsm.Store) -> None:
    action_id, _ = booked(store)
    store.quarantine(action_id, "a bad row")
    with pytest.raises(fsm.ControlRefused, match=r"quarantined \(a bad row\).*unquarantine"):
        controls(store).retry(action_id)
    assert row(store, action_id).lease_owner is None  # the control let go
    with pytest.raises(fsm.NoSuchAction):
        controls(store).retry("booking-none")


# -- notify --------------------------------------------------------------------------------


def test_notify_makes_a_waiting_action_due_and_logs_it(store: fsm.Store) -> None:
    action_id, desk = booked(store)
    assert row(store, action_id).wake_at is None  # waits for a notify only

    done = controls(store).notify(action_id, by="crm", reason="customer confirmed")

    assert (done.state, done.outcome, done.note) == (
        "held",
        "due",
        "notified by crm: customer confirmed",
    )
    assert store.due_ids(store.now()) == [action_id]
    assert history(store, action_id)[-1] == ("held", "held", "due", "notify")
    desk.confirmed = True
    ex, _ = make(store, desk)
    assert asyncio.run(ex.run_due(keep_results=True)).results[0].status is DriveStatus.DONE


def test_notify_refuses_missing_and_quarantined_rows(store: fsm.Store) -> None:
    with pytest.raises(fsm.NoSuchAction):
        controls(store).notify("booking-none")
    action_id, _ = booked(store)
    store.quarantine(action_id, "a bad row")
    logged = len(store.transitions(action_id))
    with pytest.raises(fsm.ControlRefused, match="quarantined"):
        controls(store).notify(action_id)
    assert len(store.transitions(action_id)) == logged  # nothing written


# -- cancel --------------------------------------------------------------------------------


def test_cancel_writes_the_route_and_a_worker_runs_the_compensation(store: fsm.Store) -> None:
    action_id, desk = booked(store)

    done = controls(store).cancel(action_id, reason="customer asked", by="alice")

    assert (done.state, done.to_state, done.outcome) == ("held", "releasing", "cancelled")
    assert done.note == "cancelled by alice: customer asked"
    after = row(store, action_id)
    assert after.state == "releasing" and after.cause == done.note and after.lease_owner is None
    assert store.due_ids(store.now()) == [action_id]
    assert history(store, action_id)[-1] == ("held", "releasing", "cancelled", "cancel")

    ex, _ = make(store, desk)
    result = asyncio.run(ex.run_due(keep_results=True)).results[0]
    assert result.status is DriveStatus.FAILED and result.state == "cancelled"
    assert result.cause == "cancelled by alice: customer asked"
    kept = store.outcome(action_id)
    assert kept is not None and kept.cause == "cancelled by alice: customer asked"
    assert kept.error is not None and "(cause: cancelled by alice: customer asked)" in kept.error
    hold, give_back = (key for _, key in desk.calls)
    assert hold != give_back  # the compensation's step has a key of its own
    assert store.all_resources() == {}


def test_cancel_to_a_terminal_state_ends_the_action_now(store: fsm.Store) -> None:
    desk = Desk()
    desk.fault = OSError("seat service down")  # parked in reserving, waiting to retry
    ex, _ = make(store, desk)
    asyncio.run(ex.drive(BookingKind.create(Booking("1"))))

    done = controls(store).cancel("booking-1", reason="duplicate", by="bob")

    assert (done.to_state, done.outcome) == (None, "failed")
    assert store.row("booking-1") is None
    kept = store.outcome("booking-1")
    assert kept is not None and (kept.status, kept.state) == ("failed", "cancelled")
    assert kept.cause == "cancelled by bob: duplicate"
    last = store.transitions("booking-1")[-1]
    assert (last.via, last.outcome, last.to_state) == ("cancel", "failed", None)
    assert last.error == kept.error and "cancelled by bob: duplicate" in last.error


def test_a_state_without_a_cancel_route_refuses(store: fsm.Store) -> None:
    action_id, _ = booked(store)
    controls(store).cancel(action_id, reason="first")  # now in releasing: no route there
    before = store.checkpoint(action_id)
    logged = len(store.transitions(action_id))

    with pytest.raises(fsm.NoCancelRoute) as refused:
        controls(store).cancel(action_id, reason="again")

    assert str(refused.value) == (
        "action booking-1: kind 'booking', state 'releasing': no cancel route (it has some "
        "from: reserving, held). Fix: declare one (`releasing.cancelled(to=...)`, or "
        "`on_cancel` on an Action), or stop the action (no compensation)"
    )
    assert store.checkpoint(action_id) == before and row(store, action_id).lease_owner is None
    assert len(store.transitions(action_id)) == logged


def test_cancel_refuses_what_it_cannot_read(store: fsm.Store) -> None:
    action_id, _ = booked(store)
    with pytest.raises(fsm.ControlRefused, match="kind 'booking', which is not loaded here"):
        fsm.Controls(store).cancel(action_id, reason="x")
    store.quarantine(action_id, "a bad row")
    with pytest.raises(fsm.ControlRefused, match="quarantined"):
        controls(store).cancel(action_id, reason="x")
    with pytest.raises(ValueError, match="needs a reason"):
        controls(store).cancel(action_id, reason="  ")
    assert row(store, action_id).lease_owner is None


@pytest.mark.parametrize(
    ("plan", "error"),
    [
        ("none", fsm.NoCancelRoute),
        ("bad", fsm.KindError),
        ("other", fsm.KindError),
        ("raise", fsm.KindError),
    ],
)
def test_a_hand_written_action_refused_or_wrong_changes_nothing(
    store: fsm.Store, plan: str, error: type[Exception]
) -> None:
    ex, _ = make(store)
    asyncio.run(ex.drive(Pass("p", plan=plan)))
    with pytest.raises(error):
        controls(store).cancel("p", reason="x")
    assert row(store, "p").state == "open" and row(store, "p").lease_owner is None


def test_a_hand_written_action_cancels_through_on_cancel(store: fsm.Store) -> None:
    ex, _ = make(store)
    asyncio.run(ex.drive(Pass("p")))
    assert controls(store).cancel("p", reason="x").to_state == "refunding"
    result = asyncio.run(ex.run_due(keep_results=True)).results[0]
    assert (result.status, result.state, result.cause) == (
        DriveStatus.FAILED,
        "refunded",
        "cancelled: x",
    )

    asyncio.run(ex.drive(Pass("q", plan="fail")))
    done = controls(store).cancel("q", reason="closed", by="ops")
    kept = store.outcome("q")
    assert done.outcome == "failed" and kept is not None and kept.state == "closed"
    assert kept.error == "closed (closed) (cause: cancelled by ops: closed)"


# -- stop ----------------------------------------------------------------------------------


def test_stop_removes_the_action_and_keeps_who_and_why(store: fsm.Store) -> None:
    action_id, _ = booked(store)
    assert store.all_resources() == {"seat:1": action_id}

    done = controls(store).stop(action_id, by="ops", reason="test booking")

    assert (done.to_state, done.outcome, done.note) == (
        None,
        "stopped",
        "stopped by ops: test booking",
    )
    assert store.row(action_id) is None and store.all_resources() == {}
    kept = store.outcome(action_id)
    assert kept is not None and (kept.status, kept.error) == ("stopped", done.note)
    assert history(store, action_id)[-1] == ("held", None, "stopped", "stop")
    with pytest.raises(fsm.NoSuchAction):
        controls(store).stop(action_id)


def test_stop_removes_a_quarantined_row_and_keeps_its_end(store: fsm.Store) -> None:
    action_id, _ = booked(store)
    store.quarantine(action_id, "a bad row")
    done = controls(store).stop(action_id, reason="cannot be fixed")
    assert done.quarantine == "a bad row" and store.row(action_id) is None
    kept = store.outcome(action_id)
    assert kept is not None and kept.status == "stopped"
    assert store.all_resources() == {}


def test_delete_is_stop_under_its_old_name(store: fsm.Store) -> None:
    action_id, _ = booked(store)
    ex, _ = make(store)
    assert asyncio.run(ex.delete(action_id)) is True
    kept = store.outcome(action_id)
    assert kept is not None and kept.error == "stopped by Executor.delete"
    assert asyncio.run(ex.delete(action_id)) is False


# -- unquarantine --------------------------------------------------------------------------


def test_unquarantine_puts_the_row_back_and_says_why_it_was_set_aside(
    store: fsm.Store,
) -> None:
    action_id, desk = booked(store)
    store.quarantine(action_id, "kind 'booking' v3: row is newer than the code")

    done = controls(store).unquarantine(action_id, by="ops", reason="rolled forward")

    assert done.quarantine == "kind 'booking' v3: row is newer than the code"
    assert done.note == (
        "released by ops: rolled forward (was quarantined: kind 'booking' v3: row is newer "
        "than the code)"
    )
    after = row(store, action_id)
    assert after.quarantine is None and after.lease_owner is None
    assert store.due_ids(store.now()) == [action_id]
    assert history(store, action_id)[-1] == ("held", "held", "released", "unquarantine")
    desk.confirmed = True
    ex, _ = make(store, desk)
    assert asyncio.run(ex.run_due(keep_results=True)).results[0].status is DriveStatus.DONE


def test_unquarantine_refuses_a_row_not_quarantined_or_still_unreadable(
    store: fsm.Store,
) -> None:
    action_id, _ = booked(store)
    with pytest.raises(fsm.ControlRefused, match="is not quarantined"):
        controls(store).unquarantine(action_id)
    store.insert("booking-2", "booking", "held", 1, '{"data": {"ref": 7}}', [], store.now())
    store.quarantine("booking-2", "data does not structure")
    with pytest.raises(fsm.ControlRefused, match="still cannot be read"):
        controls(store).unquarantine("booking-2")
    assert row(store, "booking-2").quarantine == "data does not structure"
    # without the kind loaded, the row is released as asked (the worker re-checks it)
    assert fsm.Controls(store).unquarantine("booking-2").outcome == "released"


# -- one transaction -----------------------------------------------------------------------


def test_a_control_whose_log_row_fails_writes_nothing(store: fsm.Store) -> None:
    """The control's UPDATE and its log row are one transaction: the log row's failure
    rolls the UPDATE back, and the lease stays the control's to let go."""
    action_id, _ = booked(store)
    logged = len(store.transitions(action_id))
    taken = store.control_writes.take(action_id, "ops", store.now(), store.now() + 30)
    assert isinstance(taken, Taken)
    c: Claimed = taken.claimed
    calls = {"n": 0}

    def fail_the_log_row(sqlite: bool) -> None:
        calls["n"] += 1
        if calls["n"] == 3:  # BEGIN, the UPDATE, then the log row's INSERT
            raise RuntimeError("the log row cannot be written")

    store.hooks = StoreHooks(statement=fail_the_log_row)
    entry = LogEntry(c.kind, c.seq, c.state, c.state, "due", "retry_now", 0, "x", 0.0)
    with pytest.raises(RuntimeError, match="log row"):
        store.control_writes.release(action_id, c.epoch, {"wake_at": 0.0}, entry, 1.0, wake=True)
    store.hooks = fsm.store.NO_HOOKS
    after = row(store, action_id)
    assert after.wake_at is None and after.lease_owner == "ops"
    assert len(store.transitions(action_id)) == logged
    store.unclaim(action_id, c.epoch)
