"""examples/payouts.py: a batch spawns a child per payout and gathers their ends
(`fsm.ChildEnded`); on both databases, then as the program a reader runs."""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import fsm
from fsm.testing import check_invariants

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "payouts.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("example_payouts", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # for the data's annotations to resolve
    spec.loader.exec_module(module)
    return module


payouts = load()

ENDS = [
    "batch-2024-06: done in state partly_paid",
    "  batch-2024-06.0: done in state paid",
    "  batch-2024-06.1: done in state paid",  # flaky: paid on its third try
    "  batch-2024-06.2: failed in state refused",  # closed: refused
    "  batch-2024-06.3: done in state paid",
    "  batch-2024-06.4: failed in state refused",  # down: the retry budget spent
    "  batch-2024-06.5: done in state paid",
]
REPORT = (
    "4 of 6 paid, 485 of 570\n"
    "  batch-2024-06.2: failed: Rejected: account closed-carol is closed\n"
    "  batch-2024-06.4: failed: TimeoutError: bank timed out paying down-erin"
)


def test_the_batch_gathers_every_child(store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    bank = asyncio.run(payouts.run(store_url))

    assert capsys.readouterr().out.splitlines() == ENDS
    assert bank.reports == {"batch-2024-06": REPORT}
    # each paid child applied its transfer once, the refused ones none
    assert sorted(bank.transfers.values()) == [
        ("alice", 120),
        ("dave", 200),
        ("flaky-bob", 75),
        ("frank", 90),
    ]

    store = fsm.open_store(store_url)
    try:
        assert store.rows() == []
        batch = store.inspect("batch-2024-06")
        assert batch is not None
        # one step per ChildEnded taken (each in its own checkpoint's transaction), then
        # the end once all six are recorded
        taken = [h for h in batch.history if h.from_state == h.to_state == "waiting"]
        assert sum(h.outcome == "next" for h in taken) == 6
        assert batch.history[-1].from_state == "waiting" and batch.history[-1].to_state is None
        kinds = [payouts.PayoutBatchKind, payouts.PayoutKind]
        assert check_invariants(store, kinds) == []
    finally:
        store.close()


@pytest.mark.slow  # the example's own process
def test_runs_as_a_program(tmp_path: Path) -> None:
    db = tmp_path / "payouts.sqlite"
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[: len(ENDS)] == ENDS
    assert "\n".join(lines[len(ENDS) : len(ENDS) + 3]) == f"report of batch-2024-06: {REPORT}"
    assert lines[-2:] == ["transfers applied: 4", f"database: {db}"]
