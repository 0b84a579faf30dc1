"""Real processes: SIGKILL between an effect and its checkpoint, and concurrent drivers."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from corekinds import Ledger, Transfer, plain_keys

import fsm

SUPPORT = Path(__file__).resolve().parents[1] / "support"


def child(db: Path, ledger: Path, env: dict[str, str], rounds: int = 1) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(SUPPORT / "drive_child.py"), str(db), str(ledger), str(rounds)],
        env=env,
        stderr=subprocess.PIPE,
    )


def start_transfers(db: Path, ledger: Path, names: list[str]) -> None:
    store = fsm.Store.sqlite(db)
    ex: fsm.Executor[Any] = fsm.Executor(store, Ledger(str(ledger)), kinds=[Transfer])
    for name in names:
        asyncio.run(ex.start(Transfer(name)))
    store.close()


@pytest.mark.parametrize("crash_at", ["debit", "credit", "notify"])
def test_sigkill_after_an_effect_resumes_in_a_new_process(
    tmp_path: Path, child_env: dict[str, str], crash_at: str
) -> None:
    db, ledger_path = tmp_path / "a.sqlite", tmp_path / "ledger.sqlite"
    start_transfers(db, ledger_path, ["t1"])

    crashing = child(db, ledger_path, {**child_env, "FSM_TEST_CRASH": crash_at})
    crashing.wait(timeout=60)
    assert crashing.returncode == -signal.SIGKILL

    store = fsm.Store.sqlite(db)
    row = store.row("t1")
    assert row is not None and row.state == crash_at  # the checkpoint did not move
    assert row.lease_owner is not None  # the dead driver's lease is still on the row
    store.close()

    resumed = child(db, ledger_path, child_env)
    _, err = resumed.communicate(timeout=60)
    assert resumed.returncode == 0, err.decode()

    store = fsm.Store.sqlite(db)
    assert store.row("t1") is None
    assert store.all_resources() == {}
    steps = [(t.from_state, t.outcome) for t in store.transitions("t1")]
    assert steps == [("debit", "next"), ("credit", "next"), ("notify", "done")]
    effects = plain_keys(Ledger(str(ledger_path)).effects())
    assert set(effects) == {"t1.0", "t1.1", "t1.2"}  # each effect applied under one key
    crashed_key = {"debit": "t1.0", "credit": "t1.1", "notify": "t1.2"}[crash_at]
    assert effects[crashed_key] == 2  # re-run once after the crash, same idempotency key
    assert sum(effects.values()) == 4


def test_no_resource_outlives_its_action_after_a_crash(
    tmp_path: Path, child_env: dict[str, str]
) -> None:
    db, ledger_path = tmp_path / "a.sqlite", tmp_path / "ledger.sqlite"
    start_transfers(db, ledger_path, ["t1"])
    crashing = child(db, ledger_path, {**child_env, "FSM_TEST_CRASH": "credit"})
    crashing.wait(timeout=60)
    store = fsm.Store.sqlite(db)
    assert store.all_resources() == {"account.t1": "t1"}  # held by a live action: allowed
    live = {r.id for r in store.rows()}
    assert set(store.all_resources().values()) <= live
    store.close()


def test_concurrent_processes_never_run_one_step_twice(
    tmp_path: Path, child_env: dict[str, str]
) -> None:
    db, ledger_path = tmp_path / "a.sqlite", tmp_path / "ledger.sqlite"
    names = [f"t{i}" for i in range(40)]
    start_transfers(db, ledger_path, names)
    env = {**child_env, "FSM_TEST_SLOW": "1"}
    procs = [child(db, ledger_path, env, rounds=3) for _ in range(3)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()

    store = fsm.Store.sqlite(db)
    # three rounds of resume_all by three processes finish everything
    leftovers = store.rows()
    store.close()
    if leftovers:  # a row can stay claimed by a busy peer at the end of a round; finish it
        done = child(db, ledger_path, child_env)
        assert done.wait(timeout=60) == 0
    store = fsm.Store.sqlite(db)
    assert store.rows() == [] and store.all_resources() == {}
    ledger = Ledger(str(ledger_path))
    assert ledger.overlaps() == 0
    effects = ledger.effects()
    assert len(effects) == 3 * len(names)
    assert set(effects.values()) == {1}  # no step ran twice
