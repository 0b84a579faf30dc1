"""``fsm validate MODULE[:KIND]``: one line per kind, exit 1 for any invalid one."""

from __future__ import annotations

from pathlib import Path

from cli_support import BROKEN_SOURCE, assert_one_line_error, run_fsm


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
