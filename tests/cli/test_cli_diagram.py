"""``fsm diagram KIND``: formats, overlays from a database, and its errors."""

from __future__ import annotations

import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from cli_support import assert_one_line_error, run_fsm

from fsm.diagram import to_mermaid
from fsm.diagram.style import CURRENT_FILL
from fsm.discover import load_module


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


def test_diagram_without_graphviz_names_the_fix(
    kinds_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    proc = run_fsm("diagram", "ticket", "-m", kinds_file, "-f", "svg")
    assert_one_line_error(proc, 1, "install Graphviz (apt-get install graphviz")
