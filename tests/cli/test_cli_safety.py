"""Safe to point at anything: read-only folders, whose code runs, what the environment arms.

Most of these need a real process: the installed console script and the ``sys.path`` it
gives, a read-only mount, environment variables read at start-up."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
from pathlib import Path

import peewee
import pytest
from cli_support import KINDS_SOURCE, fsm_script, run_fsm, spawn_fsm

import fsm
from fsm.store.hooks import warn_armed


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
    proc = run_on_read_only_folder(ticket_db.parent, "actions", "--db", ticket_db, "--json")
    assert proc.returncode == 0, proc.stderr
    assert sorted(a["id"] for a in json.loads(proc.stdout)) == [
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


def test_read_only_store_refuses_writes(ticket_db: Path) -> None:
    store = fsm.open_store(f"sqlite:///{ticket_db}", readonly=True)
    try:
        assert [r.id for r in store.rows()][:1] == ["ticket-0"]
        with pytest.raises(peewee.DatabaseError, match="readonly"):
            store.mark_due("ticket-1", 0.0)
    finally:
        store.close()


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
    proc = spawn_fsm("actions", "--db", ticket_db, env=env)
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
    with caplog.at_level(logging.WARNING, logger="fsm.testing"):
        warn_armed("FSM_DOUBLE_DRIVE", "1")
    assert [(r.levelno, r.getMessage().split(" is set")[0]) for r in caplog.records] == [
        (logging.WARNING, "FSM_DOUBLE_DRIVE='1'")
    ]
