"""Crash points, double-drive mode and database fault injection."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import attrs
import pytest
from actions import Ledger, Script, plain_keys, start_transfers
from processes import died, run_child

import fsm
from fsm import DriveStatus
from fsm.store import NO_HOOKS, WRITE_POINTS, ClaimMiss
from fsm.testing.faults import CrashPlan, DatabaseFaults, all_points


def test_crash_plan_parsing() -> None:
    plan = CrashPlan.parse("checkpoint.after:3")
    assert (plan.point, plan.n) == ("checkpoint.after", 3)
    for bad in ("checkpoint:3", "nowhere.after:1", "finish.before:0", "finish.before:x"):
        with pytest.raises(ValueError, match="expected POINT:N"):
            CrashPlan.parse(bad)
    assert len(all_points()) == 2 * len(WRITE_POINTS)


@pytest.mark.parametrize(
    "point",
    ["claim.before", "claim.after", "checkpoint.before", "checkpoint.after", "resources.after",
     "finish.before", "finish.after"],
)  # fmt: skip
@pytest.mark.slow
def test_every_crash_point_kills_and_the_next_run_finishes(tmp_path: Path, point: str) -> None:
    db, ledger_path = tmp_path / "a.sqlite", tmp_path / "ledger.sqlite"
    store = fsm.Store.sqlite(db)
    start_transfers(store, ["t1"])
    store.close()

    crashed = run_child("drive_child.py", db, ledger_path, env={"FSM_CRASH": f"{point}:1"})
    assert died(crashed), crashed.stderr
    finished = run_child("drive_child.py", db, ledger_path)
    assert finished.returncode == 0, finished.stderr
    store = fsm.Store.sqlite(db)
    assert store.rows() == [] and store.all_resources() == {}
    effects = plain_keys(Ledger.on_file(ledger_path).effects())
    assert set(effects) == {"t1.0", "t1.1", "t1.2"}
    store.close()


@pytest.mark.slow
def test_a_drive_killed_right_after_its_claimed_start_is_taken_over(tmp_path: Path) -> None:
    """`drive(action)` creates the row already claimed (no claim commit after the start):
    killed right there, the dead process's lease is taken over at once by the next run."""
    db, ledger_path = tmp_path / "a.sqlite", tmp_path / "ledger.sqlite"
    crashed = run_child("start_drive_child.py", db, ledger_path, env={"FSM_CRASH": "start.after:1"})
    assert died(crashed), crashed.stderr
    store = fsm.Store.sqlite(db)
    row = store.row("t1")
    assert row is not None and row.lease_owner is not None  # claimed by the dead process
    store.close()
    assert Ledger.on_file(ledger_path).effects() == {}
    finished = run_child("drive_child.py", db, ledger_path)
    assert finished.returncode == 0, finished.stderr
    store = fsm.Store.sqlite(db)
    assert store.rows() == [] and store.all_resources() == {}
    store.close()
    effects = plain_keys(Ledger.on_file(ledger_path).effects())
    assert effects == {"t1.0": 1, "t1.1": 1, "t1.2": 1}


def test_double_drive_accepts_an_idempotent_step(store: fsm.Store) -> None:
    ex: fsm.Executor[Any] = fsm.Executor(store, {}, kinds=[Script], double_drive=True)
    calls: list[int] = []
    services = {("a", 1): lambda a, c: calls.append(a.n)}
    ex.services = services
    assert asyncio.run(ex.drive(Script("a"))).status is DriveStatus.DONE
    assert calls == [1, 1]  # the step ran twice from the same state


def test_double_drive_fails_loudly_on_a_non_idempotent_step(store: fsm.Store) -> None:
    counter = {"n": 0}

    def fresh_key_each_time(a: Script, ctx: fsm.StepContext[Any]) -> Any:
        counter["n"] += 1  # e.g. a new random key or a fresh movement per run
        return fsm.Next(attrs.evolve(a, n=2, last=3 + counter["n"]))

    ex: fsm.Executor[Any] = fsm.Executor(
        store, {("a", 1): fresh_key_each_time}, kinds=[Script], double_drive=True
    )
    with pytest.raises(fsm.DoubleDriveMismatch, match="not idempotent"):
        asyncio.run(ex.drive(Script("a")))
    row = store.row("a")
    assert row is not None and row.state == "s1" and row.lease_owner is None


def test_double_drive_exempts_a_first_park(store: fsm.Store) -> None:
    polls = {"n": 0}

    def pending_then_ready(a: Script, ctx: fsm.StepContext[Any]) -> Any:
        polls["n"] += 1
        return fsm.Park(a, wake_after=1) if polls["n"] == 1 else None

    ex: fsm.Executor[Any] = fsm.Executor(
        store, {("a", 1): pending_then_ready}, kinds=[Script], double_drive=True
    )
    assert asyncio.run(ex.drive(Script("a"))).status is DriveStatus.DONE


def test_double_drive_is_read_from_the_environment(
    store: fsm.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FSM_DOUBLE_DRIVE", "1")
    assert fsm.Executor(store).double_drive is True
    monkeypatch.setenv("FSM_DOUBLE_DRIVE", "0")
    assert fsm.Executor(store).double_drive is False


def test_every_action_ends_despite_database_faults(store_url: str) -> None:
    faults = DatabaseFaults(rate=0.15, seed=42)
    store = fsm.open_store(store_url, hooks=faults.hooks())
    ex: fsm.Executor[Any] = fsm.Executor(
        store, {("a3", 2): lambda a, c: fsm.Failed("expected")}, kinds=[Script]
    )
    names = [f"a{i}" for i in range(12)]

    async def scenario() -> None:
        for name in names:
            while True:
                try:
                    await ex.start(Script(name))
                    break
                except fsm.FsmError:
                    raise
                except Exception:  # the injected database error: try again
                    continue
        for _ in range(200):
            try:
                await ex.resume_all()
            except Exception:
                continue
            if not store.live_ids():
                return

    asyncio.run(scenario())
    store.hooks = NO_HOOKS
    assert faults.injected > 10
    assert store.rows() == [] and store.all_resources() == {}
    ends = {t.action_id: t.outcome for t in store.transitions() if t.to_state is None}
    assert ends == {n: ("failed" if n == "a3" else "done") for n in names}
    store.close()


def test_a_lease_left_by_a_failed_store_call_is_taken_again_by_its_owner(
    store: fsm.Store,
) -> None:
    ex: fsm.Executor[Any] = fsm.Executor(
        store, {("a", 1): lambda a, c: fsm.Park(a)}, kinds=[Script]
    )
    asyncio.run(ex.start(Script("a")))
    claimed = store.claim("a", ex.owner, 0.0)  # a drive whose store call failed mid-way
    assert isinstance(claimed, fsm.store.Claimed)
    assert store.claim("a", "someone-else", 0.0) is ClaimMiss.BUSY  # others still wait for it
    assert asyncio.run(ex.drive("a")).status is DriveStatus.PARKED  # its owner goes on
