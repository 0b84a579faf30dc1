"""The rules of what a step writes, tested on the pure `plan` functions, without a database.

Each rule here is one crash safety rests on: the step sequence names the next step's
idempotency key, the attempts are the retry budget, the wake-up is when a worker finds the
action due after a crash, and the lease is what keeps two drivers apart.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fsm
from fsm.executor.plan import (
    RUN_NOW,
    Lease,
    Plan,
    Write,
    after_failed_write,
    plan,
    plan_broken,
    plan_update,
)
from fsm.protocol import DriveMode
from fsm.store import Bookkeeping

TTL = 30.0
UNTIL_PARK = DriveMode.UNTIL_PARK_OR_DONE
UNTIL_DONE = DriveMode.UNTIL_DONE


@attrs.frozen
class At:
    """Where a drive stands (a `fsm.executor.plan.Position`)."""

    state: str
    payload: str
    seq: int
    bookkeeping: Bookkeeping


@attrs.frozen
class Step(fsm.Action[None]):
    """The action a `Next` or `Park` carries (plan reads only the outcome's type and fields)."""

    namespace = "plan-test"
    key: str = "a"

    @property
    def id(self) -> str:
        return self.key


ROW = Bookkeeping(version=1, attempts=2, last_error="old", wake_at=None, lease_expires=130.0)
AT = At("s1", '{"n":1}', 7, ROW)
SAME = ("s1", '{"n":1}')
CHANGED = ("s2", '{"n":2}')


def make(
    outcome: fsm.Outcome,
    checkpoint: tuple[str, str] | None = CHANGED,
    at: At = AT,
    **kw: Any,
) -> Plan:
    args: dict[str, Any] = {
        "kind": "k",
        "version": 3,
        "via": "step",
        "attempts": at.bookkeeping.attempts,
        "cause": None,
        "routed": False,
        "mode": UNTIL_PARK,
        "stopping": False,
        "started": 100.0,
        "now": 101.0,
        "lease_ttl": TTL,
        "duration": 0.5,
    }
    args.update(kw)
    return plan(outcome, at, checkpoint, **args)


# -- Next ---------------------------------------------------------------------------------


def test_next_advances_the_key_resets_the_budget_and_leaves_the_action_due() -> None:
    p = make(fsm.Next(Step()))
    assert p.write is Write.NEXT and p.goes_on and p.sleep_for is None
    assert (p.state, p.payload, p.seq) == ("s2", '{"n":2}', 8)
    assert p.bookkeeping == Bookkeeping(3, 0, None, RUN_NOW, 130.0, False, None)
    assert p.lease is Lease.KEPT  # 29 s of 30 left: nothing to write


@pytest.mark.parametrize(
    ("wake_at", "written"),
    [
        (None, RUN_NOW),  # waiting for a notify: due at once from now on
        (50.0, 50.0),  # already due: left as it is (no index write)
        (100.0, 100.0),  # due at the step's start
        (500.0, RUN_NOW),  # a future wake-up: due at once instead
    ],
)
def test_next_writes_a_wake_up_that_is_due_at_once(wake_at: float | None, written: float) -> None:
    p = make(fsm.Next(Step()), at=attrs.evolve(AT, bookkeeping=attrs.evolve(ROW, wake_at=wake_at)))
    assert p.bookkeeping is not None and p.bookkeeping.wake_at == written


def test_next_while_stopping_returns_and_releases_the_lease() -> None:
    p = make(fsm.Next(Step()), stopping=True)
    assert not p.goes_on and p.lease is Lease.RELEASED
    assert p.bookkeeping is not None and p.bookkeeping.lease_expires is None
    assert p.seq == 8  # the step is written as usual


# -- Park ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("checkpoint", "seq"),
    [(SAME, 7), (CHANGED, 8), (("s1", '{"n":2}'), 8), (("s2", '{"n":1}'), 8)],
)
def test_a_park_advances_the_key_only_when_the_checkpoint_changed(
    checkpoint: tuple[str, str], seq: int
) -> None:
    assert make(fsm.Park(Step(), wake_after=5), checkpoint).seq == seq


@pytest.mark.parametrize(
    ("mode", "wake_after", "stopping", "sleep_for", "wake_at", "lease", "expires"),
    [
        (UNTIL_PARK, 5.0, False, None, 105.0, Lease.RELEASED, None),
        (UNTIL_PARK, None, False, None, None, Lease.RELEASED, None),
        (UNTIL_DONE, 5.0, False, 5.0, 105.0, Lease.UNTIL_WAKE, 106.0 + TTL),
        (UNTIL_DONE, None, False, None, None, Lease.RELEASED, None),  # only a notify wakes it
        (UNTIL_DONE, 5.0, True, None, 105.0, Lease.RELEASED, None),
        (UNTIL_DONE, 0.0, False, 0.0, 100.0, Lease.UNTIL_WAKE, 101.0 + TTL),
    ],
)
def test_a_park_waits_or_naps_as_the_mode_says(
    mode: DriveMode,
    wake_after: float | None,
    stopping: bool,
    sleep_for: float | None,
    wake_at: float | None,
    lease: Lease,
    expires: float | None,
) -> None:
    p = make(fsm.Park(Step(), wake_after=wake_after), mode=mode, stopping=stopping)
    assert p.write is Write.PARK
    assert (p.sleep_for, p.lease, p.goes_on) == (sleep_for, lease, lease is not Lease.RELEASED)
    assert p.bookkeeping is not None
    assert (p.bookkeeping.wake_at, p.bookkeeping.lease_expires) == (wake_at, expires)


def test_a_park_keeps_the_budget_and_records_its_error_before_the_cause() -> None:
    p = make(fsm.Park(Step(), wake_after=4, error=ValueError("late")), cause="Oops: x", attempts=3)
    assert p.bookkeeping is not None
    assert (p.bookkeeping.attempts, p.bookkeeping.last_error) == (3, "ValueError: late")
    assert make(fsm.Park(Step()), cause="Oops: x").entry.error == "Oops: x"


@pytest.mark.parametrize(
    ("lease_expires", "now", "lease", "written"),
    [
        (130.0, 101.0, Lease.KEPT, 130.0),  # more than half left
        (110.0, 101.0, Lease.RENEWED, 131.0),  # less than half left: a full one from the write
        (None, 101.0, Lease.RENEWED, 131.0),
    ],
)
def test_a_drive_that_goes_on_renews_its_lease_when_half_of_it_is_gone(
    lease_expires: float | None, now: float, lease: Lease, written: float
) -> None:
    at = attrs.evolve(AT, bookkeeping=attrs.evolve(ROW, lease_expires=lease_expires))
    p = make(fsm.Next(Step()), at=at, now=now)
    assert p.lease is lease and p.bookkeeping is not None
    assert p.bookkeeping.lease_expires == written


# -- causes and ends ----------------------------------------------------------------------


def test_a_routed_outcome_takes_its_cause_an_unrouted_one_carries_the_old() -> None:
    at = attrs.evolve(AT, bookkeeping=attrs.evolve(ROW, cause="Rejected: first"))
    routed = make(fsm.Next(Step()), at=at, via="rejection", cause="Rejected: no", routed=True)
    backoff = make(fsm.Park(Step(), wake_after=1), at=at, via="retry", cause="E: x")
    assert routed.cause == "Rejected: no" and routed.bookkeeping is not None
    assert routed.bookkeeping.cause == "Rejected: no"
    assert backoff.cause == "Rejected: first"


def test_done_deletes_the_row_and_keeps_the_cause() -> None:
    p = make(fsm.Done(), None, via="rejection", cause="Rejected: no", routed=True, attempts=1)
    assert (p.write, p.bookkeeping, p.lease, p.goes_on) == (Write.DONE, None, Lease.RELEASED, False)
    assert (p.state, p.seq, p.cause, p.failure) == ("s1", 7, "Rejected: no", None)
    assert (p.entry.to_state, p.entry.outcome, p.entry.error) == (None, "done", "Rejected: no")


def test_failed_keeps_its_error_with_the_cause_that_led_there() -> None:
    p = make(fsm.Failed("gave up", state="Cancelled"), None, cause="Rejected: no", routed=True)
    assert p.write is Write.FAILED and p.bookkeeping is None and p.state == "Cancelled"
    assert p.failure == "gave up (cause: Rejected: no)" == p.entry.error


# -- broken, update, failed write ---------------------------------------------------------


def test_a_broken_step_touches_neither_checkpoint_nor_key_nor_budget() -> None:
    at = attrs.evolve(AT, bookkeeping=attrs.evolve(ROW, wake_at=200.0, cause="C: c"))
    p = plan_broken(at, "broken: TypeError: x", kind="k", duration=0.1)
    assert (p.write, p.state, p.payload, p.seq) == (Write.BROKEN, "s1", '{"n":1}', 7)
    assert p.bookkeeping == attrs.evolve(
        at.bookkeeping,
        last_error="broken: TypeError: x",
        wake_at=None,  # no wake-up: a notify after the fix
        lease_expires=None,
        broken=True,
    )
    assert not p.goes_on and p.entry.outcome == "broken" and p.entry.attempt == 2


def test_an_update_keeps_the_key_and_releases_the_lease() -> None:
    p = plan_update(AT, CHANGED, kind="k", version=4)
    assert (p.seq, p.state, p.payload, p.lease) == (7, "s2", '{"n":2}', Lease.RELEASED)
    assert p.bookkeeping == attrs.evolve(ROW, version=4, lease_expires=None)
    assert (p.entry.via, p.entry.seq) == ("update", 7)


def test_a_failed_write_counts_an_attempt_and_backs_off() -> None:
    row = after_failed_write(attrs.evolve(ROW, broken=True), "could not", delay=9.0, now=100.0)
    assert (row.attempts, row.wake_at, row.last_error, row.broken) == (3, 109.0, "could not", False)


# -- properties ---------------------------------------------------------------------------

texts = st.none() | st.text(max_size=8)
times = st.floats(0, 1e6)
rows = st.builds(
    Bookkeeping,
    version=st.integers(1, 5),
    attempts=st.integers(0, 20),
    last_error=texts,
    wake_at=st.none() | times,
    lease_expires=st.none() | times,
    broken=st.booleans(),
    cause=texts,
)
positions = st.builds(
    At, st.sampled_from(["s1", "s2"]), st.sampled_from(["{}", "[]"]), st.integers(0, 99), rows
)
outcomes = st.one_of(
    st.builds(fsm.Next, st.just(Step())),
    st.builds(
        fsm.Park,
        st.just(Step()),
        wake_after=st.none() | st.floats(0, 1e5),
        error=st.none() | st.builds(ValueError, st.text(max_size=5)),
    ),
    st.builds(fsm.Done),
    st.builds(fsm.Failed, st.text(min_size=1, max_size=5)),
)


@attrs.frozen
class Case:
    """One random step's inputs and its plan."""

    plan: Plan
    at: At
    outcome: fsm.Outcome
    attempts: int
    started: float
    now: float
    ttl: float


@st.composite
def cases(draw: st.DrawFn) -> Case:
    outcome = draw(outcomes)
    started = draw(times)
    ttl = draw(st.floats(0.1, 1e4))
    # A step's write comes at most half a lease time after it began (a longer step relies
    # on the worker's renewal of the leases it drives).
    now = started + draw(st.floats(0, ttl / 2))
    # The row's lease and wake-up near the step's times, where the rules change:
    at = draw(positions)
    lease = draw(st.none() | st.floats(-ttl, ttl).map(lambda left: now + left))
    wake_at = draw(st.none() | st.floats(-ttl, ttl).map(lambda off: max(0.0, started + off)))
    at = attrs.evolve(
        at, bookkeeping=attrs.evolve(at.bookkeeping, lease_expires=lease, wake_at=wake_at)
    )
    attempts = at.bookkeeping.attempts + draw(st.integers(0, 1))  # +1: a retry's outcome
    p = plan(
        outcome,
        at,
        draw(st.sampled_from([("s1", "{}"), ("s2", "[]")])),
        kind="k",
        version=5,
        via=draw(st.sampled_from(["step", "retry", "rejection"])),
        attempts=attempts,
        cause=draw(texts),
        routed=draw(st.booleans()),
        mode=draw(st.sampled_from(DriveMode)),
        stopping=draw(st.booleans()),
        started=started,
        now=now,
        lease_ttl=ttl,
        duration=0.0,
    )
    return Case(p, at, outcome, attempts, started, now, ttl)


@given(cases())
def test_the_key_never_goes_back_and_moves_by_one_at_most(case: Case) -> None:
    p, at = case.plan, case.at
    assert p.seq in (at.seq, at.seq + 1)
    assert p.entry.seq == at.seq  # the log names the step that ran, by its key
    if isinstance(case.outcome, fsm.Next):
        assert p.seq == at.seq + 1


@given(cases())
def test_a_drive_goes_on_at_once_only_after_progress(case: Case) -> None:
    """No hot loop: without a new checkpoint a drive sleeps through its park or returns."""
    p = case.plan
    if p.goes_on and p.sleep_for is None:
        assert p.write is Write.NEXT and isinstance(case.outcome, fsm.Next)
        # ...and if the drive dies before its next write, the action is due at once:
        assert p.bookkeeping is not None and p.bookkeeping.wake_at is not None
        assert p.bookkeeping.wake_at <= case.started


@given(cases())
def test_the_lease_is_held_exactly_while_the_drive_goes_on(case: Case) -> None:
    p = case.plan
    if p.bookkeeping is None:  # an end: the lease goes with the row
        assert not p.goes_on and p.lease is Lease.RELEASED
    elif p.goes_on:
        assert p.bookkeeping.lease_expires is not None
        assert p.bookkeeping.lease_expires - case.now >= case.ttl / 2
    else:
        assert p.bookkeeping.lease_expires is None and p.lease is Lease.RELEASED


@given(cases())
def test_the_budget_resets_on_progress_and_is_kept_otherwise(case: Case) -> None:
    p = case.plan
    expected = 0 if isinstance(case.outcome, fsm.Next) else case.attempts
    assert p.entry.attempt == expected
    if p.bookkeeping is not None:
        assert p.bookkeeping.attempts == expected
        assert not p.bookkeeping.broken  # a written step clears the broken mark


@given(positions, st.text(min_size=1))
def test_a_broken_step_never_touches_the_budget(at: At, text: str) -> None:
    p = plan_broken(at, text, kind="k", duration=0.0)
    assert p.bookkeeping is not None
    assert p.bookkeeping.attempts == at.bookkeeping.attempts
    assert (p.seq, p.state, p.payload) == (at.seq, at.state, at.payload)
    assert p.cause == at.bookkeeping.cause == p.bookkeeping.cause
    assert p.bookkeeping.wake_at is None and p.bookkeeping.broken and not p.goes_on


@given(rows, st.floats(0, 1e4), times)
def test_a_failed_write_never_retries_before_its_backoff(
    row: Bookkeeping, delay: float, now: float
) -> None:
    after = after_failed_write(row, "e", delay, now)
    assert after.attempts == row.attempts + 1
    assert after.wake_at is not None and after.wake_at >= now


@given(st.floats(0.1, 1e4), st.floats(-1, 1), st.floats(0, 0.5), times)
def test_a_drive_that_goes_on_has_half_a_lease_left_at_least(
    ttl: float, left: float, elapsed: float, started: float
) -> None:
    now = started + elapsed * ttl
    at = attrs.evolve(AT, bookkeeping=attrs.evolve(ROW, lease_expires=now + left * ttl))
    p = make(fsm.Next(Step()), at=at, started=started, now=now, lease_ttl=ttl)
    assert p.goes_on and p.bookkeeping is not None and p.bookkeeping.lease_expires is not None
    assert p.bookkeeping.lease_expires - now >= ttl / 2
    assert p.lease is (
        Lease.KEPT if p.bookkeeping.lease_expires == at.bookkeeping.lease_expires else Lease.RENEWED
    )


@given(
    step=st.floats(0, 1e5),
    wake_after=st.floats(0, 1e5),
    ttl=st.floats(0.1, 1e4),
)
def test_a_lease_held_through_a_nap_outlives_it_however_long_the_step(
    step: float, wake_after: float, ttl: float
) -> None:
    """A step longer than its lease, then a nap: no other driver may take the action while
    this drive sleeps (its write, not the step's start, is where the nap begins)."""
    p = make(
        fsm.Park(Step(), wake_after=wake_after),
        mode=UNTIL_DONE,
        started=100.0,
        now=100.0 + step,
        lease_ttl=ttl,
    )
    assert p.lease is Lease.UNTIL_WAKE and p.sleep_for == wake_after
    assert p.bookkeeping is not None and p.bookkeeping.lease_expires is not None
    assert p.bookkeeping.lease_expires >= 100.0 + step + wake_after + ttl
