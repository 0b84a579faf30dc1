"""The ``fsm`` command, run as a real process: output, exit codes, one-line errors."""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import signal
import sqlite3
import stat
import struct
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import peewee
import pytest

import fsm
from fsm.diagram import CURRENT_FILL, to_mermaid
from fsm.discover import load_module
from fsm.faults import warn_armed
from fsm.store import SCHEMA_VERSION

REPO = Path(__file__).resolve().parent.parent

KINDS_SOURCE = textwrap.dedent(
    '''
    """Two kinds: a declarative one, and one written by hand to the discovery contract."""

    import attrs

    from fsm.graph import Edge, KindGraph, StateNode
    from fsm.kind import Kind
    from fsm.state import State


    @attrs.frozen
    class Ticket:
        ticket_id: str
        answered: bool = False


    def is_answered(ctx, ticket):
        return ticket.answered


    def close_ticket(ctx, ticket):
        return ticket


    class TicketKind(Kind[Ticket, None]):
        name = "ticket"
        version = 3

        opened = State(initial=True)
        waiting = State.wait(after=60.0)
        closed = State.done()
        dropped = State.failed()

        transitions = (
            opened.to(waiting),
            waiting.to(closed, guard=is_answered, effect=close_ticket),
            opened.rejected(to=dropped),
        )

        @staticmethod
        def action_id(ticket):
            return f"ticket-{ticket.ticket_id}"


    class HandKind:
        name = "hand"
        __fsm_codec__ = None

        @classmethod
        def graph(cls):
            return KindGraph(
                "hand", 7, (StateNode("a", "step", True), StateNode("b", "done")), (Edge("a", "b"),)
            )
    '''
)

BROKEN_SOURCE = textwrap.dedent(
    """
    import attrs

    from fsm.kind import Kind
    from fsm.state import State


    @attrs.frozen
    class Data:
        key: str


    class NoExit(Kind[Data, None]):
        name = "noexit"
        first = State(initial=True)
        stuck = State()
        end = State.done()
        transitions = (first.to(stuck),)

        @staticmethod
        def action_id(data):
            return data.key
    """
)


def run_fsm(
    *args: str | Path, cwd: Path = REPO, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fsm.cli", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("fsm: error: ")
    assert text in lines[0]


@pytest.fixture
def kinds_file(tmp_path: Path) -> Path:
    path = tmp_path / "helpdesk.py"
    path.write_text(KINDS_SOURCE)
    return path


@pytest.fixture
def ticket_db(tmp_path: Path, kinds_file: Path) -> Path:
    """Four tickets: two waiting, one just opened, one quarantined; plus a HandKind row."""
    ticket_kind = load_module(str(kinds_file)).TicketKind
    db = tmp_path / "tickets.sqlite"
    store = fsm.Store.sqlite(db)
    with fsm.SyncExecutor(store, kinds=[ticket_kind]) as ex:
        data = ticket_kind.__fsm_definition__.data_type
        for i in range(4):
            ex.start(ticket_kind.create(data(str(i))))
        ex.drive("ticket-1")  # opened -> waiting, parks
        ex.drive("ticket-2")
        ex.drive("ticket-3")
    store.quarantine("ticket-3", "payload does not structure")
    store.close()
    return db


# -- fsm kinds ----------------------------------------------------------------------------


def test_kinds_lists_name_version_states_and_place(kinds_file: Path) -> None:
    proc = run_fsm("kinds", "--module", kinds_file, cwd=kinds_file.parent)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["NAME", "VERSION", "STATES", "DEFINED", "IN"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["ticket"][1:3] == ["3", "4"]
    assert rows["ticket"][3].startswith("helpdesk.py:")
    assert rows["ticket"][4] == "(helpdesk.py:TicketKind)"
    assert rows["hand"][1:3] == ["7", "2"]
    assert proc.stderr == ""


WALLET_KINDS = {"board", "offboard", "arkoor_send", "lightning_send", "lightning_receive"}
"""Installed with this package (its `fsm.kinds` entry points): listed alongside the others."""


def test_kinds_of_a_dotted_module_from_the_current_directory(kinds_file: Path) -> None:
    proc = run_fsm("kinds", "-m", "helpdesk", cwd=kinds_file.parent)
    assert proc.returncode == 0, proc.stderr
    names = [line.split()[0] for line in proc.stdout.splitlines()]
    assert [n for n in names if n not in WALLET_KINDS] == ["NAME", "ticket", "hand"]


def test_kinds_from_entry_points(tmp_path: Path, kinds_file: Path) -> None:
    dist = tmp_path / "helpdesk_kinds-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: helpdesk-kinds\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[fsm.kinds]\nhelpdesk = helpdesk\nhand = helpdesk:HandKind\nbroken = no_such_mod\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = run_fsm("kinds", cwd=REPO, env=env)
    names = [line.split()[0] for line in proc.stdout.splitlines()[1:]]
    names = [n for n in names if n not in WALLET_KINDS]
    assert names == ["hand", "ticket"]  # entry points in name order, each class once
    # the broken plugin is reported, the others still listed, and the exit code says so
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "fsm: warning: entry point 'broken' (no_such_mod): cannot load: "
        "ModuleNotFoundError: No module named 'no_such_mod'"
    ]


def test_definition_error_at_import_is_one_clean_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(BROKEN_SOURCE)
    proc = run_fsm("kinds", "--module", bad, cwd=tmp_path)
    assert_one_line_error(proc, 1, "kind 'noexit' (NoExit), state 'stuck'")
    assert "Traceback" not in proc.stderr


def test_module_that_does_not_exist(tmp_path: Path) -> None:
    assert_one_line_error(run_fsm("kinds", "-m", "nowhere.defs"), 1, "no module named")
    assert_one_line_error(run_fsm("kinds", "-m", tmp_path / "gone.py"), 1, "no such file")


# -- fsm validate -------------------------------------------------------------------------


def test_validate_ok(kinds_file: Path) -> None:
    proc = run_fsm("validate", f"{kinds_file}:ticket")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout == "ticket: ok\n"


def test_validate_names_kind_by_class_and_refuses_non_declarative(kinds_file: Path) -> None:
    assert run_fsm("validate", f"{kinds_file}:TicketKind").stdout == "ticket: ok\n"
    proc = run_fsm("validate", kinds_file)
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert lines[0] == "ticket: ok"
    assert lines[1].startswith("hand: invalid: ")


def test_validate_invalid_module(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(BROKEN_SOURCE)
    proc = run_fsm("validate", bad)
    assert proc.returncode == 1
    assert proc.stdout.startswith(f"{bad}: invalid: kind 'noexit' (NoExit), state 'stuck'")
    assert "Fix:" in proc.stdout
    assert len(proc.stdout.splitlines()) == 1


def test_validate_unknown_kind_in_module(kinds_file: Path) -> None:
    assert_one_line_error(run_fsm("validate", f"{kinds_file}:nope"), 1, "no kind 'nope'")


# -- fsm diagram --------------------------------------------------------------------------


def test_diagram_mermaid_to_stdout_is_the_renderer_output(kinds_file: Path) -> None:
    proc = run_fsm("diagram", "ticket", "--module", kinds_file)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == to_mermaid(load_module(str(kinds_file)).TicketKind.graph())
    assert "    opened --> dropped : rejected" in proc.stdout.splitlines()


def test_diagram_dot_to_file(kinds_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "t.dot"
    proc = run_fsm("diagram", "hand", "-m", kinds_file, "--format", "dot", "-o", out)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    text = out.read_text()
    assert text.startswith('digraph "hand" {')
    assert '    "a" -> "b";' in text.splitlines()


@pytest.mark.needs_dot
def test_diagram_svg_with_current_action(kinds_file: Path, ticket_db: Path, tmp_path: Path) -> None:
    out = tmp_path / "t.svg"
    proc = run_fsm(
        "diagram", "ticket", "-m", kinds_file, "-f", "svg", "-o", out, "--db", ticket_db,
        "--action", "ticket-0",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    ns = "{http://www.w3.org/2000/svg}"
    nodes = {
        g.findtext(f"{ns}title"): g
        for g in ET.parse(out).getroot().iter(f"{ns}g")
        if g.get("class") == "node"
    }
    assert {"opened", "waiting", "closed", "dropped"} <= set(nodes)
    highlighted = {
        name for name, g in nodes.items() if any(e.get("fill") == CURRENT_FILL for e in g)
    }
    assert highlighted == {"opened"}


@pytest.mark.needs_dot
def test_diagram_png(kinds_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "t.png"
    assert run_fsm("diagram", "ticket", "-m", kinds_file, "-f", "png", "-o", out).returncode == 0
    png = out.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    assert 100 < width < 5000 and 30 < height < 2000


def test_diagram_counts_live_actions_per_state(kinds_file: Path, ticket_db: Path) -> None:
    proc = run_fsm("diagram", "ticket", "-m", kinds_file, "--db", ticket_db)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    # ticket-0 opened; ticket-1, ticket-2 waiting; ticket-3 quarantined (not counted)
    assert '    state "opened (1)" as opened' in lines
    assert '    state "waiting (2)" as waiting' in lines
    assert not any("closed (" in line or "dropped (" in line for line in lines)


def test_diagram_current_state_in_mermaid(kinds_file: Path, ticket_db: Path) -> None:
    url = f"sqlite:///{ticket_db}"
    proc = run_fsm("diagram", "ticket", "-m", kinds_file, "--db", url, "--action", "ticket-2")
    assert proc.returncode == 0, proc.stderr
    assert "    class waiting current" in proc.stdout.splitlines()


def test_diagram_action_errors(kinds_file: Path, ticket_db: Path, tmp_path: Path) -> None:
    base = ("diagram", "ticket", "-m", kinds_file, "--db", ticket_db, "--action")
    assert_one_line_error(run_fsm(*base, "ticket-9"), 1, "no action with id 'ticket-9'")
    hand = ("diagram", "hand", "-m", kinds_file, "--db", ticket_db, "--action", "ticket-0")
    assert_one_line_error(run_fsm(*hand), 1, "is a 'ticket' action, not 'hand'")
    missing = tmp_path / "missing.sqlite"
    proc = run_fsm("diagram", "ticket", "-m", kinds_file, "--db", missing)
    assert_one_line_error(proc, 1, "no database at")
    assert not missing.exists(), "a mistyped --db must not create a database"
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not a database" * 100)
    proc = run_fsm("diagram", "ticket", "-m", kinds_file, "--db", garbage)
    assert_one_line_error(proc, 2, "garbage.sqlite': not an fsm database")


def test_diagram_unknown_kind(kinds_file: Path) -> None:
    proc = run_fsm("diagram", "nope", "-m", kinds_file)
    assert_one_line_error(proc, 1, "no kind named 'nope' (known kinds: ")
    assert "hand, " in proc.stderr and "ticket" in proc.stderr


def test_diagram_without_graphviz_names_the_fix(kinds_file: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty-path"
    empty.mkdir()
    env = {**os.environ, "PATH": str(empty)}
    proc = run_fsm("diagram", "ticket", "-m", kinds_file, "-f", "svg", env=env)
    assert_one_line_error(proc, 1, "install Graphviz (apt-get install graphviz")


# -- fsm actions --------------------------------------------------------------------------


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


# -- bad arguments ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        ((), "required: COMMAND"),
        (("frobnicate",), "invalid choice: 'frobnicate'"),
        (("diagram",), "required: KIND"),
        (("diagram", "ticket", "--format", "jpeg"), "invalid choice: 'jpeg'"),
        (("diagram", "ticket", "--action", "ticket-1"), "--action needs --db"),
        (("diagram", "ticket", "--format", "png"), "give --output FILE"),
        (("actions",), "required: --db"),
        (("validate",), "required: MODULE[:KIND]"),
        (("kinds", "--bogus"), "unrecognized arguments: --bogus"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args: tuple[str, ...], reason: str) -> None:
    proc = run_fsm(*args)
    assert_one_line_error(proc, 2, reason)
    assert proc.stdout == ""


def test_console_script() -> None:
    script = shutil.which("fsm")
    assert script is not None, "the fsm console script is not installed: pip install -e ."
    proc = subprocess.run([script, "diagram"], capture_output=True, text=True, check=False)
    assert_one_line_error(proc, 2, "required: KIND")
    proc = subprocess.run([script, "--help"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0
    assert all(name in proc.stdout for name in ("kinds", "validate", "diagram", "actions"))


# -- safe to point at anything: read-only inspection ----------------------------------------


def fsm_script() -> Path:
    """The installed console script: unlike ``python -m``, it puts no folder of ours first on
    ``sys.path``, which is what users run."""
    script = Path(sys.executable).with_name("fsm")
    assert script.is_file(), "the fsm console script is not installed: pip install -e ."
    return script


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


def run_on_read_only_folder(folder: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run ``fsm`` with ``folder`` read-only for it: a read-only bind mount in a mount
    namespace of its own when we are root (root ignores permission bits), else mode 0555."""
    command = [str(fsm_script()), *map(str, args)]
    if os.geteuid() == 0:
        mount = 'mount --bind -o ro "$0" "$0" && exec "$@"'
        command = ["unshare", "--mount", "sh", "-c", mount, str(folder), *command]
        return subprocess.run(command, capture_output=True, text=True, check=False)
    folder.chmod(0o555)
    try:
        return subprocess.run(command, capture_output=True, text=True, check=False)
    finally:
        folder.chmod(0o755)


def test_inspection_works_on_a_read_only_folder(kinds_file: Path, ticket_db: Path) -> None:
    before = ticket_db.read_bytes()
    proc = run_on_read_only_folder(ticket_db.parent, "actions", "--db", ticket_db)
    assert proc.returncode == 0, proc.stderr
    assert [line.split()[0] for line in proc.stdout.splitlines()[1:]] == [
        "ticket-0",
        "ticket-1",
        "ticket-2",
        "ticket-3",
    ]
    proc = run_on_read_only_folder(
        ticket_db.parent, "diagram", "ticket", "--db", ticket_db, "--module", kinds_file
    )
    assert proc.returncode == 0, proc.stderr
    assert "waiting (2)" in proc.stdout
    assert ticket_db.read_bytes() == before


def test_inspection_works_on_a_read_only_file(ticket_db: Path) -> None:
    ticket_db.chmod(0o444)
    before = ticket_db.read_bytes()
    proc = run_fsm("actions", "--db", ticket_db)
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 5
    assert ticket_db.read_bytes() == before


def test_read_only_store_refuses_writes(ticket_db: Path) -> None:
    store = fsm.open_store(f"sqlite:///{ticket_db}", readonly=True)
    try:
        assert [r.id for r in store.rows()][:1] == ["ticket-0"]
        with pytest.raises(peewee.DatabaseError, match="readonly"):
            store.mark_due("ticket-1", 0.0)
    finally:
        store.close()


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
    set_schema_version(ticket_db, 0, "ALTER TABLE fsm_action DROP COLUMN quarantine")
    proc = run_fsm("actions", "--db", ticket_db)
    assert_one_line_error(proc, 1, "run any read-write fsm command")
    assert "schema v0 is older than this fsm" in proc.stderr


# -- safe to point at anything: what a row holds --------------------------------------------

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


# -- safe to point at anything: whose code runs ---------------------------------------------

PLANTED = (
    'import pathlib\npathlib.Path(__file__).with_suffix(".ran").touch()\nraise SystemExit(9)\n'
)


def test_modules_in_the_current_folder_do_not_shadow_installed_ones(
    tmp_path: Path, pg_url: str
) -> None:
    for name in ("playhouse", "psycopg"):  # imported only when a PostgreSQL URL is opened
        (tmp_path / f"{name}.py").write_text(PLANTED)
    fsm.open_store(pg_url).close()
    proc = subprocess.run(
        [fsm_script(), "actions", "--db", pg_url],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "no actions\n"
    assert sorted(p.name for p in tmp_path.glob("*.ran")) == []


def test_a_module_file_never_replaces_another_module(tmp_path: Path) -> None:
    kinds = tmp_path / "kinds"
    kinds.mkdir()
    (kinds / "json.py").write_text(KINDS_SOURCE)  # a kinds file that happens to be json.py
    (tmp_path / "uses_json.py").write_text(
        KINDS_SOURCE.replace('"ticket"', '"ticket2"').replace('"hand"', '"hand2"')
        + "\nimport json\nENCODED = json.dumps({'ok': True})\n"
    )
    proc = run_fsm(
        "kinds", "--module", kinds / "json.py", "--module", tmp_path / "uses_json.py", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    names = [line.split()[0] for line in proc.stdout.splitlines()[1:]]
    assert {"ticket", "hand", "ticket2", "hand2"} <= set(names)
    assert "kinds/json.py:TicketKind" in proc.stdout  # shown by path, the form validate takes
    assert run_fsm("validate", "kinds/json.py:TicketKind", cwd=tmp_path).stdout == "ticket: ok\n"


def test_a_module_file_imports_its_siblings_without_shadowing(tmp_path: Path) -> None:
    pkg = tmp_path / "shop"
    pkg.mkdir()
    (pkg / "helper.py").write_text("LABEL = 'from helper'\n")
    (pkg / "json.py").write_text(PLANTED)  # a sibling never wins over an installed module
    (pkg / "orders.py").write_text(
        "import json\nimport helper\n\nassert hasattr(json, 'JSONDecoder')\n"
        + KINDS_SOURCE.replace('"ticket"', "helper.LABEL")
    )
    proc = subprocess.run(
        [fsm_script(), "kinds", "--module", pkg / "orders.py"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "from helper" in proc.stdout
    assert list(pkg.glob("*.ran")) == []


def test_dotted_module_from_the_current_folder_with_the_console_script(
    kinds_file: Path,
) -> None:
    proc = subprocess.run(
        [fsm_script(), "kinds", "-m", "helpdesk"],
        cwd=kinds_file.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "(helpdesk:TicketKind)" in proc.stdout


def test_new_database_files_are_owner_only(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        db = tmp_path / "private.sqlite"
        store = fsm.open_store(f"sqlite:///{db}")
        store.insert("a-1", "job", "new", 1, "{}", (), 1.0)
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
        store.close()
    finally:
        os.umask(old)
    assert modes == {
        name: 0o600 for name in ("private.sqlite", "private.sqlite-wal", "private.sqlite-shm")
    }


def test_armed_test_variables_warn_in_one_line_each(ticket_db: Path, tmp_path: Path) -> None:
    trace = tmp_path / "trace.txt"
    env = {
        **os.environ,
        "FSM_CRASH": "checkpoint.after:99",
        "FSM_CRASH_TRACE": str(trace),
        "FSM_DB_FAULTS": "0:7",
    }
    proc = run_fsm("actions", "--db", ticket_db, env=env)
    assert proc.returncode == 0, proc.stderr
    warnings = proc.stderr.splitlines()
    assert len(warnings) == 3, proc.stderr
    for name, value in (
        ("FSM_CRASH", "checkpoint.after:99"),
        ("FSM_CRASH_TRACE", str(trace)),
        ("FSM_DB_FAULTS", "0:7"),
    ):
        assert sum(line.startswith(f"{name}={value!r} is set: test-only") for line in warnings) == 1


def test_warn_armed_is_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="fsm.faults"):
        warn_armed("FSM_DOUBLE_DRIVE", "1")
    assert [(r.levelno, r.getMessage().split(" is set")[0]) for r in caplog.records] == [
        (logging.WARNING, "FSM_DOUBLE_DRIVE='1'")
    ]


# -- fsm worker: options, services and kinds ------------------------------------------------

NEEDS_SHOP = textwrap.dedent(
    """
    import attrs

    from fsm.kind import Kind
    from fsm.state import State


    class Shop:
        pass


    @attrs.frozen
    class Sale:
        key: str


    def ring_up(ctx, sale):
        ctx.services.ring_up(sale.key)  # fails on None: what a worker without services did
        return sale


    class SaleKind(Kind[Sale, Shop]):
        name = "sale"
        new = State(initial=True)
        rung = State.done()
        transitions = (new.to(rung, effect=ring_up),)

        @staticmethod
        def action_id(sale):
            return f"sale-{sale.key}"


    def broken_factory(store):
        raise RuntimeError("the till is offline")


    not_callable = 42
    """
)


def run_worker_cli(*args: str | Path, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """``fsm worker`` expected to refuse; the timeout only bounds a worker that starts."""
    return subprocess.run(
        [sys.executable, "-m", "fsm.cli", "worker", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.fixture
def sale_db(tmp_path: Path) -> Path:
    (tmp_path / "sales.py").write_text(NEEDS_SHOP)
    db = tmp_path / "sales.sqlite"
    fsm.open_store(str(db)).close()
    return db


@pytest.mark.parametrize("option", ["--lease-ttl", "--poll"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1", "0", "1e400"])
def test_worker_float_options_must_be_finite_and_positive(
    kinds_file: Path, tmp_path: Path, option: str, value: str
) -> None:
    db = tmp_path / "w.sqlite"
    fsm.open_store(str(db)).close()
    proc = run_worker_cli("--db", db, "--module", kinds_file, f"{option}={value}")
    assert_one_line_error(proc, 2, f"argument {option}: must be a finite number > 0")


def test_worker_without_services_for_kinds_that_need_them_refuses(sale_db: Path) -> None:
    before = sale_db.read_bytes()
    proc = run_worker_cli("--db", sale_db, "--module", sale_db.parent / "sales.py")
    assert_one_line_error(proc, 2, "kinds need services and none is given: ")
    assert "sale (Shop)" in proc.stderr
    assert "pass --services MODULE:FACTORY" in proc.stderr
    assert sale_db.read_bytes() == before


@pytest.mark.parametrize(
    ("factory", "code", "message"),
    [
        (
            "sales:broken_factory",
            1,
            "services factory sales:broken_factory failed: RuntimeError: the till is offline",
        ),
        ("sales:not_callable", 1, "--services sales:not_callable is not a callable"),
        ("sales", 2, "argument --services: must be MODULE:FACTORY, got 'sales'"),
    ],
)
def test_worker_services_factory_problems_are_one_line(
    sale_db: Path, factory: str, code: int, message: str
) -> None:
    proc = run_worker_cli(
        "--db", sale_db, "--module", "sales", "--services", factory, cwd=sale_db.parent
    )
    assert_one_line_error(proc, code, message)
    assert "Traceback" not in proc.stderr


NOTES_SOURCE = textwrap.dedent(
    """
    import attrs

    from fsm.kind import Kind
    from fsm.state import State


    @attrs.frozen
    class Note:
        key: str


    class NoteKind(Kind[Note, None]):
        name = "note"
        new = State(initial=True)
        filed = State.done()
        transitions = (new.to(filed),)

        @staticmethod
        def action_id(note):
            return f"note-{note.key}"


    def services(store):
        return "served"
    """
)


def test_worker_drives_the_kinds_of_entry_points_without_module(tmp_path: Path) -> None:
    (tmp_path / "notes.py").write_text(NOTES_SOURCE)
    dist = tmp_path / "notes_kinds-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: notes-kinds\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[fsm.kinds]\nnotes = notes:NoteKind\n")
    note_kind = load_module(str(tmp_path / "notes.py")).NoteKind
    db = tmp_path / "notes.sqlite"
    store = fsm.open_store(str(db))
    with fsm.SyncExecutor(store, kinds=[note_kind]) as ex:
        ex.start(note_kind.create(note_kind.__fsm_definition__.data_type("1")))
    log = tmp_path / "worker.log"
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    worker = subprocess.Popen(
        [sys.executable, "-m", "fsm.cli", "worker", "--db", db, "--services", "notes:services"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )
    try:
        for _ in range(6000):  # bounded only against a hung worker
            if not store.rows() or worker.poll() is not None:
                break
            time.sleep(0.01)
        assert worker.poll() is None, log.read_text()
        assert store.rows() == []
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0, log.read_text()
        store.close()
    assert "action note-1: done" in log.read_text()


def test_worker_refuses_kinds_it_cannot_drive(kinds_file: Path, tmp_path: Path) -> None:
    db = tmp_path / "w.sqlite"
    fsm.open_store(str(db)).close()
    proc = run_worker_cli("--db", db, "--module", kinds_file, "--services", "helpdesk:x")
    assert_one_line_error(proc, 1, "cannot drive these kinds: HandKind must be an attrs class")


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
    out = subprocess.run(
        [sys.executable, "-m", "fsm.cli", "actions", "--db", str(tmp_path / "b.sqlite")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "broken" in out.splitlines()[1].split() and "TypeError: bad" in out
