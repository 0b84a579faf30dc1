"""Real processes: SIGKILL between an effect and its checkpoint, and concurrent drivers."""

from __future__ import annotations

from pathlib import Path

import pytest
from actions import Ledger, plain_keys, start_transfers
from processes import after_call, after_commits, died, run_child, spawn_child

import fsm

pytestmark = pytest.mark.slow


def start(db: Path, labels: list[str]) -> None:
    store = fsm.Store.sqlite(db)
    start_transfers(store, labels)
    store.close()


@pytest.mark.parametrize("crash_at", ["debit", "credit", "notify"])
def test_sigkill_after_an_effect_resumes_in_a_new_process(tmp_path: Path, crash_at: str) -> None:
    db, ledger_path = tmp_path / "a.sqlite", tmp_path / "ledger.sqlite"
    start(db, ["t1"])
    nth_effect = ["debit", "credit", "notify"].index(crash_at) + 1

    crashing = run_child("drive_child.py", db, ledger_path, kill=after_call("apply", nth_effect))
    assert died(crashing), crashing.stderr

    store = fsm.Store.sqlite(db)
    row = store.row("t1")
    assert row is not None and row.state == crash_at  # the checkpoint did not move
    assert row.lease_owner is not None  # the dead driver's lease is still on the row
    store.close()

    resumed = run_child("drive_child.py", db, ledger_path)
    assert resumed.returncode == 0, resumed.stderr

    store = fsm.Store.sqlite(db)
    assert store.row("t1") is None
    assert store.all_resources() == {}
    steps = [(t.from_state, t.outcome) for t in store.transitions("t1")]
    assert steps == [("debit", "next"), ("credit", "next"), ("notify", "done")]
    effects = plain_keys(Ledger.on_file(ledger_path).effects())
    assert set(effects) == {"t1.0", "t1.1", "t1.2"}  # each effect applied under one key
    crashed_key = {"debit": "t1.0", "credit": "t1.1", "notify": "t1.2"}[crash_at]
    assert effects[crashed_key] == 2  # re-run once after the crash, same idempotency key
    assert sum(effects.values()) == 4


def test_sigkill_after_a_commit_resumes_at_the_next_step(tmp_path: Path) -> None:
    db, ledger_path = tmp_path / "a.sqlite", tmp_path / "ledger.sqlite"
    start(db, ["t1"])
    crashing = run_child("drive_child.py", db, ledger_path, kill=after_commits(2))
    assert died(crashing), crashing.stderr
    store = fsm.Store.sqlite(db)
    row = store.row("t1")
    assert row is not None and row.state == "notify"  # two checkpoints written, no more
    assert [t.to_state for t in store.transitions("t1")] == ["credit", "notify"]
    store.close()
    assert run_child("drive_child.py", db, ledger_path).returncode == 0
    effects = plain_keys(Ledger.on_file(ledger_path).effects())
    assert effects == {"t1.0": 1, "t1.1": 1, "t1.2": 1}  # nothing to replay: no effect twice


def test_no_resource_outlives_its_action_after_a_crash(tmp_path: Path) -> None:
    db, ledger_path = tmp_path / "a.sqlite", tmp_path / "ledger.sqlite"
    start(db, ["t1"])
    crashing = run_child("drive_child.py", db, ledger_path, kill=after_call("apply", 2))
    assert died(crashing), crashing.stderr
    store = fsm.Store.sqlite(db)
    assert store.all_resources() == {"account.t1": "t1"}  # held by a live action: allowed
    live = {r.id for r in store.rows()}
    assert set(store.all_resources().values()) <= live
    store.close()


def test_concurrent_processes_never_run_one_step_twice(tmp_path: Path) -> None:
    db, ledger_path = tmp_path / "a.sqlite", tmp_path / "ledger.sqlite"
    names = [f"t{i}" for i in range(40)]
    start(db, names)
    slow = {"FSM_TEST_STEP_SECONDS": "0.003"}
    procs = [spawn_child("drive_child.py", db, ledger_path, "3", env=slow) for _ in range(3)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err

    store = fsm.Store.sqlite(db)
    # three rounds of resume_all by three processes finish everything
    leftovers = store.rows()
    store.close()
    if leftovers:  # a row can stay claimed by a busy peer at the end of a round; finish it
        done = run_child("drive_child.py", db, ledger_path)
        assert done.returncode == 0, done.stderr
    store = fsm.Store.sqlite(db)
    assert store.rows() == [] and store.all_resources() == {}
    ledger = Ledger.on_file(ledger_path)
    assert ledger.overlaps() == 0
    effects = ledger.effects()
    assert len(effects) == 3 * len(names)
    assert set(effects.values()) == {1}  # no step ran twice
