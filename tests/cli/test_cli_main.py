"""The rule every command follows (bad arguments exit 2 in one line), and the script."""

from __future__ import annotations

import io
import shutil
import subprocess

import pytest
from cli_support import assert_one_line_error, run_fsm

from fsm.cli import main


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


def test_main_prints_help_to_the_streams_it_is_given_and_returns_0() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert main(["--help"], stdout=out, stderr=err) == 0
    assert all(name in out.getvalue() for name in ("kinds", "validate", "diagram", "worker"))
    assert err.getvalue() == ""


def test_plugin_commands_are_listed_beside_the_built_in_ones() -> None:
    out = io.StringIO()
    assert main(["--help"], stdout=out) == 0
    assert "demo" in out.getvalue()  # this repository's `fsm.commands` entry point
