"""What a kind author needs, public: rejection rows in the table, the stock park, the step's
memo, reading a live action, and the data-first order of ``create`` and ``goto``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import attrs
import pytest

import fsm
from fsm import Kind, State, StepContext
from fsm.storable import may_hold_float
from fsm.testing import run_twice, step_context


@attrs.frozen
class Job:
    key: str
    polls: int = 0


class Remote:
    def __init__(self) -> None:
        self.reads = 0
        self.status = "pending"

    def read(self) -> str:
        self.reads += 1
        return self.status


def status(ctx: StepContext[Remote], job: Job) -> str:
    found: str | None = ctx.memo.get(status)
    if found is None:
        found = ctx.memo[status] = ctx.services.read()
    return found


def is_done(ctx: StepContext[Remote], job: Job) -> bool:
    return status(ctx, job) == "done"


def is_failed(ctx: StepContext[Remote], job: Job) -> bool:
    return status(ctx, job) == "failed"


def refuse(ctx: StepContext[Remote], job: Job) -> Job:
    raise fsm.Rejected("no")


class JobKind(Kind[Job, Remote]):
    name = "job"

    waiting = State.wait(initial=True)
    holding = State()
    finished = State.done()
    lost = State.failed()

    transitions = (
        waiting.to(finished, guard=is_done),
        waiting.to(lost, guard=is_failed),
        waiting.to(holding, guard=lambda ctx, job: ctx.services.status == "hold"),
        holding.to(finished, effect=refuse),
        holding.rejected(park=True),
    )

    @staticmethod
    def action_id(job: Job) -> str:
        return job.key


def test_the_memo_holds_one_read_per_step_and_starts_empty_in_the_next() -> None:
    remote = Remote()
    action = JobKind.create(Job("j"))
    outcome = action.advance(step_context(remote, "j"))
    assert isinstance(outcome, fsm.Park) and remote.reads == 1  # two guards, one read
    action.advance(step_context(remote, "j"))
    assert remote.reads == 2


def test_run_twice_gives_each_run_a_fresh_memo() -> None:
    remote = Remote()
    runs = asyncio.run(run_twice(JobKind.create(Job("j")), lambda: step_context(remote, "j")))
    assert runs.first == runs.second and remote.reads == 2
    assert runs.first_ctx.memo is not runs.second_ctx.memo


def test_park_true_parks_in_place_with_the_error_and_no_wake_up() -> None:
    action = JobKind.create(Job("j"), JobKind.holding)
    error = fsm.Rejected("no")
    assert action.on_rejection(step_context(Remote(), "j"), error) == fsm.Park(action, error=error)
    once = fsm.RetryPolicy(max_attempts=1)
    down = RuntimeError("down")
    spent = action.on_retry(step_context(Remote(), "j", retry=once), 1, down)
    assert spent == fsm.Park(action, error=down)  # a spent budget takes the same row


def test_create_and_goto_take_the_data_first() -> None:
    moved = JobKind.goto(Job("j", 1), JobKind.holding)
    assert moved == fsm.Next(JobKind.create(Job("j", 1), JobKind.holding))
    assert isinstance(moved.state, fsm.Instance) and moved.state.state == "holding"


def kind_with(*rows: Any) -> type[Kind[Job, None]]:
    """A kind ``a -> b -> end`` whose table also holds ``row(a, b, end)`` for each row."""
    first, second, last = State(initial=True), State(), State.done()
    extra = tuple(row(first, second, last) for row in rows)

    class Rows(Kind[Job, None]):
        name = "rows"
        a = first
        b = second
        end = last
        transitions = (a.to(b), b.to(end), *extra)

        @staticmethod
        def action_id(job: Job) -> str:
            return job.key

    return Rows


def handler(ctx: Any, job: Job, error: BaseException) -> fsm.Outcome:
    return fsm.Failed(error)


@pytest.mark.parametrize(
    ("rows", "what"),
    [
        (
            [lambda a, b, end: a.rejected(to=end), lambda a, b, end: a.rejected(to=b)],
            "two rejection rows for this state",
        ),
        ([lambda a, b, end: a.rejected(to=(b, end))], "must lead to exactly one state"),
        ([lambda a, b, end: a.rejected()], "must lead to exactly one state"),
        ([lambda a, b, end: a.rejected(park=True, to=b)], "takes no handler or target"),
        ([lambda a, b, end: a.rejected(park=True, handler=handler)], "takes no handler"),
        ([lambda a, b, end: end.rejected(to=b)], "a terminal state has a rejection row"),
    ],
)
def test_malformed_rejection_rows_are_refused_at_import(rows: list[Any], what: str) -> None:
    with pytest.raises(fsm.DefinitionError, match=what):
        kind_with(*rows)


def test_a_rejections_attribute_is_refused_not_ignored() -> None:
    with pytest.raises(fsm.DefinitionError, match="write each route as a row of the table"):

        class Old(Kind[Job, None]):
            name = "old"
            a = State(initial=True)
            end = State.done()
            transitions = (a.to(end),)
            rejections = {a: end}  # noqa: RUF012 - the point of the test

            @staticmethod
            def action_id(job: Job) -> str:
                return job.key


def test_read_action_returns_the_committed_checkpoint(store: fsm.Store) -> None:
    remote = Remote()
    ex: fsm.Executor[Remote] = fsm.Executor(store, remote, kinds=[JobKind])
    assert fsm.read_action(store, JobKind, "j") is None
    asyncio.run(ex.start(JobKind.create(Job("j", 3))))
    found = fsm.read_action(store, JobKind, "j")
    assert found is not None and (found.state, found.data) == ("waiting", Job("j", 3))
    with pytest.raises(fsm.KindMismatch):
        fsm.read_action(store, kind_with(), "j")
    assert asyncio.run(ex.drive("j")).status is fsm.DriveStatus.PARKED  # not left leased


def test_read_action_reads_while_a_driver_holds_the_action(tmp_path: Path) -> None:
    """One statement reads state and payload: no lease needed, nothing written."""
    store = fsm.Store.sqlite(tmp_path / "a.sqlite")
    ex: fsm.Executor[Remote] = fsm.Executor(store, Remote(), kinds=[JobKind])
    asyncio.run(ex.start(JobKind.create(Job("j", 3))))
    claimed = store.claim("j", "someone-else", store.now())
    assert not isinstance(claimed, str)
    found = fsm.read_action(store, JobKind, "j")
    assert found is not None and found.data == Job("j", 3)
    readonly = fsm.Store.sqlite(tmp_path / "a.sqlite", readonly=True)
    assert fsm.read_action(readonly, JobKind, "j") == found
    row = store.row("j")
    assert row is not None and row.lease_owner == "someone-else"  # left as it was
    store.quarantine("j", "bad bytes")
    with pytest.raises(fsm.DecodeError, match="quarantined: bad bytes"):
        fsm.read_action(store, JobKind, "j")


@pytest.mark.parametrize(
    ("tp", "floats"),
    [
        (int, False),
        (str, False),
        (float, True),
        (Job, False),
        (list[float], True),
        (dict[str, int], False),
        (Any, True),
        (tuple[int, ...], False),
    ],
)
def test_may_hold_float_is_answered_by_the_storage_walk(tp: Any, floats: bool) -> None:
    assert may_hold_float(tp) is floats


def test_step_context_holds_pending_events_for_a_unit_test_of_an_event_row() -> None:
    """A kind's event rows are tested without a store: the context holds the inbox, and
    the step says which event it took and what it spawned."""
    import asyncio

    from event_kinds import ApprovalKind, Approve, Book, Note, Request

    from fsm.testing import outcome_of, step_context

    book = Book()
    ctx = step_context(book, "approval-1", events=[Approve("mallory"), Note("hi"), Approve("bo")])
    action = ApprovalKind.create(Request("1"))
    outcome = asyncio.run(outcome_of(action.advance(ctx)))
    assert isinstance(outcome, fsm.Next)  # the note (mallory's approval is refused by its guard)
    assert outcome.state.data.notes == ("hi",)
    assert ctx.outbox.consumed == 2
    ctx = step_context(book, "approval-1", events=[Approve("bo")])
    outcome = asyncio.run(outcome_of(outcome.state.advance(ctx)))
    assert outcome == fsm.Done("approved_") and ctx.outbox.consumed == 1
    assert [c[2] for c in book.calls] == ["hi", "bo"]
