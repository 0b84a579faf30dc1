"""``fsm actions --db URL``: what it shows of any row, read-only, on any database."""

from __future__ import annotations

import json
import math
import re
import sqlite3
from pathlib import Path
from typing import Any

import peewee
import pytest
from cli_support import assert_one_line_error, run_fsm

import fsm
from fsm.store import SCHEMA_VERSION
from fsm.testing import bulk


@pytest.fixture(autouse=True)
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows on one line each, to read them back (`test_tables_fit_80_columns` checks 80)."""
    monkeypatch.setenv("COLUMNS", "200")


def listed(*args: str | Path) -> list[dict[str, Any]]:
    """``fsm actions list --json ARGS``'s array."""
    proc = run_fsm("actions", "list", "--json", *args)
    assert proc.returncode == 0, proc.stderr
    found: list[dict[str, Any]] = json.loads(proc.stdout)
    return found


def table_rows(stdout: str) -> dict[str, list[str]]:
    """A listing's table: id -> its cells (columns two or more spaces apart; one line each)."""
    lines = stdout.splitlines()
    assert lines[0].split() == ["ID", "KIND", "STATE", "STATUS", "WHEN", "NOTE"]
    rows = [re.split(r"\s{2,}", line.strip()) for line in lines[1:] if not line.startswith("more")]
    return {row[0]: row for row in rows}


def test_actions_lists_live_and_quarantined(ticket_db: Path) -> None:
    proc = run_fsm("actions", "--db", ticket_db)  # no subcommand: list, as before
    assert proc.returncode == 0, proc.stderr
    rows = table_rows(proc.stdout)
    assert sorted(rows) == ["ticket-0", "ticket-1", "ticket-2", "ticket-3"]
    assert rows["ticket-0"][1:4] == ["ticket", "opened", "due"]
    assert re.fullmatch(r"now|\d+ s ago", rows["ticket-0"][4])
    assert rows["ticket-1"][2:4] == ["waiting", "parked"]
    assert re.fullmatch(r"wakes in (\d+ s|1 min)", rows["ticket-1"][5])
    assert rows["ticket-3"][3] == "quarantined"
    assert rows["ticket-3"][5] == "payload does not structure"
    assert run_fsm("actions", "list", "--db", ticket_db).stdout == proc.stdout
    by_id = {a["id"]: a for a in listed("--db", ticket_db)}
    assert by_id["ticket-1"]["status"] == "parked" and by_id["ticket-1"]["wake_at"] > 0
    assert by_id["ticket-3"]["quarantine"] == "payload does not structure"
    assert all(a["cursor"] for a in by_id.values())


def test_actions_filter_and_empty(ticket_db: Path) -> None:
    assert run_fsm("actions", "--db", ticket_db, "--kind", "hand").stdout == "no actions\n"
    assert len(listed("--db", ticket_db, "--kind", "ticket")) == 4
    assert [a["id"] for a in listed("--db", ticket_db, "--status", "parked,due")] == [
        "ticket-2",
        "ticket-1",
        "ticket-0",
    ]
    assert [a["id"] for a in listed("--db", ticket_db, "--state", "opened")] == ["ticket-0"]
    assert [a["id"] for a in listed("--db", ticket_db, "--error", "STRUCTURE")] == ["ticket-3"]
    assert len(listed("--db", ticket_db, "--since", "1h")) == 4
    assert listed("--db", ticket_db, "--since", "2020-01-01T00:00") != []
    assert listed("--db", ticket_db, "--status", "ended") == []
    for bad, what in (
        (("--status", "lost"), "--status: unknown status 'lost'"),
        (("--since", "yesterday"), "--since: not a duration"),
        (("--after", "!!"), "--after: not a listing cursor"),
        (("--all", "--limit", "3"), "--all and --limit do not go together"),
    ):
        assert_one_line_error(run_fsm("actions", "list", "--db", ticket_db, *bad), 2, what)
    assert_one_line_error(run_fsm("actions"), 2, "required: --db")


def test_actions_shows_a_broken_action_as_broken(tmp_path: Path) -> None:
    store = fsm.Store.sqlite(tmp_path / "b.sqlite")
    store.insert("x1", "script", "s0", 1, "{}", [], 1.0)
    claimed = store.claim("x1", "me", 2.0)
    assert isinstance(claimed, fsm.store.Claimed)
    store.record_failure(
        "x1",
        claimed.epoch,
        attempts=0,
        error="broken: TypeError: bad\n  File x.py, line 3",
        wake_at=None,
        broken=True,
        now=3.0,
    )
    store.close()
    proc = run_fsm("actions", "--db", tmp_path / "b.sqlite")
    assert proc.returncode == 0, proc.stderr
    row = table_rows(proc.stdout)["x1"]
    assert row[3] == "broken" and row[5] == "broken: TypeError: bad"


def foreign_sqlite(path: Path) -> bytes:
    """Somebody else's SQLite file (rollback journal, one table); returns its bytes."""
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
    conn.execute("INSERT INTO invoices (total) VALUES (12.5)")
    conn.commit()
    conn.close()
    return path.read_bytes()


def journal_mode(path: Path) -> str:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return str(conn.execute("PRAGMA journal_mode").fetchone()[0])
    finally:
        conn.close()


@pytest.mark.parametrize(
    "command",
    [("actions", "--db"), ("diagram", "ticket", "--db")],
    ids=["actions", "diagram"],
)
def test_inspecting_a_foreign_sqlite_file_leaves_it_untouched(
    kinds_file: Path, tmp_path: Path, command: tuple[str, ...]
) -> None:
    db = tmp_path / "invoices.db"
    before = foreign_sqlite(db)
    extra = ("--module", kinds_file) if command[0] == "diagram" else ()
    proc = run_fsm(*command, db, *extra)
    assert_one_line_error(proc, 2, "not an fsm database: it has no fsm schema")
    assert db.read_bytes() == before  # no fsm table added
    assert journal_mode(db) == "delete"  # not switched to WAL
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("invoices")) == [
        "invoices.db"
    ]


def test_a_file_that_is_not_a_database_is_a_bad_argument(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("shopping list: milk, eggs\n" * 100)
    proc = run_fsm("actions", "--db", notes)
    assert_one_line_error(proc, 2, "not an fsm database: not a SQLite database file")
    assert notes.read_text() == "shopping list: milk, eggs\n" * 100


def test_inspection_works_on_a_read_only_file(ticket_db: Path) -> None:
    ticket_db.chmod(0o444)
    before = ticket_db.read_bytes()
    proc = run_fsm("actions", "--db", ticket_db)
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 5
    assert ticket_db.read_bytes() == before


def pg_tables(url: str) -> list[str]:
    """The tables of the test schema named by ``url``'s search_path, read on the side."""
    import psycopg

    schema = url.rsplit("search_path%3D", 1)[1]
    with psycopg.connect(url.split("?")[0]) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
            "ORDER BY table_name",
            (schema,),
        ).fetchall()
    return [r[0] for r in rows]


def test_postgres_inspection_is_read_only(pg_url: str) -> None:
    proc = run_fsm("actions", "--db", pg_url)
    assert_one_line_error(proc, 2, "not an fsm database: it has no fsm schema")
    assert pg_tables(pg_url) == []  # nothing created in a schema without fsm
    store = fsm.open_store(pg_url)
    store.insert("job-1", "job", "new", 1, "{}", (), 1.0)
    store.close()
    tables = pg_tables(pg_url)
    proc = run_fsm("actions", "--db", pg_url)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[1].split()[:4] == ["job-1", "job", "new", "due"]
    shown = run_fsm("actions", "show", "job-1", "--db", pg_url, "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["status"] == "due"
    assert run_fsm("actions", "history", "job-1", "--db", pg_url, "--json").stdout == "[]\n"
    reader = fsm.open_store(pg_url, readonly=True)
    try:
        with pytest.raises(peewee.DatabaseError, match="read-only transaction"):
            reader.mark_due("job-1", 0.0)
    finally:
        reader.close()
    assert pg_tables(pg_url) == tables


def set_schema_version(db: Path, version: int, *statements: str) -> None:
    conn = sqlite3.connect(db)
    conn.execute("UPDATE fsm_meta SET value = ? WHERE key = 'schema_version'", (str(version),))
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()


def test_read_only_schema_versions(ticket_db: Path) -> None:
    newer = SCHEMA_VERSION + 1
    set_schema_version(ticket_db, newer)
    proc = run_fsm("actions", "--db", ticket_db)
    assert_one_line_error(proc, 1, f"database schema v{newer} is newer than this fsm")
    # an older schema is read as it is while it has what the command reads...
    set_schema_version(ticket_db, 0)
    assert run_fsm("actions", "--db", ticket_db).returncode == 0
    # ...and says how to upgrade once it lacks something
    set_schema_version(
        ticket_db,
        0,
        "DROP INDEX fsm_action_wake",  # v3's wake-up index reads the column
        "DROP INDEX fsm_action_trouble",  # and v5's listing index
        "ALTER TABLE fsm_action DROP COLUMN quarantine",
    )
    proc = run_fsm("actions", "--db", ticket_db)
    assert_one_line_error(proc, 1, "run any read-write fsm command")
    assert "schema v0 is older than this fsm" in proc.stderr


EXTREME_WAKES = {
    "inf": (math.inf, "never"),
    "huge": (1e12, "far future (1e+12)"),
    "overflowed": (1e308, "far future (1e+308)"),
    "before-1970": (-5.0, "1969-12-31T23:59:55+00:00"),
    "far-past": (-1e12, "far past (-1e+12)"),
    "minus-inf": (-math.inf, "far past (-inf)"),
}


def test_any_stored_wake_time_prints(store_url: str) -> None:
    store = fsm.open_store(store_url)
    wakes = dict(EXTREME_WAKES)
    if not store.is_sqlite:  # SQLite stores NaN as NULL; PostgreSQL keeps it
        wakes["nan"] = (math.nan, "invalid (nan)")
    for name, (value, _) in wakes.items():
        store.insert(name, "job", "waiting", 1, "{}", (), 1.0)
        store.db.execute_sql(
            f"UPDATE fsm_action SET wake_at = {store.db.param} WHERE id = {store.db.param}",
            (value, name),
        )
    store.close()
    proc = run_fsm("actions", "--db", store_url)
    assert proc.returncode == 0, proc.stderr
    assert set(table_rows(proc.stdout)) == set(wakes)
    for name, (_, text) in wakes.items():
        shown = run_fsm("actions", "show", name, "--db", store_url)
        assert shown.returncode == 0, shown.stderr
        [wake] = [line for line in shown.stdout.splitlines() if line.startswith("wake ")]
        assert text in wake, (name, wake)
    as_json = {a["id"]: a["wake_at"] for a in listed("--db", store_url)}
    assert as_json["inf"] == "inf" and as_json["minus-inf"] == "-inf"  # JSON has no infinity


def test_stored_text_is_printed_with_escapes_visible(ticket_db: Path) -> None:
    conn = sqlite3.connect(ticket_db)
    conn.execute(
        "UPDATE fsm_action SET last_error = ? WHERE id = 'ticket-1'",
        ("remote said \x1b[2J\x1b[31mhacked\x1b[0m\r\u202eevil [bold]x[/bold]",),
    )
    conn.execute("UPDATE fsm_action SET quarantine = ? WHERE id = 'ticket-3'", ("bell\x07!",))
    conn.commit()
    conn.close()
    for command in (("actions",), ("actions", "show", "ticket-1"), ("actions", "show", "ticket-3")):
        proc = run_fsm(*command, "--db", ticket_db)
        assert proc.returncode == 0, proc.stderr
        assert all(ch.isprintable() for ch in proc.stdout.replace("\n", ""))
        assert "\\x1b[2J\\x1b[31mhacked" in proc.stdout or "bell\\x07!" in proc.stdout
    rows = table_rows(run_fsm("actions", "--db", ticket_db).stdout)
    assert rows["ticket-1"][5] == (
        r"remote said \x1b[2J\x1b[31mhacked\x1b[0m \u202eevil [bold]x[/bold]"
    )  # rich's markup is not interpreted either
    assert rows["ticket-3"][5] == r"bell\x07!"


def test_actions_lists_page_after_page(tmp_path: Path) -> None:
    """More rows than a page: each listed once, newest first, under one header."""
    db = tmp_path / "many.sqlite"
    bulk.fill(str(db), 2_345)
    proc = run_fsm("actions", "list", "--db", db, "--all")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("ID ") and sum(line.startswith("ID ") for line in lines) == 1
    newest_first = [f"a{i:09d}" for i in reversed(range(2_345))]
    assert [line.split()[0] for line in lines[1:]] == newest_first
    assert [a["id"] for a in listed("--db", db, "--all")] == newest_first


def test_actions_limit_and_after(tmp_path: Path) -> None:
    db = tmp_path / "many.sqlite"
    bulk.fill(str(db), 5)
    proc = run_fsm("actions", "--db", db, "--limit", "2")
    lines = proc.stdout.splitlines()
    assert [line.split()[0] for line in lines[:3]] == ["ID", "a000000004", "a000000003"]
    more = lines[3].split()
    assert more[:2] == ["more:", "--after"] and len(lines) == 4
    nxt = run_fsm("actions", "--db", db, "--limit", "2", "--after", more[2]).stdout.splitlines()
    assert [line.split()[0] for line in nxt[1:3]] == ["a000000002", "a000000001"]
    first = listed("--db", db, "--limit", "2")
    rest = listed("--db", db, "--after", first[-1]["cursor"])
    assert [a["id"] for a in first + rest] == [f"a{i:09d}" for i in reversed(range(5))]
    for bad in ("0", "-1", "x", "1.5"):
        assert_one_line_error(run_fsm("actions", "--db", db, "--limit", bad), 2, "--limit")
