"""The ``fsm`` command, run as a real process: output, exit codes, one-line errors."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import fsm
from fsm.diagram import CURRENT_FILL, to_mermaid
from fsm.discover import load_module

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
        )
        rejections = {opened: dropped}

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
    assert rows["ticket"][4] == "(helpdesk:TicketKind)"
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
    assert_one_line_error(proc, 1, "garbage.sqlite")


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
