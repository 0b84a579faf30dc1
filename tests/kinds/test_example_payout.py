"""The README's first program: crash on purpose, resume, every transfer applied once."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # the example's own process, killed and run again

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "payout.py"


def run(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLE), "--dir", str(folder), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_crash_then_resume_applies_each_transfer_once(tmp_path: Path) -> None:
    crashed = run(tmp_path, "--crash")
    assert crashed.returncode == -signal.SIGKILL
    assert "crashing on purpose" in crashed.stdout

    resumed = run(tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming 3 payout(s)" in resumed.stdout
    assert "all payouts done" in resumed.stdout

    bank = sqlite3.connect(tmp_path / "payout-bank.sqlite")
    rows = bank.execute("SELECT account, amount, requests FROM transfer ORDER BY account")
    assert rows.fetchall() == [("alice", 120, 2), ("bob", 75, 1), ("carol", 30, 1)]
    actions = sqlite3.connect(tmp_path / "payout.sqlite")
    assert actions.execute("SELECT COUNT(*) FROM fsm_action").fetchone() == (0,)
    assert actions.execute("SELECT COUNT(*) FROM fsm_resource").fetchone() == (0,)


def test_a_second_run_has_nothing_left_to_do(tmp_path: Path) -> None:
    assert run(tmp_path).returncode == 0
    again = run(tmp_path)
    assert again.returncode == 0 and "resuming 0 payout(s)" in again.stdout
    fresh = run(tmp_path, "--fresh")
    assert fresh.returncode == 0 and "starting 3 payouts" in fresh.stdout
