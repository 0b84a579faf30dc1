"""``fsm worker``: its refusals before it starts (in-process), and one real worker process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from cli_support import Ran, assert_one_line_error, run_fsm

import fsm
from fsm.discover import load_module


def run_worker_cli(*args: str | Path, cwd: Path | None = None) -> Ran:
    """``fsm worker ARGS``, expected to refuse before it starts (so: in-process)."""
    return run_fsm("worker", *args, cwd=cwd)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "the following arguments are required: --db"),
        (("--db", "x.db", "-m", "m", "--concurrency", "0"), "--concurrency"),
        (("--db", "x.db", "-m", "m", "--max-outage", "-1"), "--max-outage"),
        (("--db", "x.db", "-m", "m", "--max-outage", "nan"), "--max-outage"),
        (("--db", "x.db", "-m", "m", "--max-outage", "soon"), "--max-outage"),
    ],
)
def test_worker_bad_arguments_exit_2(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    proc = run_worker_cli(*args, cwd=tmp_path)
    assert_one_line_error(proc, 2, message)
    assert not (tmp_path / "x.db").exists()


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
