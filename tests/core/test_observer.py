"""The executor's observer seam (`fsm.observer`): what an observer hears of each step, how
each way a step can end is told, and that an executor without one never builds the observed
drive. Also: every log record of a drive names its action, kind, state and step key."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from typing import Any

import attrs
import pytest
from actions import Script
from processes import child_env

import fsm
from fsm import DriveStatus, StepEnd, StepStart
from fsm.executor.observed import ObservedDrive
from fsm.ids import idempotency_key
from fsm.store.hooks import StoreHooks

T0 = 1_800_000_000.0


@attrs.define
class Recorder:
    """An observer that keeps what it is told: (start, end) per step, and the starts."""

    begun: list[tuple[str, str, str, str]] = attrs.Factory(list)
    steps: list[tuple[StepStart, StepEnd | None]] = attrs.Factory(list)

    def started(self, action_id: str, kind: str, state: str, incarnation: str) -> None:
        self.begun.append((action_id, kind, state, incarnation))

    def step(self, start: StepStart) -> Watch:
        self.steps.append((start, None))
        return Watch(self, len(self.steps) - 1)

    def ends(self) -> list[StepEnd]:
        ends = [end for _, end in self.steps]
        assert None not in ends, "a step was never told how it ended"
        return [e for e in ends if e is not None]


@attrs.define
class Watch:
    recorder: Recorder
    index: int

    def ended(self, end: StepEnd) -> None:
        start, before = self.recorder.steps[self.index]
        assert before is None, "a step was told twice how it ended"
        self.recorder.steps[self.index] = (start, end)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def executor(store: fsm.Store, services: dict[Any, Any], observer: Any = None) -> fsm.Executor[Any]:
    return fsm.Executor(
        store, services, kinds=[Script], clock=Clock(), observer=observer, step_timeout=None
    )


def test_every_step_is_told_with_its_key_attempt_and_commit(store: fsm.Store) -> None:
    rec = Recorder()
    ex = executor(store, {}, rec)
    result = asyncio.run(ex.drive(Script("a", last=2)))
    assert result.status is DriveStatus.DONE
    ((action_id, kind, state, incarnation),) = rec.begun
    assert (action_id, kind, state) == ("a", "script", "s0")
    starts = [s for s, _ in rec.steps]
    assert [(s.state, s.seq, s.attempt) for s in starts] == [
        ("s0", 0, 1),
        ("s1", 1, 1),
        ("s2", 2, 1),
    ]
    assert {s.incarnation for s in starts} == {incarnation}
    assert [s.key for s in starts] == [idempotency_key("a", incarnation, n) for n in range(3)]
    ends = rec.ends()
    assert [(e.outcome, e.via, e.to_state) for e in ends] == [
        ("next", "step", "s1"),
        ("next", "step", "s2"),
        ("done", "step", "s2"),
    ]
    for end in ends:
        assert end.written and end.commit is not None and end.commit > 0
        assert end.duration is not None and end.duration >= 0
        assert end.error is None
    # The result names the kind and the key of the step that ended the action.
    assert (result.kind, result.key) == ("script", starts[-1].key)


def test_a_retry_a_rejection_and_a_broken_step_are_told(db_path: Any) -> None:
    store = fsm.Store.sqlite(db_path)

    def flaky(a: Script, ctx: fsm.StepContext[Any]) -> None:
        if ctx.attempts == 0:
            raise ConnectionError("the remote hung up")

    def refuse(a: Script, ctx: fsm.StepContext[Any]) -> None:
        raise fsm.Rejected("insufficient funds")

    def bug(a: Script, ctx: fsm.StepContext[Any]) -> None:
        raise TypeError("a bug in the kind")

    rec = Recorder()
    ex = executor(store, {("r", 1): flaky, ("j", 0): refuse, ("b", 0): bug}, rec)

    async def scenario() -> list[fsm.DriveResult]:
        results = [await ex.drive(Script("r", last=1))]
        ex.clock.now += 10  # type: ignore[attr-defined]  # past the retry's backoff
        results.append(await ex.drive("r"))
        results.append(await ex.drive(Script("j")))
        results.append(await ex.drive(Script("b")))
        return results

    parked, done, failed, broken = asyncio.run(scenario())
    assert (parked.status, done.status) == (DriveStatus.PARKED, DriveStatus.DONE)
    assert (failed.status, broken.status) == (DriveStatus.FAILED, DriveStatus.BROKEN)
    told = [(s.action_id, s.state, s.attempt, e.outcome, e.via) for s, e in rec.steps if e]
    assert told == [
        ("r", "s0", 1, "next", "step"),
        ("r", "s1", 1, "park", "retry"),  # the transient error, parked for its backoff
        ("r", "s1", 2, "done", "step"),  # the second try says so
        ("j", "s0", 1, "failed", "rejection"),
        ("b", "s0", 1, "broken", "step"),
    ]
    ends = {(s.action_id, e.outcome): e for s, e in rec.steps if e}
    assert ends["r", "park"].error == "ConnectionError: the remote hung up"
    assert (
        ends["j", "failed"].error is not None and "insufficient funds" in ends["j", "failed"].error
    )
    assert (
        ends["b", "broken"].error is not None and "a bug in the kind" in ends["b", "broken"].error
    )
    assert all(e.written for e in ends.values())
    store.close()


def test_a_refused_write_is_told_as_lease_lost(store: fsm.Store) -> None:
    def steal(a: Script, ctx: fsm.StepContext[Any]) -> None:
        assert isinstance(store.claim("a", "intruder", T0 + 10_000), fsm.store.Claimed)

    rec = Recorder()
    result = asyncio.run(executor(store, {("a", 1): steal}, rec).drive(Script("a")))
    assert result.status is DriveStatus.LEASE_LOST
    last = rec.ends()[-1]
    assert (last.outcome, last.via, last.to_state, last.commit) == (
        "lease_lost",
        "step",
        "s1",
        None,
    )
    assert not last.written and last.error == "LeaseLost: action a: claim epoch 1 was taken over"


def test_a_failed_write_is_told_as_error(db_path: Any) -> None:
    fail = {"armed": False}

    def point(name: str) -> None:
        if fail["armed"] and name == "checkpoint.before":
            fail["armed"] = False
            raise OSError("disk on fire")

    store = fsm.Store.sqlite(db_path, hooks=StoreHooks(point=point))

    def arm(a: Script, ctx: fsm.StepContext[Any]) -> None:
        fail["armed"] = True

    rec = Recorder()
    result = asyncio.run(executor(store, {("a", 1): arm}, rec).drive(Script("a")))
    assert result.status is DriveStatus.ERROR
    last = rec.ends()[-1]
    assert (last.outcome, last.to_state, last.commit) == ("error", "s1", None)
    assert last.error is not None and "disk on fire" in last.error
    store.close()


def test_a_cancelled_step_is_told_and_the_cancellation_goes_on(db_path: Any) -> None:
    store = fsm.Store.sqlite(db_path)
    rec = Recorder()

    async def scenario() -> None:
        entered = asyncio.Event()

        async def hang(a: Script, ctx: fsm.StepContext[Any]) -> None:
            entered.set()
            await asyncio.Event().wait()

        ex = executor(store, {("a", 0): hang}, rec)
        task = asyncio.create_task(ex.drive(Script("a")))
        await entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    (end,) = rec.ends()
    assert (end.outcome, end.via, end.to_state, end.commit) == ("cancelled", None, "s0", None)
    row = store.row("a")
    assert row is not None and row.lease_owner is None  # let go, as without an observer
    store.close()


def test_an_observer_that_raises_ends_the_drive_like_a_crash(db_path: Any) -> None:
    class Broken(Recorder):
        def step(self, start: StepStart) -> Watch:
            raise RuntimeError("the observer is broken")

    store = fsm.Store.sqlite(db_path)
    with pytest.raises(RuntimeError, match="the observer is broken"):
        asyncio.run(executor(store, {}, Broken()).drive(Script("a")))
    row = store.row("a")
    assert row is not None and row.state == "s0" and row.lease_owner is None
    store.close()


def test_without_an_observer_no_observed_drive_is_built(
    db_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("an executor without an observer built an ObservedDrive")

    monkeypatch.setattr(ObservedDrive, "__init__", refuse)
    store = fsm.Store.sqlite(db_path)
    assert asyncio.run(executor(store, {}).drive(Script("a"))).status is DriveStatus.DONE
    store.close()


def test_every_drive_record_names_action_kind_state_and_key(
    db_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    def flaky(a: Script, ctx: fsm.StepContext[Any]) -> None:
        ctx.log.warning("the step's own line")
        raise ConnectionError("the remote hung up")

    store = fsm.Store.sqlite(db_path)
    ex = executor(store, {("a", 1): flaky})
    with caplog.at_level(logging.INFO, logger="fsm.executor"):
        result = asyncio.run(ex.drive(Script("a")))
    assert result.status is DriveStatus.PARKED
    row = store.row("a")
    assert row is not None
    key = result.key
    assert key == idempotency_key("a", row.incarnation, 1)  # the step that will run again
    drive_records = [r for r in caplog.records if r.name == "fsm.executor.drive"]
    messages = [r.getMessage() for r in drive_records]
    assert "action a: the step's own line" in messages
    assert "action a: transient error (attempt 1): ConnectionError: the remote hung up" in messages
    for record in drive_records:
        fields = (record.action, record.kind, record.state, record.key)  # type: ignore[attr-defined]
        assert fields == ("a", "script", "s1", key)
    store.close()


def test_import_fsm_does_not_import_opentelemetry() -> None:
    code = (
        "import sys, fsm, fsm.cli, fsm.worker\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('opentelemetry', 'prometheus')))\n"
        "print(loaded)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=child_env(), capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
