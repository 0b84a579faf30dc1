"""Events: `Executor.send`, the inbox, event rows, deadlines and child actions, on both
databases.

Every test reads what the store holds afterwards (the inbox's rows, the kept outcomes, the
book of effects keyed by idempotency key), not only what the calls returned.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import attrs
import pytest
from event_kinds import (
    ApprovalKind,
    Approve,
    Batch,
    BatchKind,
    Book,
    Note,
    Order,
    OrderKind,
    Reject,
    Request,
    executor,
)

import fsm
from fsm import DriveStatus, SendStatus


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def events_of(store: fsm.Store, action_id: str) -> list[tuple[Any, ...]]:
    """(name, key, consumed, consumed_seq, dropped) of every event the action received."""
    cur = store.db.execute_sql(
        "SELECT name, key, consumed_at IS NOT NULL, consumed_seq, dropped FROM fsm_event "
        f"WHERE action_id = {store.db.param} ORDER BY id",
        (action_id,),
    )
    return [(r[0], r[1], bool(r[2]), r[3], r[4]) for r in cur.fetchall()]


def inbox_count(store: fsm.Store, action_id: str) -> int:
    p = store.db.param
    row = store.db.execute_sql(f"SELECT inbox FROM fsm_action WHERE id = {p}", (action_id,))
    return int(row.fetchone()[0])


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# -- sending and taking ------------------------------------------------------------------


def test_an_event_is_taken_once_by_the_row_of_its_type(store: fsm.Store) -> None:
    book = Book()
    ex = executor(store, book)
    parked = run(ex.drive(ApprovalKind.create(Request("1"))))
    assert (parked.status, parked.state) == (DriveStatus.PARKED, "waiting")

    sent = run(ex.send("approval-1", Approve("alice"), key="decision"))
    assert sent.status is SendStatus.SENT and sent
    assert inbox_count(store, "approval-1") == 1
    row = store.row("approval-1")
    assert row is not None and row.wake_at is not None  # due: a worker finds it

    report = run(ex.run_due())
    assert report.counts == {DriveStatus.DONE: 1}
    assert book.calls == [("approve", f"approval-1~{parked.key.split('~')[1]}", "alice")]
    kept = store.outcome("approval-1")
    assert kept is not None and (kept.status, kept.state) == ("done", "approved_")
    assert store.row("approval-1") is None  # its events went with it


def test_a_send_never_drives_the_action_in_the_callers_process(store: fsm.Store) -> None:
    book = Book()
    ex = executor(store, book)
    run(ex.drive(ApprovalKind.create(Request("1"))))
    sender = fsm.Executor(store, kinds=[ApprovalKind])  # no services at all
    assert run(sender.send("approval-1", Approve("alice"), key="k")).status is SendStatus.SENT
    assert book.calls == []
    assert store.checkpoint("approval-1") is not None
    assert [t.via for t in store.transitions("approval-1")] == ["step"]


def test_a_repeated_key_is_one_event_even_after_it_was_taken(store: fsm.Store) -> None:
    book = Book()
    ex = executor(store, book)
    run(ex.drive(ApprovalKind.create(Request("1"))))
    first = run(ex.send("approval-1", Note("a"), key="n1"))
    again = run(ex.send("approval-1", Note("a"), key="n1"))
    other = run(ex.send("approval-1", Note("b"), key="n1"))
    assert (first.status, again.status, other.status) == (
        SendStatus.SENT,
        SendStatus.DUPLICATE,
        SendStatus.REFUSED,
    )
    assert other.detail == "key 'n1' was already used for another event"
    assert not other and again
    run(ex.run_due())
    assert run(ex.send("approval-1", Note("a"), key="n1")).status is SendStatus.DUPLICATE
    run(ex.run_due())
    assert [c[2] for c in book.calls] == ["a"]  # taken once
    assert [(e[1], e[2]) for e in events_of(store, "approval-1")] == [("n1", True)]


def test_events_are_taken_in_the_order_they_were_sent(store: fsm.Store) -> None:
    book = Book()
    ex = executor(store, book)
    run(ex.drive(ApprovalKind.create(Request("1"))))
    for i in range(5):
        run(ex.send("approval-1", Note(f"n{i}"), key=f"k{i}"))
    run(ex.send("approval-1", Approve("alice"), key="decision"))
    run(ex.run_due())
    assert [c[2] for c in book.calls] == ["n0", "n1", "n2", "n3", "n4", "alice"]
    keys = [c[1] for c in book.calls]
    assert len(set(keys)) == 6  # one step, one key, per event
    kept = store.outcome("approval-1")
    assert kept is not None and kept.steps == 7


def test_each_taking_is_recorded_with_the_step_that_took_it(store: fsm.Store) -> None:
    ex = executor(store, Book())
    run(ex.drive(ApprovalKind.create(Request("1"))))
    run(ex.send("approval-1", Note("a"), key="a"))
    run(ex.send("approval-1", Note("b"), key="b"))
    run(ex.drive("approval-1"))
    taken = events_of(store, "approval-1")
    assert [(e[0], e[2]) for e in taken] == [("Note", True), ("Note", True)]
    seqs = [e[3] for e in taken]
    assert seqs == sorted(seqs) and len(set(seqs)) == 2
    assert inbox_count(store, "approval-1") == 0


def test_a_guard_that_refuses_an_event_leaves_it_queued(store: fsm.Store) -> None:
    ex = executor(store, Book())
    run(ex.drive(ApprovalKind.create(Request("1"))))
    run(ex.send("approval-1", Approve("mallory"), key="m"))
    parked = run(ex.drive("approval-1"))
    assert (parked.status, parked.state) == (DriveStatus.PARKED, "waiting")
    assert [e.name for e in store.pending_events("approval-1")] == ["Approve"]
    run(ex.send("approval-1", Reject("no"), key="r"))  # a later event still gets through
    ended = run(ex.drive("approval-1"))
    assert (ended.status, ended.state) == (DriveStatus.FAILED, "rejected")


def test_an_event_waits_in_the_inbox_until_a_state_takes_it(store: fsm.Store) -> None:
    book = Book()
    ex = executor(store, book)
    run(ex.drive(OrderKind.create(Order("1"))))
    assert run(ex.send("order-1", _ship("dhl"), key="ship")).status is SendStatus.SENT
    parked = run(ex.drive("order-1"))
    assert parked.state == "awaiting_payment"  # no row takes Ship here: queued
    assert [e.name for e in store.pending_events("order-1")] == ["Ship"]
    book.calls.append(("paid", "1", ""))
    done = run(ex.drive("order-1"))  # pays, then the queued Ship is taken in ready
    assert (done.status, done.state) == (DriveStatus.DONE, "shipped")
    assert [c[0] for c in book.calls] == ["paid", "pay", "ship"]


def _ship(carrier: str) -> Any:
    from event_kinds import Ship

    return Ship(carrier)


# -- refusals ----------------------------------------------------------------------------


def test_events_to_unknown_and_ended_actions_are_refused(store: fsm.Store) -> None:
    ex = executor(store, Book())
    unknown = run(ex.send("approval-9", Approve("a"), key="k"))
    assert (unknown.status, bool(unknown)) == (SendStatus.UNKNOWN, False)
    run(ex.drive(ApprovalKind.create(Request("1"))))
    run(ex.send("approval-1", Reject("no"), key="k"))
    run(ex.run_due())
    late = run(ex.send("approval-1", Approve("a"), key="k2"))
    assert late.status is SendStatus.FINISHED
    assert late.detail == "ended failed in state 'rejected'"
    assert store.pending_events("approval-1") == []


def test_an_event_no_row_of_the_kind_takes_is_refused(store: fsm.Store) -> None:
    ex = executor(store, Book())
    run(ex.drive(OrderKind.create(Order("1"))))
    refused = run(ex.send("order-1", Approve("a"), key="k"))
    assert refused.status is SendStatus.REFUSED
    assert refused.detail == "kind 'event_order' has no row taking event 'Approve' (it takes: Ship)"
    assert store.pending_events("order-1") == []
    assert inbox_count(store, "order-1") == 0


def test_a_send_checks_its_arguments(store: fsm.Store) -> None:
    ex = executor(store, Book())
    with pytest.raises(ValueError, match="key"):
        run(ex.send("approval-1", Approve("a"), key=""))
    with pytest.raises(TypeError, match="attrs class"):
        run(ex.send("approval-1", {"by": "a"}, key="k"))
    with pytest.raises(fsm.InvalidActionId):
        run(ex.send("bad id!", Approve("a"), key="k"))


def test_an_unreadable_event_is_set_aside_with_its_reason(store: fsm.Store) -> None:
    ex = executor(store, Book())
    run(ex.drive(ApprovalKind.create(Request("1"))))
    run(ex.send("approval-1", Approve("alice"), key="k"))
    p = store.db.param
    store.db.execute_sql(f"UPDATE fsm_event SET payload = {p}", ('{"who": 1}',))
    parked = run(ex.drive("approval-1"))
    assert (parked.status, parked.state) == (DriveStatus.PARKED, "waiting")
    ((name, _, consumed, _, dropped),) = events_of(store, "approval-1")
    assert name == "Approve" and consumed
    assert dropped is not None and dropped.startswith("event 'Approve' does not load")
    assert inbox_count(store, "approval-1") == 0


# -- deadlines ---------------------------------------------------------------------------


def test_a_deadline_fires_after_a_restart(open_store: Callable[[], fsm.Store]) -> None:
    clock = Clock()
    first = open_store()
    run(executor(first, Book(), clock=clock).drive(ApprovalKind.create(Request("1", hours=1))))
    row = first.row("approval-1")
    assert row is not None and row.wake_at == clock.now + 3600  # the deadline is the wake-up
    first.close()

    clock.now += 3599
    again = open_store()  # a new process, as far as the action knows
    ex = executor(again, Book(), clock=clock)
    assert run(ex.run_due()).counts == {}
    clock.now += 2
    assert run(ex.run_due()).counts == {DriveStatus.FAILED: 1}
    kept = again.outcome("approval-1")
    assert kept is not None and kept.state == "escalated"


def test_a_self_transition_keeps_the_deadline(store: fsm.Store) -> None:
    clock = Clock()
    ex = executor(store, Book(), clock=clock)
    run(ex.drive(ApprovalKind.create(Request("1", hours=1))))
    clock.now += 3000
    run(ex.send("approval-1", Note("still thinking"), key="n"))
    run(ex.run_due())
    row = store.row("approval-1")
    assert row is not None and row.wake_at == 1_000_000.0 + 3600
    clock.now += 601
    run(ex.run_due())
    kept = store.outcome("approval-1")
    assert kept is not None and kept.state == "escalated"


def test_an_event_taken_before_the_deadline_wins(store: fsm.Store) -> None:
    clock = Clock()
    ex = executor(store, Book(), clock=clock)
    run(ex.drive(ApprovalKind.create(Request("1", hours=1))))
    run(ex.send("approval-1", Approve("alice"), key="d"))
    clock.now += 7200  # the worker comes late: the event was there first
    run(ex.run_due())
    kept = store.outcome("approval-1")
    assert kept is not None and kept.state == "approved_"


# -- child actions -----------------------------------------------------------------------


def test_children_start_with_the_parents_step_and_their_ends_reach_it(store: fsm.Store) -> None:
    book = Book()
    ex = executor(store, book)
    parked = run(ex.drive(BatchKind.create(Batch("b1", (5, -1, 7)))))
    assert parked.state == "waiting"
    assert sorted(r.id for r in store.list_actions() if r.kind == "payout") == [
        "b1.0",
        "b1.1",
        "b1.2",
    ]
    run(ex.run_due())  # the children run and end; each end is an event to the parent
    run(ex.run_due())
    kept = store.outcome("b1")
    assert kept is not None and kept.status == "done"
    assert sorted(c[2] for c in book.calls) == ["b1.0", "b1.2"]
    taken = [
        t
        for t in store.transitions("b1")
        if (t.from_state, t.to_state, t.outcome) == ("waiting", "waiting", "next")
    ]
    assert len(taken) == 3  # one step per child's end


def test_the_parent_hears_each_childs_end_with_its_outcome(store: fsm.Store) -> None:
    ex = executor(store, Book())
    run(ex.drive(BatchKind.create(Batch("b1", (5, -1)))))
    run(ex.drive("b1.0"))
    run(ex.drive("b1.1"))
    pending = store.pending_events("b1")
    assert [e.name for e in pending] == ["fsm.ChildEnded", "fsm.ChildEnded"]
    assert [e.key.split("~")[0] for e in pending] == ["fsm.child:b1.0", "fsm.child:b1.1"]
    run(ex.drive("b1"))
    assert store.row("b1") is None
    from fsm import CONVERTER

    ended = [CONVERTER.structure(_json(e.payload), fsm.ChildEnded) for e in pending]
    assert [(e.child, e.status, e.state) for e in ended] == [
        ("b1.0", "done", "paid"),
        ("b1.1", "failed", "refused"),
    ]
    assert ended[1].error is not None and "refused" in ended[1].error


def _json(text: str) -> Any:
    import json

    return json.loads(text)


def test_a_child_whose_id_is_taken_fails_the_parents_step_whole(store: fsm.Store) -> None:
    ex = executor(store, Book())
    run(ex.start(fsm_payout("b1.1")))
    failed = run(ex.drive(BatchKind.create(Batch("b1", (5, 6)))))
    assert failed.status is DriveStatus.ERROR
    assert "cannot spawn child 'b1.1'" in str(failed.error)
    assert store.row("b1.0") is None  # nothing of the step was written
    row = store.row("b1")
    assert row is not None and row.state == "fanning" and row.attempts == 1
    assert row.wake_at is not None  # retried with backoff, not lost


def fsm_payout(pid: str) -> Any:
    from event_kinds import Payout, PayoutKind

    return PayoutKind.create(Payout(pid, 1))


def test_a_parent_that_ended_first_is_not_told(store: fsm.Store) -> None:
    ex = executor(store, Book())
    run(ex.drive(BatchKind.create(Batch("b1", (5,)))))
    assert fsm.Controls(store, kinds=[BatchKind]).stop("b1", by="ops", reason="give up")
    done = run(ex.drive("b1.0"))
    assert done.status is DriveStatus.DONE  # the child's end does not need its parent
    assert store.row("b1") is None


def test_an_id_started_again_does_not_hear_the_old_incarnations_children(
    store: fsm.Store,
) -> None:
    ex = executor(store, Book())
    run(ex.drive(BatchKind.create(Batch("b1", (5,)))))
    fsm.Controls(store, kinds=[BatchKind]).stop("b1", by="ops", reason="again")
    run(ex.start(BatchKind.create(attrs.evolve(Batch("b1", ())), BatchKind.waiting), again=True))
    run(ex.drive("b1.0"))
    assert store.pending_events("b1") == []


def test_a_send_wakes_this_executors_drive_sleeping_through_a_park(store: fsm.Store) -> None:
    """A drive until done sleeps through the wait (its deadline is an hour away); a send of
    the same executor wakes it, and its next step takes the event."""
    book = Book()
    ex = executor(store, book)

    async def scene() -> fsm.DriveResult:
        driving = asyncio.create_task(
            ex.drive(ApprovalKind.create(Request("1", hours=1)), fsm.DriveMode.UNTIL_DONE)
        )
        while "approval-1" not in ex.naps:  # asleep in its park
            await asyncio.sleep(0.001)
        sent = await ex.send("approval-1", Approve("alice"), key="d")
        assert sent.status is SendStatus.SENT
        return await driving

    done = run(scene())
    assert (done.status, done.state) == (DriveStatus.DONE, "approved_")
    assert [c[2] for c in book.calls] == ["alice"]


def _strict(policy: str) -> type[fsm.Kind[Order, Book]]:
    """`OrderKind`'s table, with ``unaccepted`` set to ``policy``."""

    class Strict(OrderKind):
        name = f"strict_{policy}"
        unaccepted = policy

    return Strict


@pytest.mark.parametrize(
    ("policy", "status", "stored"),
    [
        ("queue", SendStatus.SENT, [("Ship", False, None)]),
        ("reject", SendStatus.REFUSED, []),
        ("drop", SendStatus.DROPPED, [("Ship", True, "state 'awaiting_payment' did not take")]),
    ],
)
def test_what_a_kind_does_with_an_event_its_state_does_not_take(
    store: fsm.Store, policy: str, status: SendStatus, stored: list[tuple[Any, ...]]
) -> None:
    kind = _strict(policy)
    ex = fsm.Executor(store, Book(), kinds=[kind])
    run(ex.drive(kind.create(Order("1"))))
    sent = run(ex.send("order-1", _ship("dhl"), key="s"))
    assert sent.status is status
    if policy != "queue":
        assert sent.detail is not None and "'awaiting_payment'" in sent.detail
    found = [(e[0], e[2], e[4] and e[4][: len(stored[0][2])]) for e in events_of(store, "order-1")]
    assert found == [(n, c, d) for n, c, d in stored]
    assert inbox_count(store, "order-1") == (1 if policy == "queue" else 0)
    again = run(ex.send("order-1", _ship("dhl"), key="s"))
    assert again.status is (SendStatus.REFUSED if policy == "reject" else SendStatus.DUPLICATE)


def test_an_update_in_the_waiting_state_keeps_its_deadline(store: fsm.Store) -> None:
    clock = Clock()
    ex = executor(store, Book(), clock=clock)
    run(ex.drive(ApprovalKind.create(Request("1", hours=1))))
    clock.now += 1800

    def annotate(action: Any) -> Any:  # as users write it: a new action from new data
        return ApprovalKind.create(
            attrs.evolve(action.data, notes=("edited",)), ApprovalKind.waiting
        )

    run(ex.update("approval-1", annotate))
    clock.now += 1801  # an hour after entering, not after the update
    assert run(ex.run_due()).counts == {DriveStatus.FAILED: 1}
    kept = store.outcome("approval-1")
    assert kept is not None and kept.state == "escalated"


def test_a_prune_forgets_the_events_a_live_action_took_long_ago(store: fsm.Store) -> None:
    """Taken events are kept for their keys while the action lives; a prune forgets those
    taken before its time (the keys' window is the retention), never a pending one."""
    clock = Clock()
    ex = executor(store, Book(), clock=clock)
    run(ex.drive(ApprovalKind.create(Request("1"))))
    run(ex.send("approval-1", Note("old"), key="old"))
    run(ex.run_due())
    clock.now += 100
    run(ex.send("approval-1", Note("new"), key="new"))
    run(ex.run_due())
    run(ex.send("approval-1", Approve("mallory"), key="pending"))  # refused by the guard
    pruned = store.prune(clock.now - 50)
    assert pruned.events == 1
    assert [(e[1], e[2]) for e in events_of(store, "approval-1")] == [
        ("new", True),
        ("pending", False),
    ]
    assert run(ex.send("approval-1", Note("old"), key="old")).status is SendStatus.SENT
    assert run(ex.send("approval-1", Note("new"), key="new")).status is SendStatus.DUPLICATE
