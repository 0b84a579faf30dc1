"""``fsm actions show | history`` and ``fsm prune``: what they print, their exit codes, and that
the read commands leave the database as it was (SQLite files and PostgreSQL)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cli_support import assert_one_line_error, run_fsm

import fsm
from fsm.store import Claimed, LogEntry

T0 = 1_700_000_000.0
CHAIN = "ValueError: payment declined\ncaused by: ConnectionError: bank unreachable"


def ended_and_live(url: str) -> None:
    """``pay-1`` failed after two steps (one retried); ``pay-2`` is live, parked a day."""
    store = fsm.open_store(url)
    try:
        store.insert("pay-1", "payment", "new", 1, '{"amount": 5}', ["coin"], T0)
        c = store.claim("pay-1", "me", T0)
        assert isinstance(c, Claimed)
        retry = LogEntry("payment", 0, "new", "new", "park", "retry", 1, "TimeoutError: t", 0.1)
        new = fsm.store.Bookkeeping(1, 1, "TimeoutError: t", T0 + 5, None)
        store.write(
            "pay-1",
            c.epoch,
            state="new",
            payload='{"amount": 5}',
            seq=0,
            was=c.bookkeeping,
            new=new,
            acquired=(),
            released=(),
            entry=retry,
            now=T0 + 1,
        )
        c = store.claim("pay-1", "me", T0 + 6)
        assert isinstance(c, Claimed)
        end = LogEntry("payment", 0, "new", None, "failed", "step", 0, CHAIN, 0.2)
        store.finish("pay-1", c.epoch, end, T0 + 7, status="failed", state="declined", error=CHAIN)
        store.insert("pay-2", "payment", "waiting", 1, '{"note": "\\u001b[31mred"}', [], T0)
        store.db.execute_sql(
            f"UPDATE fsm_action SET wake_at = {store.db.param} WHERE id = 'pay-2'",
            (store.now() + 86400,),
        )
    finally:
        store.close()


@pytest.fixture
def db(store_url: str) -> str:
    ended_and_live(store_url)
    return store_url


def fields(stdout: str) -> dict[str, str]:
    """``show``'s lines: field -> value (continuation lines joined with a newline)."""
    out: dict[str, str] = {}
    last = ""
    for line in stdout.splitlines():
        if line.startswith("last ") and "steps" in line:
            break
        name, _, value = line.partition(" ")
        if name:
            last = name
            out[name] = value.strip()
        else:
            out[last] += "\n" + value.strip()
    return out


def test_show_an_ended_action(db: str) -> None:
    proc = run_fsm("actions", "show", "pay-1", "--db", db)
    assert proc.returncode == 0, proc.stderr
    shown = fields(proc.stdout)
    assert shown["status"].startswith("failed ")
    assert shown["state"] == "declined"
    assert shown["steps"] == "2 steps, 1 retry"
    assert shown["error"] == CHAIN
    assert "checkpoint" not in shown  # gone with the row
    assert "last 2 steps" in proc.stdout
    report = json.loads(run_fsm("actions", "show", "pay-1", "--db", db, "--json").stdout)
    assert (report["status"], report["steps"], report["retries"]) == ("failed", 2, 1)
    assert report["error_chain"] == CHAIN.split("\n")
    assert [s["via"] for s in report["history"]] == ["retry", "step"]
    assert report["ended_at"] == T0 + 7


def test_show_a_live_action(db: str) -> None:
    proc = run_fsm("actions", "show", "pay-2", "--db", db)
    assert proc.returncode == 0, proc.stderr
    shown = fields(proc.stdout)
    assert shown["status"].startswith("parked until in 23 h")
    assert shown["lease"] == "none" and shown["resources"] == "none"
    assert shown["checkpoint"] == '{\n"note": "\\u001b[31mred"\n}'  # stored JSON
    report = json.loads(run_fsm("actions", "show", "pay-2", "--db", db, "--json").stdout)
    assert report["payload"] == {"note": "\x1b[31mred"} and report["status"] == "parked"


def test_history_prints_every_step(db: str) -> None:
    proc = run_fsm("actions", "history", "pay-1", "--db", db)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("pay-1 (payment), incarnation ")
    assert lines[1].split() == ["SEQ", "WHEN", "FROM", "TO", "OUTCOME", "VIA", "ERROR"]
    assert lines[2].split()[3:6] == ["new", "park", "retry"]
    assert lines[3].split()[3:6] == ["(end)", "failed", "step"]
    steps = json.loads(run_fsm("actions", "history", "pay-1", "--db", db, "--json").stdout)
    assert [(s["outcome"], s["error"]) for s in steps] == [
        ("park", "TimeoutError: t"),
        ("failed", CHAIN),
    ]
    empty = run_fsm("actions", "history", "pay-2", "--db", db)
    assert "no steps logged" in empty.stdout


def test_unknown_ids_and_incarnations_fail_in_one_line(db: str) -> None:
    for command in ("show", "history"):
        proc = run_fsm("actions", command, "nobody", "--db", db)
        assert_one_line_error(proc, 1, "no action 'nobody' in this database")
    proc = run_fsm("actions", "history", "pay-1", "--db", db, "--incarnation", "abc")
    assert_one_line_error(proc, 1, "no incarnation 'abc' of 'pay-1'")
    assert_one_line_error(run_fsm("actions", "show", "--db", db), 2, "ID")


def test_prune(db: str) -> None:
    proc = run_fsm("prune", "--db", db, "--older-than", "30d", "--json")
    assert proc.returncode == 0, proc.stderr
    kept = json.loads(proc.stdout)
    assert (kept["log_rows"], kept["outcomes"]) == (2, 1)  # T0 is long ago
    proc = run_fsm("prune", "--db", db, "--older-than", "12h")
    assert proc.returncode == 0 and proc.stdout.startswith(
        "pruned 0 log rows, 0 outcomes and 0 taken events"
    )
    assert_one_line_error(run_fsm("actions", "show", "pay-1", "--db", db), 1, "no action")
    assert run_fsm("actions", "show", "pay-2", "--db", db).returncode == 0  # live: kept
    for bad in ("30x", "-1d", "d", "nan", "inf", "1e999d", " 3d"):
        proc = run_fsm("prune", "--db", db, f"--older-than={bad}")
        assert_one_line_error(proc, 2, "--older-than: not a duration")
    assert_one_line_error(run_fsm("prune", "--db", db), 2, "--older-than")


def test_worker_retention_is_checked_before_it_starts(tmp_path: Path) -> None:
    for bad, what in (("1d", "shorter than the redelivery window"), ("soon", "not a duration")):
        proc = run_fsm("worker", "--db", tmp_path / "x.sqlite", "--retention", bad)
        assert_one_line_error(proc, 2, what)


@pytest.mark.parametrize(
    "command",
    [("actions",), ("actions", "show", "pay-1"), ("actions", "history", "pay-1")],
    ids=["list", "show", "history"],
)
def test_tables_fit_80_columns_and_read_commands_write_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: tuple[str, ...]
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    db = tmp_path / "pay.sqlite"
    ended_and_live(str(db))
    long_id = "order." + "f" * 120  # folds onto more lines
    store = fsm.Store.sqlite(db)
    store.insert(long_id, "order", "a-state-with-a-long-name", 1, "{}", [], T0)
    store.close()
    before = db.read_bytes()
    proc = run_fsm(*command, "--db", db)
    assert proc.returncode == 0, proc.stderr
    assert max(len(line) for line in proc.stdout.splitlines()) <= 80
    assert db.read_bytes() == before
    if command == ("actions",):
        lines = proc.stdout.splitlines()
        id_column = "".join(line[: lines[0].index("KIND")].strip() for line in lines)
        assert long_id in id_column  # whole, folded onto more lines


def test_json_everywhere_is_one_document(db: str) -> None:
    for command in (
        ("actions", "list"),
        ("actions", "show", "pay-2"),
        ("actions", "history", "pay-1"),
        ("prune", "--older-than", "400d"),
    ):
        proc = run_fsm(*command, "--db", db, "--json")
        assert proc.returncode == 0, proc.stderr
        document: Any = json.loads(proc.stdout)
        assert isinstance(document, list | dict)
