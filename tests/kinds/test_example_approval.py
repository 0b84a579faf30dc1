"""examples/approval.py: events from a web handler, a daily reminder, a deadline that
escalates; on both databases, then as the program a reader runs."""

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

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "approval.py"
DAY = 86400.0


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("example_approval", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # for the data's annotations to resolve
    spec.loader.exec_module(module)
    return module


approval = load()

SENDS = [
    "hour   5: dana rejects r2: SENT",
    "hour   5: dana rejects r2: DUPLICATE",
    "hour  30: dana approves r1: SENT",
    "hour  30: dana rejects r1: REFUSED (key 'r1:decision' was already used for another event)",
    "hour  49: dana approves r2: FINISHED (ended failed in state 'rejected')",
    "hour  80: erin approves r3: SENT",
]
ENDS = [
    "approval-r1: done in state approved",
    "approval-r2: failed in state rejected",
    "approval-r3: done in state approved",
]


def test_decisions_reminders_and_escalation(
    store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    mailer = asyncio.run(approval.run(store_url))

    assert capsys.readouterr().out.splitlines() == SENDS + ENDS
    # r1: one reminder before its approval on day 2; r2: rejected within hours, no reminder;
    # r3: two reminders, then the deadline mailed the manager (not a third reminder)
    assert mailer.to("dana") == [
        "please approve r1: laptop (1200)",
        "please approve r2: conference (800)",
        "please approve r3: server (9000)",
        "reminder 1: please approve r1",
        "reminder 1: please approve r3",
        "reminder 2: please approve r3",
    ]
    assert mailer.to("erin") == ["dana did not answer r3 in 3 days: please decide"]
    assert mailer.to("requester") == ["r2 rejected (no budget left)", "r1 approved", "r3 approved"]

    store = fsm.open_store(store_url)
    try:
        assert store.rows() == []  # every request ended, and its inbox with it
        r3 = store.inspect("approval-r3")
        assert r3 is not None and r3.status.value == "done" and r3.state == "approved"
        moves = [
            (h.at - r3.started_at, h.from_state, h.to_state)
            for h in r3.history
            if h.outcome != "park"
        ]
        assert moves == [
            (0.0, "start", "waiting"),
            (1 * DAY, "waiting", "waiting"),  # the reminders keep the deadline...
            (2 * DAY, "waiting", "waiting"),
            (3 * DAY, "waiting", "escalated"),  # ...which fires 3 days after the first entry
            (3 * DAY, "escalated", "with_manager"),
            (80 * 3600.0, "with_manager", "approving"),  # the manager's Approve
            (80 * 3600.0, "approving", None),
        ]
        r2 = store.inspect("approval-r2")
        assert r2 is not None and r2.status.value == "failed" and r2.state == "rejected"
        assert check_invariants(store, [approval.ApprovalKind]) == []  # deadline moves included
    finally:
        store.close()


@pytest.mark.slow  # the example's own process
def test_runs_as_a_program(tmp_path: Path) -> None:
    db = tmp_path / "approval.sqlite"
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[: len(SENDS) + len(ENDS)] == SENDS + ENDS
    assert "mails to erin: dana did not answer r3 in 3 days: please decide" in lines
    assert lines[-1] == f"database: {db}"
    assert db.exists()
