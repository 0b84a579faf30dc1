"""fsm.testing: the invariant check and the crash runner catch what they promise to."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import scenario_child
from actions import Script, Transfer
from processes import SUPPORT, child_env

import fsm
from fsm.testing import Scenario, check_invariants, enumerate_crashes, soak


def scenario(buggy: bool, *, work: bool = True, flags: tuple[str, ...] = ()) -> Scenario:
    """The transfers of scenario_child.py (``work=False``: none), driven with ``flags``."""
    transfers = scenario_child.TRANSFERS if work else 0

    def check(folder: Path) -> list[str]:
        # The ledger applies each key once (a replay only counts a call), so the number of
        # distinct keys is the number of effects made: three a transfer.
        effects = scenario_child.ledger(folder).effects()
        problems = []
        if len(effects) != 3 * transfers:
            problems.append(f"{len(effects)} effects for {transfers} transfers")
        store = fsm.Store.sqlite(folder / "a.sqlite")
        problems += check_invariants(store, [Transfer])
        store.close()
        return problems

    return Scenario(
        name="buggy" if buggy else "sound",
        setup=scenario_child.setup if work else lambda folder: None,
        driver=lambda folder: [
            sys.executable,
            str(SUPPORT / "scenario_child.py"),
            str(folder),
            *(["--buggy"] if buggy else []),
            *flags,
        ],
        database=lambda folder: f"sqlite:///{folder / 'a.sqlite'}",
        check=check,
        env=child_env(),
    )


@pytest.mark.slow
def test_crash_enumeration_passes_a_sound_program(tmp_path: Path) -> None:
    report = enumerate_crashes(scenario(buggy=False), tmp_path, points=["resources.before",
                               "resources.after", "finish.before", "finish.after"])  # fmt: skip
    assert report.violations == []
    assert report.points == {"resources.before", "resources.after", "finish.before",
                             "finish.after"}  # fmt: skip
    # 3 transfers x 4 points; the kill after the last finish interrupted no work: not counted.
    assert report.kills == 11 and report.idle_kills == 1
    assert report.actions_completed == 3 * (report.kills + report.idle_kills)


@pytest.mark.slow
def test_crash_enumeration_catches_a_non_idempotent_step(tmp_path: Path) -> None:
    report = enumerate_crashes(scenario(buggy=True), tmp_path, points=["finish.before"])
    assert report.kills == 3
    # each kill before a transfer's end replays its last step under a fresh key
    assert any("10 effects for 3 transfers" in v for v in report.violations), report.violations


@pytest.mark.slow
def test_soak_with_database_faults_loses_nothing(tmp_path: Path) -> None:
    """Slow effects, so that the random kills land on one, among failing statements."""
    sound = scenario(buggy=False, flags=("--slow",))
    report = soak(sound, tmp_path, kills=3, seed=5, db_fault_rate=0.2)
    assert report.violations == []
    assert report.kills >= 1, "the soak killed no driver that had work: it proved nothing"
    assert report.db_faults >= 1 and report.actions_completed >= 3


@pytest.mark.slow
def test_soak_kills_land_on_work(tmp_path: Path) -> None:
    """Moments are drawn between the clean run's first and last write: mid-transfer."""
    report = soak(scenario(buggy=False, flags=("--slow",)), tmp_path, kills=2, seed=5)
    assert report.violations == []
    assert report.kills >= 1 and report.actions_completed >= 3


@pytest.mark.slow
def test_soak_does_not_count_killing_a_driver_with_nothing_to_do(tmp_path: Path) -> None:
    """A driver with no live action that is killed while it lingers interrupted no work."""
    idle = scenario(buggy=False, work=False, flags=("--linger",))
    report = soak(idle, tmp_path, kills=1, seed=5)
    assert report.violations == []
    assert report.kills == 0
    assert report.idle_kills >= 1


def test_invariants_catch_each_violation(store: fsm.Store) -> None:
    ex: fsm.Executor[Any] = fsm.Executor(store, {("a", 2): lambda a, c: fsm.Park(a)},
                                         kinds=[Script])  # fmt: skip
    asyncio.run(ex.drive(Script("a")))
    assert check_invariants(store, [Script]) == []

    assert check_invariants(store, [Script], effects={"a.1": 1, "a.2": 2}) == [
        "effect 'a.2' applied 2 times"
    ]
    store.insert("ghost", "unknown", "s0", 1, "{}", [], 0.0)
    assert any("kind 'unknown'" in p for p in check_invariants(store, [Script]))
    store.db.execute_sql("DELETE FROM fsm_action WHERE id = 'ghost'")

    p = store.db.param
    store.db.execute_sql(
        "INSERT INTO fsm_transition (action_id, kind, seq, from_state, to_state, outcome, via, "
        f"attempt, error, duration, at) VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, "
        f"{p}, {p})",
        ("a", "script", 9, "s7", "s8", "next", "step", 0, None, 0.0, 0.0),
    )
    assert any("log jumps from 's2' to 's7'" in p for p in check_invariants(store, [Script]))


def test_orphaned_resource_is_reported(db_path: Path) -> None:
    store = fsm.Store.sqlite(db_path)
    store.db.execute_sql("PRAGMA foreign_keys = OFF")
    store.db.execute_sql(
        "INSERT INTO fsm_resource (name, action_id, acquired_at) VALUES ('coin', 'gone', 0)"
    )
    assert check_invariants(store, [Script]) == [
        "resource 'coin' is held by 'gone', which is finished or missing"
    ]
    store.close()


def test_torture_command_arguments() -> None:
    bad = subprocess.run(
        [sys.executable, "-m", "fsm.cli", "torture", "--kills", "-1"],
        env=child_env(), capture_output=True, text=True,
    )  # fmt: skip
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    missing = subprocess.run(
        [sys.executable, "-m", "fsm.cli", "torture", "--module", "actions"],
        env=child_env(), capture_output=True, text=True,
    )  # fmt: skip
    assert missing.returncode == 1
    assert missing.stderr.strip() == "fsm: error: module 'actions' has no TORTURE scenario"
