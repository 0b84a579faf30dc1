"""`fsm worker` processes on a real PostgreSQL (and SQLite): kills, pauses, fencing."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from actions import Ledger, start_transfers
from worker_processes import (
    check_ledger,
    finish_and_stop,
    freeze_while_holding,
    held_by,
    spawn_worker,
    wait_for,
)

import fsm

pytestmark = pytest.mark.slow


def test_three_workers_survive_a_sigkill_and_a_sigstop(pg_url: str, tmp_path: Path) -> None:
    n = 240
    store = fsm.open_store(pg_url)
    start_transfers(store, n)
    env = {"FSM_TEST_STEP_SECONDS": "0.05"}
    logs = [tmp_path / f"worker{i}.log" for i in range(3)]
    opts = ("--lease-ttl", "1.0", "--concurrency", "4")
    procs = [spawn_worker(pg_url, *opts, log=logs[i], env=env) for i in range(3)]
    killed, paused, survivor = procs

    # SIGKILL one worker while it holds leases (mid-step).
    orphans = freeze_while_holding(store, killed)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=30)
    assert held_by(store, killed.pid) == orphans

    # Pause another past its lease: the others take its actions over.
    stolen = freeze_while_holding(store, paused)
    wait_for(lambda: not held_by(store, paused.pid), "the paused worker's leases to be taken")
    paused.send_signal(signal.SIGCONT)

    finish_and_stop([paused, survivor], store)
    assert paused.returncode == 0 and survivor.returncode == 0
    assert killed.returncode == -signal.SIGKILL

    check_ledger(store, n)
    paused_log = logs[1].read_text()
    assert "lease_lost" in paused_log, paused_log[-2000:]  # its stale writes were refused
    assert stolen  # it did hold actions when it was paused
    transitions = store.transitions()
    for action_id in orphans:  # the killed worker's actions were finished by the others
        assert any(t.action_id == action_id and t.outcome == "done" for t in transitions)
    store.close()


def test_sigterm_finishes_the_steps_in_flight_and_releases_leases(
    pg_url: str, tmp_path: Path
) -> None:
    store = fsm.open_store(pg_url)
    start_transfers(store, 40)
    env = {"FSM_TEST_STEP_SECONDS": "0.2"}
    worker = spawn_worker(pg_url, "--concurrency", "8", log=tmp_path / "w.log", env=env)
    wait_for(lambda: len(held_by(store, worker.pid)) >= 4, "the worker to claim actions")
    held = freeze_while_holding(store, worker)  # nothing moves while we count
    applied_before = sum(Ledger.in_store(store).effects().values())
    worker.send_signal(signal.SIGTERM)
    worker.send_signal(signal.SIGCONT)
    assert worker.wait(timeout=60) == 0
    # each drive in flight ended after the step it was running: at most one more effect each
    applied_after = sum(Ledger.in_store(store).effects().values())
    assert applied_after - applied_before <= len(held), (applied_before, applied_after, held)
    assert held_by(store, worker.pid) == []  # every lease released
    assert all(r.lease_owner is None for r in store.rows())
    # a second worker finishes what is left; nothing is lost or applied twice
    second = spawn_worker(pg_url, log=tmp_path / "w2.log")
    finish_and_stop([second], store)
    calls = check_ledger(store, 40)
    assert set(calls.values()) == {1}
    store.close()


def test_workers_share_one_sqlite_file(db_path: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{db_path}"
    store = fsm.open_store(url)
    start_transfers(store, 60)
    procs = [spawn_worker(url, "--concurrency", "4", log=tmp_path / f"s{i}.log") for i in range(3)]
    finish_and_stop(procs, store)
    assert [p.returncode for p in procs] == [0, 0, 0]
    calls = check_ledger(store, 60)
    assert set(calls.values()) == {1}  # no crash, so no step ever ran twice
    store.close()


def test_a_crashed_workers_actions_do_not_wait_for_its_leases(
    db_path: Path, tmp_path: Path
) -> None:
    """With hour-long leases, only the dead-owner check lets the next worker finish."""
    url = f"sqlite:///{db_path}"
    store = fsm.open_store(url)
    start_transfers(store, 30)
    env = {"FSM_TEST_STEP_SECONDS": "0.05"}
    opts = ("--lease-ttl", "3600")
    first = spawn_worker(url, *opts, log=tmp_path / "first.log", env=env)
    orphans = freeze_while_holding(store, first)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    assert held_by(store, first.pid) == orphans
    second = spawn_worker(url, *opts, log=tmp_path / "second.log", env=env)
    finish_and_stop([second], store)
    assert second.returncode == 0
    check_ledger(store, 30)
    store.close()


def test_worker_logs_json_lines(pg_url: str, tmp_path: Path) -> None:
    import json

    store = fsm.open_store(pg_url)
    start_transfers(store, 3)
    log = tmp_path / "w.log"
    worker = spawn_worker(pg_url, "--json", log=log)
    finish_and_stop([worker], store)
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    outcomes = [e for e in entries if "status" in e]
    assert sorted(e["action"] for e in outcomes) == ["t0000", "t0001", "t0002"]
    assert {e["status"] for e in outcomes} == {"done"}
    store.close()
