"""The step protocol and the drive loop, on a real SQLite file."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import attrs
import pytest
from actions import Script, one_step

import fsm
from fsm import DriveMode, DriveStatus

T0 = 1_800_000_000.0
Other = one_step("other")


def plain(key: str) -> str:
    """An idempotency key without its incarnation: ``a~3f2a...0.2`` -> ``a.2``."""
    return re.sub(r"~[0-9a-f]{12}", "", key)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class Sleeps:
    """Records sleeps and advances the clock instead of waiting."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        self.clock.now += seconds


def make(
    store: fsm.Store, services: dict[Any, Any], **kw: Any
) -> tuple[fsm.Executor[Any], Clock, Sleeps]:
    clock = Clock()
    sleeps = Sleeps(clock)
    ex: fsm.Executor[Any] = fsm.Executor(
        store, services, kinds=[Script, Other], clock=clock, sleep=sleeps, **kw
    )
    return ex, clock, sleeps


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_next_steps_persist_and_done_deletes(store: fsm.Store) -> None:
    seen: list[tuple[int, str]] = []

    def record(a: Script, ctx: fsm.StepContext[Any]) -> None:
        seen.append((a.n, ctx.idempotency_key))

    services = {("a", i): record for i in range(4)}
    ex, _, _ = make(store, services)
    result = run(ex.drive(Script("a")))
    assert result.status is DriveStatus.DONE and result.error is None and result.steps == 4
    assert [(n, plain(k)) for n, k in seen] == [(0, "a.0"), (1, "a.1"), (2, "a.2"), (3, "a.3")]
    assert len({k.split(".")[0] for _, k in seen}) == 1  # one incarnation throughout
    assert store.row("a") is None
    log = [(t.from_state, t.to_state, t.outcome, t.seq) for t in store.transitions("a")]
    assert log == [
        ("s0", "s1", "next", 0),
        ("s1", "s2", "next", 1),
        ("s2", "s3", "next", 2),
        ("s3", None, "done", 3),
    ]


def test_park_persists_and_returns_its_error(store: fsm.Store) -> None:
    boom = RuntimeError("server said wait")
    services = {("a", 1): lambda a, ctx: fsm.Park(a, wake_after=30, error=boom)}
    ex, _, _ = make(store, services)
    result = run(ex.drive(Script("a")))
    assert result.status is DriveStatus.PARKED
    assert result.error is boom and result.state == "s1"
    row = store.row("a")
    assert row is not None and row.state == "s1" and row.wake_at == T0 + 30
    assert row.last_error == "RuntimeError: server said wait"
    assert row.lease_owner is None


def test_park_without_wake_waits_for_notify(store: fsm.Store) -> None:
    gate = {"open": False}

    def wait(a: Script, ctx: fsm.StepContext[Any]) -> Any:
        return None if gate["open"] else fsm.Park(a)

    ex, _, sleeps = make(store, {("a", 1): wait})
    first = run(ex.drive(Script("a"), DriveMode.UNTIL_DONE))
    assert first.status is DriveStatus.PARKED and sleeps.calls == []
    row = store.row("a")
    assert row is not None and row.wake_at is None
    assert run(ex.run_due()).total == 0
    gate["open"] = True
    assert run(ex.notify("a")).status is DriveStatus.DONE


def test_failed_deletes_and_reports(store: fsm.Store) -> None:
    services = {("a", 2): lambda a, ctx: fsm.Failed("insufficient funds")}
    ex, _, _ = make(store, services)
    result = run(ex.drive(Script("a")))
    assert result.status is DriveStatus.FAILED and result.error == "insufficient funds"
    assert store.row("a") is None
    assert store.transitions("a")[-1].outcome == "failed"


def test_transient_errors_back_off_with_the_seed_curve_and_persist(store: fsm.Store) -> None:
    failures = {"left": 3}

    def flaky(a: Script, ctx: fsm.StepContext[Any]) -> None:
        if failures["left"]:
            failures["left"] -= 1
            raise ConnectionError("server unavailable")

    ex, clock, _ = make(store, {("a", 1): flaky})
    waits = []
    for expected_attempts in (1, 2, 3):
        result = run(ex.drive("a") if expected_attempts > 1 else ex.drive(Script("a")))
        assert result.status is DriveStatus.PARKED and result.error is None
        row = store.row("a")
        assert row is not None and row.attempts == expected_attempts
        assert row.last_error == "ConnectionError: server unavailable"
        waits.append(row.wake_at - clock.now)
    assert waits == [1.0, 4.0, 9.0]
    done = run(ex.drive("a"))
    assert done.status is DriveStatus.DONE


def test_next_resets_the_retry_counter(store: fsm.Store) -> None:
    calls = {"s1": 0, "s2": 0}
    attempts_seen: list[int] = []

    def fail_once(a: Script, ctx: fsm.StepContext[Any]) -> None:
        attempts_seen.append(ctx.attempts)
        key = a.state
        calls[key] += 1
        if calls[key] == 1:
            raise TimeoutError("slow")

    ex, _, sleeps = make(store, {("a", 1): fail_once, ("a", 2): fail_once})
    result = run(ex.drive(Script("a"), DriveMode.UNTIL_DONE))
    assert result.status is DriveStatus.DONE
    assert sleeps.calls == [1.0, 1.0]  # counter back to 0 after the Next out of s1
    assert attempts_seen == [0, 1, 0, 1]


def test_backoff_cap_and_jitter() -> None:
    capped = fsm.RetryPolicy(base=1.0, cap=10.0)
    assert [capped.delay(n) for n in (1, 2, 3, 4, 100)] == [1.0, 4.0, 9.0, 10.0, 10.0]
    assert fsm.RetryPolicy(cap=None).delay(100) == 10_000.0
    import random

    rng = random.Random(7)
    jittered = fsm.RetryPolicy(jitter=True)
    draws = [jittered.delay(3, rng) for _ in range(200)]
    assert all(0.0 <= d <= 9.0 for d in draws) and len(set(draws)) > 100
    with pytest.raises(ValueError, match="cap"):
        fsm.RetryPolicy(cap=-1)


def test_rejection_goes_to_on_rejection_with_the_pre_step_state(store: fsm.Store) -> None:
    seen: list[Any] = []

    def mutate_then_reject(a: Script, ctx: fsm.StepContext[Any]) -> None:
        ctx.acquire("should-not-stick")
        raise fsm.Rejected("invalid argument", code="InvalidArgument")

    def handler(a: Script, ctx: fsm.StepContext[Any], error: fsm.Rejected) -> Any:
        seen.append((a, error.code, ctx.resources))
        return fsm.Next(attrs.evolve(a, n=3))

    ex, _, _ = make(store, {("a", 1): mutate_then_reject, ("a", "rejection"): handler})
    result = run(ex.drive(Script("a")))
    assert result.status is DriveStatus.DONE
    assert seen == [(Script("a", 1), "InvalidArgument", frozenset())]
    vias = [(t.from_state, t.via) for t in store.transitions("a")]
    assert ("s1", "rejection") in vias
    assert store.all_resources() == {}


def test_default_rejection_fails_and_transient_does_not(store: fsm.Store) -> None:
    ex, _, _ = make(store, {("a", 0): lambda a, c: (_ for _ in ()).throw(fsm.Rejected("no"))})
    result = run(ex.drive(Script("a")))
    assert result.status is DriveStatus.FAILED and isinstance(result.error, fsm.Rejected)
    ex2, _, _ = make(store, {("b", 0): lambda a, c: (_ for _ in ()).throw(ValueError("x"))})
    result2 = run(ex2.drive(Script("b")))
    assert result2.status is DriveStatus.PARKED and store.row("b") is not None


@pytest.mark.parametrize("route", ["retry", "rejection"])
def test_failing_handler_leaves_the_checkpoint_untouched(store: fsm.Store, route: str) -> None:
    error: BaseException = fsm.Rejected("no") if route == "rejection" else OSError("down")

    def boom(a: Script, ctx: fsm.StepContext[Any]) -> None:
        raise error

    def bad_handler(*args: Any) -> Any:
        raise RuntimeError("handler broke")

    ex, _, _ = make(store, {("a", 1): boom, ("a", route): bad_handler})
    result = run(ex.drive(Script("a")))
    # A handler that raises is a bug of the kind: parked as broken, never due on its own.
    assert result.status is DriveStatus.BROKEN
    assert isinstance(result.error, RuntimeError) and str(result.error) == "handler broke"
    row = store.row("a")
    assert row is not None and row.state == "s1" and row.attempts == 0 and row.broken
    assert row.wake_at is None and "handler broke" in (row.last_error or "")
    assert row.lease_owner is None
    assert [t.outcome for t in store.transitions("a")] == ["next", "broken"]


def test_until_done_sleeps_through_parks_and_continues(store: fsm.Store) -> None:
    polls = {"n": 0}

    def pending(a: Script, ctx: fsm.StepContext[Any]) -> Any:
        polls["n"] += 1
        return fsm.Park(a, wake_after=2.0) if polls["n"] < 3 else None

    ex, _, sleeps = make(store, {("a", 1): pending})
    result = run(ex.drive(Script("a"), DriveMode.UNTIL_DONE))
    assert result.status is DriveStatus.DONE
    assert sleeps.calls == [2.0, 2.0]
    # the same action under UNTIL_PARK_OR_DONE returns at the first park
    polls["n"] = 0
    ex2, _, sleeps2 = make(store, {("b", 1): pending})
    assert run(ex2.drive(Script("b"))).status is DriveStatus.PARKED and sleeps2.calls == []


def test_idempotency_key_is_stable_across_redrives_and_parks(store: fsm.Store) -> None:
    keys: list[str] = []
    fail = {"n": 2}

    def effect(a: Script, ctx: fsm.StepContext[Any]) -> None:
        keys.append(ctx.idempotency_key)
        if fail["n"]:
            fail["n"] -= 1
            raise OSError("lost response")

    ex, _, _ = make(store, {("a", 2): effect})
    run(ex.drive(Script("a")))
    run(ex.drive("a"))
    run(ex.drive("a"))
    assert [plain(k) for k in keys] == ["a.2", "a.2", "a.2"] and len(set(keys)) == 1


def test_start_is_idempotent_and_checks_kind_and_id(store: fsm.Store) -> None:
    ex, _, _ = make(store, {})
    assert run(ex.start(Script("a", n=1))).status is fsm.StartStatus.STARTED
    assert run(ex.start(Script("a", n=2))).status is fsm.StartStatus.LIVE
    row = store.row("a")
    assert row is not None and row.state == "s1"
    with pytest.raises(fsm.KindMismatch, match="already belongs to a live 'script'"):
        run(ex.start(Other("a")))
    for bad in ["", "has:colon", "-leading", "trailing.", "sp ace", "é", "x" * 201]:
        with pytest.raises(fsm.InvalidActionId):
            run(ex.start(Script(bad)))
    assert run(ex.start(Script("ok-id_1.2")))
    assert run(ex.start(Script("y" * 200)))


def test_outcome_of_the_wrong_type_parks_the_action_as_broken(store: fsm.Store) -> None:
    ex, _, _ = make(store, {("a", 0): lambda a, c: "oops"})
    result = run(ex.drive(Script("a")))
    assert result.status is DriveStatus.BROKEN and isinstance(result.error, fsm.KindError)
    row = store.row("a")
    assert row is not None and row.broken and row.attempts == 0 and row.wake_at is None
    assert "expected Next, Park, Done or Failed" in (row.last_error or "")


def test_two_tasks_never_drive_the_same_action(store: fsm.Store) -> None:
    entered = asyncio.Event()
    release = asyncio.Event()

    async def hold(a: Script, ctx: fsm.StepContext[Any]) -> None:
        entered.set()
        await release.wait()

    class Holder(Script):
        name = "holder"

        async def advance(self, ctx: fsm.StepContext[Any]) -> Any:  # type: ignore[override]
            if self.n == 0:
                await hold(self, ctx)
            return super().advance(ctx)

    ex, _, _ = make(store, {})
    ex.registry.register(Holder)

    async def scenario() -> tuple[fsm.DriveResult, fsm.DriveResult]:
        await ex.start(Holder("h"))
        first = asyncio.create_task(ex.drive("h"))
        await entered.wait()
        second = await ex.drive("h")
        release.set()
        return await first, second

    first, second = run(scenario())
    assert second.status is DriveStatus.BUSY and second.steps == 0
    assert first.status is DriveStatus.DONE


def test_delete_releases_resources_and_removes_the_row(store: fsm.Store) -> None:
    ex, _, _ = make(store, {("a", 1): lambda a, c: fsm.Park(a)})
    run(ex.start(Script("a"), resources=["vtxo.1", "vtxo.2"]))
    run(ex.drive("a"))
    assert store.all_resources() == {"vtxo.1": "a", "vtxo.2": "a"}
    assert run(ex.delete("a")) is True
    assert store.row("a") is None and store.all_resources() == {}
    assert run(ex.delete("a")) is False


def test_resume_all_drives_every_live_action(store: fsm.Store) -> None:
    ex, _, _ = make(store, {("b", 1): lambda a, c: fsm.Park(a)})
    for name in "abc":
        run(ex.start(Script(name)))
    report = run(ex.resume_all(keep_results=True))
    statuses = {r.id: r.status for r in report.results}
    assert statuses == {"a": DriveStatus.DONE, "b": DriveStatus.PARKED, "c": DriveStatus.DONE}
    assert report.count(DriveStatus.DONE) == 2 and report.quarantined == ()
    assert report.total == 3 and report.failures == ()


def test_lease_lost_write_is_refused(store: fsm.Store, caplog: pytest.LogCaptureFixture) -> None:
    """A driver whose claim was taken over cannot overwrite the newer state, and says so
    once, naming the action once."""

    def steal(a: Script, ctx: fsm.StepContext[Any]) -> None:
        # Another driver claims the action while this step runs (our lease looks expired).
        assert isinstance(store.claim("a", "intruder", T0 + 10_000), fsm.store.Claimed)

    ex, _, _ = make(store, {("a", 1): steal})
    result = run(ex.drive(Script("a")))
    assert result.status is DriveStatus.LEASE_LOST
    assert str(result.error) == "action a: claim epoch 1 was taken over"
    row = store.row("a")
    assert row is not None and row.state == "s1" and row.lease_owner == "intruder"
    lines = [r.getMessage() for r in caplog.records if "taken over" in r.getMessage()]
    assert lines == ["action a: claim epoch 1 was taken over; dropping the action"]


def test_newer_schema_is_refused(store: fsm.Store, open_store: Any) -> None:
    store.db.execute_sql("UPDATE fsm_meta SET value = '999' WHERE key = 'schema_version'")
    with pytest.raises(fsm.SchemaError, match="newer than this fsm"):
        open_store()


def test_on_commit_sees_every_committed_step(store: fsm.Store) -> None:
    seen: list[tuple[str, str, str | None, str, str]] = []

    def flaky(a: Script, ctx: fsm.StepContext[Any]) -> None:
        if ctx.attempts == 0:
            raise OSError("once")

    ex, _, _ = make(
        store,
        {("a", 1): flaky},
        on_commit=lambda i, e: seen.append((i, e.from_state, e.to_state, e.outcome, e.via)),
    )
    run(ex.drive(Script("a"), DriveMode.UNTIL_DONE))
    assert seen == [
        ("a", "s0", "s1", "next", "step"),
        ("a", "s1", "s1", "park", "retry"),
        ("a", "s1", "s2", "next", "step"),
        ("a", "s2", "s3", "next", "step"),
        ("a", "s3", None, "done", "step"),
    ]


def test_update_changes_a_waiting_action_under_its_lease(store: fsm.Store) -> None:
    ex, _, _ = make(store, {("a", 1): lambda a, c: None if a.last == 1 else fsm.Park(a)})
    run(ex.drive(Script("a")))
    row = store.row("a")
    assert row is not None and row.state == "s1"
    updated = run(ex.update("a", lambda a: attrs.evolve(a, last=1)))  # type: ignore[arg-type]
    assert updated == Script("a", 1, last=1)
    assert run(ex.drive("a")).status is DriveStatus.DONE  # the change took effect
    assert [t.via for t in store.transitions("a")][:3] == ["step", "step", "update"]
    with pytest.raises(LookupError, match="no live action"):
        run(ex.update("a", lambda a: a))
    with pytest.raises(fsm.FsmError, match="ids must be stable"):
        run(ex.start(Script("b")))
        run(ex.update("b", lambda a: Script("c")))
    assert store.row("b") is not None and store.row("b").lease_owner is None  # type: ignore[union-attr]


def test_a_retry_policy_can_report_errors_to_the_caller(store: fsm.Store) -> None:
    boom = ConnectionError("server unavailable")

    def fail(a: Script, ctx: fsm.StepContext[Any]) -> None:
        raise boom

    quiet, _, _ = make(store, {("a", 1): fail})
    assert run(quiet.drive(Script("a"))).error is None
    loud, _, _ = make(store, {("b", 1): fail}, retry=fsm.RetryPolicy(report_errors=True))
    result = run(loud.drive(Script("b")))
    assert result.status is DriveStatus.PARKED and result.error is boom


def test_prune_log_removes_only_older_rows(store: fsm.Store) -> None:
    clock = Clock()
    ex: fsm.Executor[Any] = fsm.Executor(store, {}, kinds=[Script], clock=clock)
    run(ex.drive(Script("old")))
    clock.now += 1000
    run(ex.drive(Script("new")))
    assert store.prune_log(older_than=T0 + 500) == 4
    assert {t.action_id for t in store.transitions()} == {"new"}


def test_driving_a_new_action_commits_its_start_once_already_claimed(store: fsm.Store) -> None:
    """Issue 12: `drive(action)` of a new action creates the row already claimed by this
    executor; no claim commits after the start."""
    points: list[str] = []
    store.hooks = fsm.store.StoreHooks(point=points.append)
    seen: list[Any] = []

    def look(a: Script, ctx: fsm.StepContext[Any]) -> None:
        seen.extend((list(points), store.row("a"), store.claim("a", "someone-else", T0 + 1)))

    ex, _, _ = make(store, {("a", 0): look})
    result = run(ex.drive(Script("a")))
    assert result.status is DriveStatus.DONE and result.steps == 4
    assert plain(result.key or "") == "a.3"
    before_the_first_step, row, claim = seen
    assert before_the_first_step == ["start.before", "start.after"]  # one commit, no claim
    assert [p for p in points if p.endswith(".after")][-4:] == [
        *["checkpoint.after"] * 3,
        "finish.after",
    ]
    assert isinstance(row, fsm.store.RowInfo) and row.lease_owner == ex.owner
    assert claim is fsm.store.ClaimMiss.BUSY  # the lease is live from the start
    assert store.transitions("a")[0].seq == 0


def test_a_claimed_start_is_fenced_like_a_claim(store: fsm.Store) -> None:
    """The row a drive starts claimed is fenced by its epoch: a claim taken meanwhile (the
    lease of a certainly dead owner) refuses the starting drive's first write."""

    def taken(a: Script, ctx: fsm.StepContext[Any]) -> None:
        store.unclaim("a", 1)  # another driver took it over and let go: the epoch moved on

    ex, _, _ = make(store, {("a", 0): taken})
    result = run(ex.drive(Script("a")))
    assert result.status is DriveStatus.LEASE_LOST
    row = store.row("a")
    assert row is not None and row.state == "s0" and row.lease_owner is None
    again = run(ex.drive(Script("a")))  # the live row wins: claimed and driven as usual
    assert again.status is DriveStatus.DONE
