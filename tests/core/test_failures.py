"""Nothing silent, nothing twice: each of a user's ordinary mistakes ends in a backoff, a
visible status or a refusal (issue 9), on a real SQLite file and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import decimal
from typing import Any

import attrs
import pytest
from actions import OneStep

import fsm
from fsm import DriveMode, DriveStatus, Kind, RetryPolicy, StartStatus, State, StepContext


@attrs.frozen
class Booking:
    ref: str
    amount: int = 10
    confirmation: str | None = None
    price: float | None = None


class Provider:
    """The outside world: books under an idempotency key and caches the answer per key."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.answers: dict[str, str] = {}
        self.behaviour: Any = None
        self.refuse = False

    def book(self, key: str) -> str:
        self.calls.append(key)
        if self.refuse:
            raise fsm.Rejected("no seats left on that flight")
        return self.answers.setdefault(key, f"conf-{len(self.answers)}")


def book(ctx: StepContext[Provider], b: Booking) -> Booking:
    svc = ctx.services
    conf = svc.book(ctx.idempotency_key)
    if svc.behaviour is not None:
        return svc.behaviour(b, conf)  # type: ignore[no-any-return]
    return attrs.evolve(b, confirmation=conf)


def cancel(ctx: StepContext[Provider], b: Booking) -> Booking:
    return b


class BookingKind(Kind[Booking, Provider]):
    name = "booking"
    retry = RetryPolicy(base=30.0)

    start = State(initial=True)
    confirmed = State()
    cancelling = State()
    booked = State.done()
    cancelled = State.failed()

    transitions = (
        start.to(confirmed, effect=book),
        confirmed.to(booked),
        cancelling.to(cancelled, effect=cancel),
        start.rejected(to=cancelling),
    )

    @staticmethod
    def action_id(b: Booking) -> str:
        return f"booking-{b.ref}"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def make(store: fsm.Store, svc: Provider, **kw: Any) -> tuple[fsm.Executor[Provider], Clock]:
    clock = Clock()
    return fsm.Executor(store, svc, kinds=[BookingKind], clock=clock, **kw), clock


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# -- idempotency keys never repeat ------------------------------------------------------------


def test_a_start_delivered_again_after_the_end_returns_the_kept_outcome(store: fsm.Store) -> None:
    svc = Provider()
    ex, clock = make(store, svc)
    first = run(ex.drive(BookingKind.create(Booking("b1"))))
    assert first.status is DriveStatus.DONE and first.state == "booked"
    clock.now += 3600
    again = run(ex.start(BookingKind.create(Booking("b1"))))
    assert again.status is StartStatus.ENDED and not again
    assert again.outcome is not None and again.outcome.status == "done"
    assert again.outcome.state == "booked"
    redriven = run(ex.drive(BookingKind.create(Booking("b1"))))
    assert (redriven.status, redriven.state, redriven.steps) == (DriveStatus.DONE, "booked", 0)
    assert len(svc.calls) == 1  # nothing ran twice
    assert store.row("booking-b1") is None


def test_a_new_incarnation_never_repeats_a_key(store: fsm.Store) -> None:
    """A booking cancelled, then booked again under the same id, must not get the provider's
    cached answer for the first one (the reproduced bug: confirmed and charged)."""
    svc = Provider()
    ex, clock = make(store, svc)
    svc.refuse = True
    first = run(ex.drive(BookingKind.create(Booking("b2"))))
    assert first.status is DriveStatus.FAILED
    svc.refuse = False
    clock.now += 60
    started = run(ex.start(BookingKind.create(Booking("b2")), again=True))
    assert started.status is StartStatus.STARTED and started.incarnation
    result = run(ex.drive("booking-b2"))
    assert result.status is DriveStatus.DONE
    assert len(svc.calls) == 2 and svc.calls[0] != svc.calls[1]
    assert all(k.startswith(f"booking-b2~{started.incarnation}") for k in svc.calls[1:])
    assert fsm.ids.action_of_key(svc.calls[0]) == "booking-b2"


def test_outside_the_redelivery_window_a_start_is_a_new_incarnation(store: fsm.Store) -> None:
    svc = Provider()
    ex, clock = make(store, svc, redelivery_window=600)
    run(ex.drive(BookingKind.create(Booking("b3"))))
    clock.now += 601
    assert run(ex.start(BookingKind.create(Booking("b3")))).status is StartStatus.STARTED
    assert run(ex.drive("booking-b3")).status is DriveStatus.DONE
    assert len(set(svc.calls)) == 2
    assert store.prune_outcomes(clock.now + 1) == 2


def test_a_stopped_action_is_kept_as_stopped(store: fsm.Store) -> None:
    svc = Provider()
    svc.behaviour = lambda b, conf: (_ for _ in ()).throw(OSError("provider down"))
    ex, _ = make(store, svc)
    run(ex.drive(BookingKind.create(Booking("b4"))))
    assert run(ex.delete("booking-b4")) is True
    kept = store.outcome("booking-b4")
    assert kept is not None and kept.status == "stopped"
    result = run(ex.drive(BookingKind.create(Booking("b4"))))
    assert result.status is DriveStatus.FAILED and "stopped by an operator" in str(result.error)


def test_an_update_between_a_failed_attempt_and_its_retry_keeps_the_key(
    store: fsm.Store,
) -> None:
    """A payment whose response was lost, updated while it waits for its retry, must be
    retried under the key the provider has seen (else it is paid twice)."""
    svc = Provider()
    lost = {"n": 1}

    def lose_response(b: Booking, conf: str) -> Booking:
        if lost["n"]:
            lost["n"] -= 1
            raise OSError("response lost")
        return attrs.evolve(b, confirmation=conf)

    svc.behaviour = lose_response
    ex, clock = make(store, svc)
    parked = run(ex.drive(BookingKind.create(Booking("b5"))))
    assert parked.status is DriveStatus.PARKED
    run(ex.update("booking-b5", lambda a: BookingKind.create(attrs.evolve(a.data, amount=12))))  # type: ignore[attr-defined]
    clock.now += 3600
    assert run(ex.drive("booking-b5")).status is DriveStatus.DONE
    assert len(svc.calls) == 2 and svc.calls[0] == svc.calls[1]
    assert len(svc.answers) == 1


# -- programming errors are not transient -----------------------------------------------------


@pytest.mark.parametrize(
    "wrong",
    [
        lambda b, conf: {"ref": b.ref},
        lambda b, conf: None,
        lambda b, conf: fsm.Next(BookingKind.create(b)),
        lambda b, conf: Other(b.ref),
    ],
    ids=["dict", "none", "outcome", "other-attrs-class"],
)
def test_an_effect_returning_the_wrong_type_parks_the_action_as_broken(
    store: fsm.Store, wrong: Any
) -> None:
    svc = Provider()
    svc.behaviour = wrong
    ex, clock = make(store, svc)
    result = run(ex.drive(BookingKind.create(Booking("b6"))))
    assert result.status is DriveStatus.BROKEN, result
    row = store.row("booking-b6")
    assert row is not None and row.broken and row.state == "start"
    assert row.attempts == 0 and row.wake_at is None and row.lease_owner is None
    assert (row.last_error or "").startswith("broken: ")
    # not due: no hot loop, whoever polls, for as long as it polls
    for _ in range(5):
        clock.now += 3600
        assert run(ex.run_due()).total == 0
        assert store.claim_due("w", clock.now, 10) == []
    assert len(svc.calls) == 1
    # fixed and notified: the step runs again under the same key, and the action finishes
    svc.behaviour = None
    assert run(ex.notify("booking-b6")).status is DriveStatus.DONE
    assert len(svc.calls) == 2 and svc.calls[0] == svc.calls[1]


@attrs.frozen
class Other:
    ref: str


@pytest.mark.parametrize(
    "value",
    [
        {"amount": 2**64},
        {"price": float("inf")},
        {"price": float("nan")},
    ],
    ids=["int-2**64", "inf", "nan"],
)
def test_an_unstorable_checkpoint_parks_as_broken_and_is_never_written(
    store: fsm.Store, value: dict[str, Any]
) -> None:
    svc = Provider()
    svc.behaviour = lambda b, conf: attrs.evolve(b, **value)
    ex, clock = make(store, svc)
    slow = BookingKind
    result = run(ex.drive(slow.create(Booking("b7"))))
    assert result.status is DriveStatus.BROKEN and isinstance(result.error, fsm.EncodeError)
    row = store.row("booking-b7")
    assert row is not None and row.broken and row.wake_at is None
    assert row.state == "start" and "conf-" not in store.payload_of("booking-b7")
    clock.now += 100_000
    run(ex.run_due())
    assert len(svc.calls) == 1


@pytest.mark.filterwarnings("ignore::fsm.validate.UntypedDataWarning")
def test_a_checkpoint_nested_too_deep_is_refused(store: fsm.Store) -> None:
    @attrs.frozen
    class Tree:
        ref: str
        child: Any = None

    def grow(ctx: StepContext[None], t: Tree) -> Tree:
        deep: Any = None
        for _ in range(300):
            deep = {"c": deep}
        return attrs.evolve(t, child=deep)

    class TreeKind(Kind[Tree, None]):
        name = "tree"
        a = State(initial=True)
        b = State()
        c = State.done()
        transitions = (a.to(b, effect=grow), b.to(c))

        @staticmethod
        def action_id(t: Tree) -> str:
            return t.ref

    ex: fsm.Executor[None] = fsm.Executor(store, None, kinds=[TreeKind])
    result = run(ex.drive(TreeKind.create(Tree("t1"))))
    assert result.status is DriveStatus.BROKEN and isinstance(result.error, fsm.EncodeError)


def test_an_error_text_with_a_nul_byte_is_stored_and_backs_off(store: fsm.Store) -> None:
    svc = Provider()
    svc.behaviour = lambda b, conf: (_ for _ in ()).throw(OSError("bad\x00byte from remote"))
    ex, clock = make(store, svc)
    result = run(ex.drive(BookingKind.create(Booking("b8"))))
    assert result.status is DriveStatus.PARKED
    row = store.row("booking-b8")
    assert row is not None and row.attempts == 1 and "bad\\x00byte" in (row.last_error or "")
    assert row.wake_at is not None and row.wake_at == clock.now + 30.0


def test_a_failed_write_still_records_the_attempt_and_its_backoff(store: fsm.Store) -> None:
    """The database refuses the step's checkpoint (a real trigger raising inside the write):
    the attempt and its backoff still reach the row, so the action is not due at once."""
    sql = (
        "CREATE TRIGGER refuse BEFORE UPDATE OF payload ON fsm_action "
        "WHEN NEW.payload LIKE '%conf-%' BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
        if store.is_sqlite
        else None
    )
    if sql is None:
        store.db.execute_sql(
            "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN "
            "IF NEW.payload LIKE '%%conf-%%' THEN RAISE EXCEPTION 'disk says no'; END IF; "
            "RETURN NEW; END $$ LANGUAGE plpgsql"
        )
        sql = (
            "CREATE TRIGGER refuse BEFORE UPDATE ON fsm_action "
            "FOR EACH ROW EXECUTE FUNCTION refuse()"
        )
    store.db.execute_sql(sql)
    svc = Provider()
    svc.behaviour = lambda b, conf: attrs.evolve(b, ref=b.ref, confirmation=conf)

    class Twostep(Kind[Booking, Provider]):
        name = "twostep"
        retry = RetryPolicy(base=30.0)
        a = State(initial=True)
        b = State()
        c = State.done()
        transitions = (a.to(b, effect=book), b.to(c))

        @staticmethod
        def action_id(b: Booking) -> str:
            return f"two-{b.ref}"

    clock = Clock()
    ex: fsm.Executor[Provider] = fsm.Executor(store, svc, kinds=[Twostep], clock=clock)
    result = run(ex.drive(Twostep.create(Booking("b9"))))
    assert result.status is DriveStatus.ERROR
    row = store.row("two-b9")
    assert row is not None and row.state == "a" and row.attempts == 1
    assert row.wake_at == clock.now + 30.0 and row.lease_owner is None
    assert "disk says no" in (row.last_error or "")


def test_the_policy_names_errors_never_and_always_retried(store: fsm.Store) -> None:
    policy = RetryPolicy(never_retry=(KeyError,), always_retry=(TypeError,))
    assert policy.is_broken(KeyError("x")) and not policy.is_broken(TypeError("x"))
    assert policy.is_broken(fsm.KindError("fsm's own verdict always holds"))
    assert RetryPolicy().is_broken(AttributeError("x")) and not RetryPolicy().is_broken(OSError())
    svc = Provider()
    svc.behaviour = lambda b, conf: (_ for _ in ()).throw(TypeError("lib says: socket closed"))
    ex, _ = make(store, svc, retry=policy)

    class Lenient(BookingKind):
        name = "lenient"
        retry = policy

    ex.registry.register(Lenient)
    parked = run(ex.drive(Lenient.create(Booking("b10"))))
    assert parked.status is DriveStatus.PARKED
    row = store.row("booking-b10")
    assert row is not None and row.attempts == 1 and not row.broken


# -- step timeouts -------------------------------------------------------------------------


@attrs.frozen
class Hang(OneStep):
    name = "hang"

    async def advance(self, ctx: StepContext[Any]) -> fsm.Outcome:
        await asyncio.Event().wait()  # a remote that never answers
        return fsm.Done()

    def step_timeout(self) -> float | None:
        return 0.05


def test_a_hung_async_step_is_cancelled_at_its_timeout_and_retried(store: fsm.Store) -> None:
    ex: fsm.Executor[Any] = fsm.Executor(store, None, kinds=[Hang])
    result = run(ex.drive(Hang("h1")))
    assert result.status is DriveStatus.PARKED
    row = store.row("h1")
    assert row is not None and row.attempts == 1 and row.lease_owner is None
    assert "StepTimeout" in (row.last_error or "")


def test_a_blocking_step_that_outlives_its_lease_has_its_late_result_refused(
    store: fsm.Store,
) -> None:
    clock = Clock()
    other = fsm.open_store(store.db.database) if store.is_sqlite else None
    taken: dict[str, Any] = {}

    def block(ctx: StepContext[Provider], b: Booking) -> Booking:
        clock.now += store.lease_ttl + 1  # the step blocks past its lease ...
        taken["claim"] = store.claim(ctx.action_id, "someone-else", clock.now)  # ... and is taken
        return attrs.evolve(b, confirmation="late")

    class Slow(Kind[Booking, Provider]):
        name = "slow"
        a = State(initial=True)
        b = State.done()
        transitions = (a.to(b, effect=block),)

        @staticmethod
        def action_id(b: Booking) -> str:
            return b.ref

    ex: fsm.Executor[Provider] = fsm.Executor(store, Provider(), kinds=[Slow], clock=clock)
    result = run(ex.drive(Slow.create(Booking("s1"))))
    assert isinstance(taken["claim"], fsm.store.Claimed)
    assert result.status is DriveStatus.LEASE_LOST
    row = store.row("s1")
    assert row is not None and row.lease_owner == "someone-else" and row.state == "a"
    if other is not None:
        other.close()


# -- the cause of a failure is kept ---------------------------------------------------------


def test_a_compensated_rejection_keeps_its_reason_to_the_end(store: fsm.Store) -> None:
    svc = Provider()
    svc.refuse = True
    ex, _ = make(store, svc)
    result = run(ex.drive(BookingKind.create(Booking("c1")), DriveMode.UNTIL_DONE))
    assert result.status is DriveStatus.FAILED
    assert result.state == "cancelled"  # the terminal state reached, not the last step state
    assert "no seats left" in (result.cause or "") and "no seats left" in str(result.error)
    kept = store.outcome("booking-c1")
    assert kept is not None and kept.state == "cancelled" and "no seats left" in (kept.cause or "")
    last = store.transitions("booking-c1")[-1]
    assert last.outcome == "failed" and "no seats left" in (last.error or "")


def test_drive_result_names_the_terminal_state_reached(store: fsm.Store) -> None:
    ex, _ = make(store, Provider())
    result = run(ex.drive(BookingKind.create(Booking("c2"))))
    assert (result.status, result.state) == (DriveStatus.DONE, "booked")


# -- double drive ---------------------------------------------------------------------------


def test_double_drive_treats_a_transient_error_in_the_second_run_as_transient(
    store: fsm.Store,
) -> None:
    svc = Provider()
    runs = {"n": 0}

    def flaky_second(b: Booking, conf: str) -> Booking:
        runs["n"] += 1
        if runs["n"] == 2:
            raise OSError("timeout on the second run")
        return attrs.evolve(b, confirmation=conf)

    svc.behaviour = flaky_second
    ex, _ = make(store, svc, double_drive=True)
    result = run(ex.drive(BookingKind.create(Booking("d1"))))
    assert result.status is DriveStatus.PARKED
    row = store.row("booking-d1")
    assert (
        row is not None
        and row.attempts == 1
        and "timeout on the second run" in (row.last_error or "")
    )


@attrs.frozen
class Fickle(OneStep):
    """Ends in a different terminal state on every run: not idempotent."""

    name = "fickle"

    def advance(self, ctx: StepContext[Any]) -> fsm.Outcome:
        ctx.services["n"] += 1
        return fsm.Done(f"end-{ctx.services['n']}")


def test_double_drive_compares_the_step_into_a_terminal_state(store: fsm.Store) -> None:
    ex: fsm.Executor[Any] = fsm.Executor(store, {"n": 0}, kinds=[Fickle], double_drive=True)
    with pytest.raises(fsm.DoubleDriveMismatch, match=r"Done\(end-1\).*Done\(end-2\)"):
        run(ex.drive(Fickle("f1")))
    row = store.row("f1")  # parked as broken, not left due for a worker to spin on
    assert row is not None and row.broken and row.wake_at is None


def test_a_hand_written_action_with_an_unstorable_field_is_refused_at_registration() -> None:
    @attrs.frozen
    class Payment(fsm.Action[Any]):
        name = "payment"
        amount: decimal.Decimal

    with pytest.raises(fsm.DefinitionError, match=r"'Payment.amount' has type Decimal"):
        fsm.Registry([Payment])


async def never_answers(ctx: StepContext[None], b: Booking) -> Booking:
    await asyncio.Event().wait()
    return b


class HangingKind(Kind[Booking, None]):
    name = "hanging"
    timeout = 30.0  # the kind's default for its async steps ...
    a = State(initial=True, step_timeout=0.05)  # ... and one state's own
    b = State.done()
    transitions = (a.to(b, effect=never_answers),)

    @staticmethod
    def action_id(b: Booking) -> str:
        return b.ref


def test_a_state_timeout_cancels_its_hung_step(store: fsm.Store) -> None:
    ex: fsm.Executor[None] = fsm.Executor(store, None, kinds=[HangingKind], step_timeout=None)
    assert HangingKind.create(Booking("x")).step_timeout() == 0.05
    result = run(ex.drive(HangingKind.create(Booking("t2"))))
    assert result.status is DriveStatus.PARKED
    row = store.row("t2")
    assert row is not None and row.attempts == 1 and "0.05s timeout" in (row.last_error or "")


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "5"])
def test_a_kind_timeout_must_be_positive_seconds(bad: Any) -> None:
    with pytest.raises(fsm.DefinitionError, match="timeout is"):

        class Bad(Kind[Booking, None]):
            name = "bad"
            timeout = bad
            a = State(initial=True)
            b = State.done()
            transitions = (a.to(b),)

            @staticmethod
            def action_id(b: Booking) -> str:
                return b.ref


def test_double_drive_armed_by_the_environment_warns(
    store: fsm.Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("FSM_DOUBLE_DRIVE", "1")
    with caplog.at_level("WARNING", logger="fsm"):
        ex: fsm.Executor[Any] = fsm.Executor(store, None)
    assert ex.double_drive
    assert [r.getMessage() for r in caplog.records if "FSM_DOUBLE_DRIVE" in r.getMessage()]


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text for you")


@pytest.mark.parametrize("error", [Unprintable(), TypeError()], ids=["transient", "broken"])
def test_an_error_that_cannot_be_printed_still_ends_visibly(
    store: fsm.Store, error: Exception
) -> None:
    svc = Provider()
    svc.behaviour = lambda b, conf: (_ for _ in ()).throw(error)
    ex, _ = make(store, svc)
    result = run(ex.drive(BookingKind.create(Booking("u1"))))
    assert result.status in (DriveStatus.PARKED, DriveStatus.BROKEN)
    row = store.row("booking-u1")
    assert row is not None and type(error).__name__ in (row.last_error or "")
    assert row.wake_at is None or row.wake_at > ex.clock()  # never due again at once


@attrs.frozen
class BadPark(fsm.Action[Any]):
    name = "badpark"
    label: str
    after: str = "0"

    @property
    def id(self) -> str:
        return self.label

    def advance(self, ctx: StepContext[Any]) -> fsm.Outcome:
        return fsm.Park(self, wake_after=float(self.after))


@pytest.mark.parametrize("after", ["nan", "inf", "-5"])
def test_a_park_with_an_impossible_wake_up_is_a_bug_of_the_kind(
    store: fsm.Store, after: str
) -> None:
    ex: fsm.Executor[Any] = fsm.Executor(store, None, kinds=[BadPark])
    result = run(ex.drive(BadPark("p1", after)))
    assert result.status is DriveStatus.BROKEN and "wake_after" in str(result.error)


@pytest.mark.parametrize(
    "kwargs",
    [{"step_timeout": 0}, {"step_timeout": float("nan")}, {"redelivery_window": -1.0}],
)
def test_executor_settings_must_make_sense(store: fsm.Store, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must be"):
        fsm.Executor(store, None, **kwargs)


@pytest.mark.parametrize("ttl", [0, -1.0, float("nan"), float("inf")])
def test_a_lease_time_must_be_finite_and_positive(tmp_path: Any, ttl: float) -> None:
    with pytest.raises(ValueError, match="lease_ttl"):
        fsm.Store.sqlite(tmp_path / "x.sqlite", lease_ttl=ttl)


def test_the_worker_log_prints_a_remotes_error_text_escaped_on_one_line() -> None:
    import logging

    from fsm.worker.logs import LineFormatter

    record = logging.LogRecord(
        "fsm.worker",
        logging.INFO,
        __file__,
        1,
        "action %s: parked (%s)",
        ("a1", "bad\x1b[31mred\nsecond line\u202e"),
        None,
    )
    line = LineFormatter("%(message)s").format(record)
    assert line == "action a1: parked (bad\\x1b[31mred second line\\u202e)"


def test_a_broken_step_shows_the_users_frame_and_no_caret_lines(store: fsm.Store) -> None:
    def typo(b: Booking, conf: str) -> Booking:
        return b.confirmaton  # type: ignore[attr-defined, no-any-return]

    svc = Provider()
    svc.behaviour = typo
    ex, _ = make(store, svc)
    assert run(ex.drive(BookingKind.create(Booking("tb")))).status is DriveStatus.BROKEN
    text = store.row("booking-tb").last_error or ""  # type: ignore[union-attr]
    assert text.startswith("broken: AttributeError:") and "in typo" in text
    assert not any(line.strip(" ^~") == "" for line in text.splitlines())
