"""What the CLI tests share: the kinds they run on, and two ways to run ``fsm``.

The fixtures made of them are in ``tests/cli/conftest.py``.

`run_fsm` runs the command in this process (`fsm.cli.main` with its own streams): the way
to test exit codes and output. `spawn_fsm` and `fsm_script` start a real process, for what
only a process shows: signals, the installed console script, ``sys.path`` as a user gets it,
environment variables read at start-up, entry points of other distributions.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import textwrap
from pathlib import Path

import attrs

from fsm.cli import main

REPO = Path(__file__).resolve().parents[2]


@attrs.frozen
class Ran:
    """What one in-process run of ``fsm`` returned and printed."""

    returncode: int
    stdout: str
    stderr: str


def run_fsm(*args: str | Path, cwd: Path | None = None) -> Ran:
    """``fsm ARGS`` in this process (in ``cwd`` if given)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.chdir(cwd) if cwd is not None else contextlib.nullcontext():
        code = main([str(a) for a in args], stdout=out, stderr=err)
    return Ran(code, out.getvalue(), err.getvalue())


def spawn_fsm(
    *args: str | Path, cwd: Path = REPO, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m fsm.cli ARGS`` as a real process."""
    return subprocess.run(
        [sys.executable, "-m", "fsm.cli", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def fsm_script() -> Path:
    """The installed console script: unlike ``python -m``, it puts no folder of ours first on
    ``sys.path``, which is what users run."""
    script = Path(sys.executable).with_name("fsm")
    assert script.is_file(), "the fsm console script is not installed: pip install -e ."
    return script


def assert_one_line_error(
    proc: Ran | subprocess.CompletedProcess[str], code: int, text: str
) -> None:
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("fsm: error: ")
    assert text in lines[0]


KINDS_SOURCE = textwrap.dedent(
    '''
    """Two kinds: a declarative one, and one written by hand to the discovery contract."""

    import attrs

    from fsm.diagram import Edge, KindGraph, StateNode
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
