"""``fsm actions --db URL``: what it shows of any row, read-only, on any database."""

from __future__ import annotations

import math
import re
import sqlite3
from pathlib import Path

import peewee
import pytest
from cli_support import assert_one_line_error, run_fsm

import fsm
from fsm.store import SCHEMA_VERSION
from fsm.testing import bulk


def test_actions_lists_live_and_quarantined(ticket_db: Path) -> None:
    proc = run_fsm("actions", "--db", ticket_db)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["ID", "KIND", "STATE", "STATUS", "ATTEMPTS", "WAKE_AT", "ERROR"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert sorted(rows) == ["ticket-0", "ticket-1", "ticket-2", "ticket-3"]
    assert rows["ticket-0"][1:5] == ["ticket", "opened", "live", "0"]
    assert rows["ticket-1"][2:4] == ["waiting", "live"]
    assert rows["ticket-1"][5].endswith("+00:00")  # parked with a wake-up time
    assert rows["ticket-3"][3] == "quarantined"
    assert lines[-1].endswith("quarantined: payload does not structure")


def test_actions_filter_and_empty(ticket_db: Path) -> None:
    assert run_fsm("actions", "--db", ticket_db, "--kind", "hand").stdout == "no actions\n"
    proc = run_fsm("actions", "--db", ticket_db, "--kind", "ticket")
    assert len(proc.stdout.splitlines()) == 5


def test_actions_shows_a_broken_action_as_broken(tmp_path: Path) -> None:
    store = fsm.Store.sqlite(tmp_path / "b.sqlite")
    store.insert("x1", "script", "s0", 1, "{}", [], 1.0)
    claimed = store.claim("x1", "me", 2.0)
    assert isinstance(claimed, fsm.store.Claimed)
    store.record_failure(
        "x1",
        claimed.epoch,
        attempts=0,
        error="broken: TypeError: bad",
        wake_at=None,
        broken=True,
        now=3.0,
    )
    store.close()
    proc = run_fsm("actions", "--db", tmp_path / "b.sqlite")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "broken" in out.splitlines()[1].split() and "TypeError: bad" in out


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
    assert proc.stdout.splitlines()[1].split()[:3] == ["job-1", "job", "new"]
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


def wake_column(stdout: str) -> dict[str, str]:
    """Action id -> its WAKE_AT cell (columns are two or more spaces apart)."""
    rows = [re.split(r"\s{2,}", line) for line in stdout.splitlines()[1:]]
    return {row[0]: row[5] for row in rows}


def test_actions_formats_any_wake_time(store_url: str) -> None:
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
    assert wake_column(proc.stdout) == {name: text for name, (_, text) in wakes.items()}


def test_stored_text_is_printed_with_escapes_visible(ticket_db: Path) -> None:
    conn = sqlite3.connect(ticket_db)
    conn.execute(
        "UPDATE fsm_action SET last_error = ? WHERE id = 'ticket-1'",
        ("remote said \x1b[2J\x1b[31mhacked\x1b[0m\r\u202eevil",),
    )
    conn.execute("UPDATE fsm_action SET quarantine = ? WHERE id = 'ticket-3'", ("bell\x07!",))
    conn.commit()
    conn.close()
    proc = run_fsm("actions", "--db", ticket_db)
    assert proc.returncode == 0, proc.stderr
    assert all(ch.isprintable() for ch in proc.stdout.replace("\n", ""))
    lines = {line.split()[0]: line for line in proc.stdout.splitlines()}
    assert lines["ticket-1"].endswith(r"remote said \x1b[2J\x1b[31mhacked\x1b[0m \u202eevil")
    assert lines["ticket-3"].endswith(r"quarantined: bell\x07!")


def test_actions_lists_page_after_page(tmp_path: Path) -> None:
    """More rows than a page: each listed once, by id, under one header."""
    db = tmp_path / "many.sqlite"
    bulk.fill(str(db), 2_345)
    proc = run_fsm("actions", "--db", db)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("ID ") and sum(line.startswith("ID ") for line in lines) == 1
    assert [line.split()[0] for line in lines[1:]] == [f"a{i:09d}" for i in range(2_345)]


def test_actions_limit(tmp_path: Path) -> None:
    db = tmp_path / "many.sqlite"
    bulk.fill(str(db), 5)
    proc = run_fsm("actions", "--db", db, "--limit", "2")
    assert [line.split()[0] for line in proc.stdout.splitlines()] == [
        "ID",
        "a000000000",
        "a000000001",
    ]
    whole = run_fsm("actions", "--db", db).stdout
    assert run_fsm("actions", "--db", db, "--limit", "10").stdout == whole
    for bad in ("0", "-1", "x", "1.5"):
        assert_one_line_error(run_fsm("actions", "--db", db, "--limit", bad), 2, "--limit")
