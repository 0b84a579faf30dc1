"""``fsm kinds``: what it lists, from where, and its one-line errors."""

from __future__ import annotations

import os
from pathlib import Path

from cli_support import BROKEN_SOURCE, REPO, assert_one_line_error, run_fsm, spawn_fsm


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


WALLET_KINDS = {
    "board",
    "offboard",
    "arkoor_send",
    "lightning_send",
    "lightning_receive",
    "exit",
    "refresh",
}
"""Installed with this package (its `fsm.kinds` entry points): listed alongside the others."""


def test_kinds_of_a_dotted_module_from_the_current_directory(kinds_file: Path) -> None:
    proc = run_fsm("kinds", "-m", "helpdesk", cwd=kinds_file.parent)
    assert proc.returncode == 0, proc.stderr
    names = [line.split()[0] for line in proc.stdout.splitlines()]
    assert [n for n in names if n not in WALLET_KINDS] == ["NAME", "ticket", "hand"]


def test_kinds_from_entry_points(tmp_path: Path, kinds_file: Path) -> None:
    """A real process: the entry points of a distribution on its PYTHONPATH."""
    dist = tmp_path / "helpdesk_kinds-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: helpdesk-kinds\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[fsm.kinds]\nhelpdesk = helpdesk\nhand = helpdesk:HandKind\nbroken = no_such_mod\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = spawn_fsm("kinds", cwd=REPO, env=env)
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
