"""What `fsm actions show` says of an action's inbox (text and JSON)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from cli_support import run_fsm
from event_kinds import ApprovalKind, Approve, Book, Note, Request, executor

import fsm


def test_show_lists_the_pending_events_oldest_first(tmp_path: Path) -> None:
    db = tmp_path / "events.sqlite"
    store = fsm.Store.sqlite(db)
    ex = executor(store, Book())

    async def scene() -> None:
        await ex.drive(ApprovalKind.create(Request("1")))
        await ex.send("approval-1", Approve("mallory"), key="m")  # its guard refuses it
        await ex.send("approval-1", Note("hi"), key="n")
        await ex.drive("approval-1")  # takes the note; mallory's approval stays queued

    asyncio.run(scene())
    report = store.inspect("approval-1")
    assert report is not None and report.events_pending == 1
    assert [(e.name, e.key) for e in report.events] == [("Approve", "m")]
    store.close()

    shown = run_fsm("actions", "show", "approval-1", "--db", db)
    assert shown.returncode == 0, shown.stderr
    lines = [line.rstrip() for line in shown.stdout.splitlines()]
    at = next(i for i, line in enumerate(lines) if line.startswith("inbox"))
    assert lines[at].split() == ["inbox", "1", "pending"]
    assert lines[at + 1].split()[:3] == ["Approve", "(key", "m,"]

    as_json = run_fsm("actions", "show", "approval-1", "--db", db, "--json")
    out = json.loads(as_json.stdout)
    assert out["events_pending"] == 1
    assert [(e["name"], e["key"], json.loads(e["payload"])) for e in out["events"]] == [
        ("Approve", "m", {"by": "mallory"})
    ]
