"""How a user proves their own kind loses nothing, in their own pytest suite.

Run it with ``pytest examples/test_payout_reliability.py``. The kind under test is the
hand-written ``Payout`` of examples/payout.py; a declarative kind is tested the same way.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

import fsm
from fsm.testing import NO_HOOKS, DatabaseFaults, check_invariants, enumerate_crashes, soak

sys.path.insert(0, str(Path(__file__).parent))
import payout


@pytest.mark.slow
def test_every_write_point_crash_loses_nothing(tmp_path: Path) -> None:
    """SIGKILL the real program at every write point it passes, then check the books."""
    report = enumerate_crashes(payout.TORTURE, tmp_path, max_passes=1)
    assert report.violations == []
    assert report.kills > 0 and "checkpoint.after" in report.points


@pytest.mark.slow
def test_random_kills_with_database_faults(tmp_path: Path) -> None:
    report = soak(payout.TORTURE, tmp_path, kills=3, seed=11, db_fault_rate=0.05)
    assert report.violations == []
    assert report.kills >= 1, "the soak killed no driver that had work: it proved nothing"


def test_every_step_is_idempotent(tmp_path: Path) -> None:
    """Double-drive: each step runs twice from the same state and must give the same result."""
    store = fsm.Store.sqlite(tmp_path / "p.sqlite")
    bank = payout.Bank(tmp_path / "bank.sqlite")
    executor = fsm.Executor(
        store, payout.Services(bank, crash=False), kinds=[payout.Payout], double_drive=True
    )

    async def run() -> None:
        await executor.start(payout.Payout("p1", "alice", 10))
        result = await executor.drive("payout.p1", fsm.DriveMode.UNTIL_DONE)
        assert result.status is fsm.DriveStatus.DONE

    asyncio.run(run())
    assert [(a, n) for _, a, n, _ in bank.statement()] == [("alice", 10)]
    assert check_invariants(store, [payout.Payout]) == []


@pytest.mark.parametrize("rate", [0.1, 0.3])
def test_database_errors_never_lose_a_payout(tmp_path: Path, rate: float) -> None:
    store = fsm.Store.sqlite(tmp_path / "p.sqlite", hooks=DatabaseFaults(rate, seed=3).hooks())
    bank = payout.Bank(tmp_path / "bank.sqlite")
    # A failed write counts as an attempt and backs off like any transient error; at these
    # fault rates the default curve (1 s, 4 s, 9 s, ...) would make this test wait minutes.
    fast = fsm.RetryPolicy(base=0.001, cap=0.05)
    executor = fsm.Executor(
        store, payout.Services(bank, crash=False), kinds=[payout.Payout], retry=fast
    )

    async def run() -> None:
        for n, (account, amount) in enumerate(payout.PAYOUTS):
            while True:
                try:
                    await executor.start(payout.Payout(f"p{n}", account, amount))
                    break
                except fsm.FsmError:
                    raise
                except Exception:  # an injected "database is locked": try again
                    continue
        while True:
            try:
                await executor.resume_all(fsm.DriveMode.UNTIL_DONE)
                if not store.live_ids():
                    return
            except Exception:
                continue

    asyncio.run(run())
    assert sorted((a, n) for _, a, n, _ in bank.statement()) == sorted(payout.PAYOUTS)
    store.hooks = NO_HOOKS
    assert check_invariants(store, [payout.Payout]) == []
