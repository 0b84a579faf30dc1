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


def _waiting(tmp_path: Path) -> Path:
    db = tmp_path / "events.sqlite"
    store = fsm.Store.sqlite(db)
    asyncio.run(executor(store, Book()).drive(ApprovalKind.create(Request("1"))))
    store.close()
    return db


def test_send_puts_an_event_in_the_inbox_for_a_worker(tmp_path: Path) -> None:
    db = _waiting(tmp_path)
    args = ("actions", "send", "approval-1", "Approve", "--db", db, "-m", "event_kinds")
    sent = run_fsm(*args, "--key", "ok", "--data", '{"by": "bob"}')
    assert (sent.returncode, sent.stderr) == (0, "")
    assert sent.stdout == "approval-1: Approve (key ok) sent; a worker takes it\n"
    again = run_fsm(*args, "--key", "ok", "--data", '{"by": "bob"}', "--json")
    assert json.loads(again.stdout)["status"] == "duplicate"
    store = fsm.Store.sqlite(db)
    book = Book()
    asyncio.run(executor(store, book).run_due())
    assert [c[2] for c in book.calls] == ["bob"]
    kept = store.outcome("approval-1")
    assert kept is not None and kept.state == "approved_"
    store.close()
    late = run_fsm(*args, "--key", "late", "--data", '{"by": "bob"}')
    assert (late.returncode, late.stdout) == (1, "")
    assert late.stderr.strip() == "fsm: error: no live action 'approval-1'"


def test_send_refuses_in_one_line(tmp_path: Path) -> None:
    db = _waiting(tmp_path)
    base = ("actions", "send", "approval-1")
    cases = [
        ((*base, "Nope", "--key", "k"), 1, "has no row taking event 'Nope' (it takes: Approve"),
        ((*base, "Approve", "--key", "k", "--data", "[1"), 2, "--data is not JSON"),
        ((*base, "Approve", "--key", "k", "--data", "[1]"), 2, "must be a JSON object"),
        (
            (*base, "Approve", "--key", "k", "--data", '{"x": 1}'),
            2,
            "required field missing @ $.by",
        ),
    ]
    for args, code, text in cases:
        ran = run_fsm(*args, "--db", db, "-m", "event_kinds")
        assert ran.returncode == code, (args, ran.stderr)
        assert len(ran.stderr.splitlines()) == 1 and text in ran.stderr, ran.stderr
    sent = run_fsm(
        *base, "Note", "--key", "k", "--data", '{"text": "a"}', "--db", db, "-m", "event_kinds"
    )
    assert sent.returncode == 0
    clash = run_fsm(
        *base, "Note", "--key", "k", "--data", '{"text": "b"}', "--db", db, "-m", "event_kinds"
    )
    assert clash.returncode == 1
    assert "key 'k' was already used for another event" in clash.stderr
