"""Bad input of every sort, each of which must get a clear error or a quarantine.

Rows a store may hold after a bug, a downgrade or a hand edit (unknown kind, unreadable JSON,
an unknown state, a version newer than the code, an id that breaks the key rules, a payload
of another action); broken kind definitions; bad command-line arguments. `try_bad_inputs`
feeds each to the real code and returns how many it tried and every expectation that failed.
The command line is run as a user runs it, ``python -m fsm``: the testing tools never import
the CLI, which imports them for ``fsm torture``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

import fsm
from fsm.errors import DefinitionError
from fsm.executor import DriveStatus, Executor
from fsm.kind import Kind
from fsm.state import State
from fsm.store import Store


@attrs.frozen
class Ticket:
    ticket_id: str


class TicketKind(Kind[Ticket, None]):
    """The smallest valid kind: the good rows beside the bad ones are of this kind."""

    name = "ticket"
    version = 2
    upcasters = {1: lambda data: data}  # noqa: RUF012
    open = State(initial=True)
    closed = State.done()
    transitions = (open.to(closed),)

    @staticmethod
    def action_id(data: Ticket) -> str:
        return f"ticket.{data.ticket_id}"


BAD_ROWS: dict[str, tuple[str, str, int, str]] = {
    # id: (kind, state, version, payload)
    "ticket.bad-json": ("ticket", "open", 2, '{"data": {"ticket_id": '),
    "ticket.bad-state": ("ticket", "nowhere", 2, '{"data": {"ticket_id": "bad-state"}}'),
    "ticket.bad:id": ("ticket", "open", 2, '{"data": {"ticket_id": "bad:id"}}'),
    "ticket.not-mine": ("ticket", "open", 2, '{"data": {"ticket_id": "someone"}}'),
    "ticket.bad-shape": ("ticket", "open", 2, '{"data": {"ticket": 1}}'),
}


FOREIGN_ROWS: dict[str, tuple[str, str, int, str]] = {
    # rows this executor cannot drive but that are not bad: left as they are for a driver
    # that knows them (another team's kind, a newer version in a rolling deploy)
    "ticket.ghost-kind": ("no-such-kind", "open", 2, '{"data": {"ticket_id": "ghost-kind"}}'),
    "ticket.too-new": ("ticket", "open", 9, '{"data": {"ticket_id": "too-new"}}'),
}


def _expected(action_id: str) -> DriveStatus:
    if action_id in BAD_ROWS:
        return DriveStatus.QUARANTINED
    if action_id in FOREIGN_ROWS:
        return DriveStatus.SKIPPED
    return DriveStatus.DONE


def _bad_rows(folder: Path) -> tuple[int, list[str]]:
    store = Store.sqlite(folder / "bad-rows.sqlite")
    for action_id, (kind, state, version, payload) in {**BAD_ROWS, **FOREIGN_ROWS}.items():
        store.insert(action_id, kind, state, version, payload, [f"res.{action_id}"], 0.0)
    executor: Executor[None] = Executor(store, None, kinds=[TicketKind])
    good = [f"good-{i}" for i in range(3)]

    async def run() -> list[str]:
        for name in good:
            await executor.start(TicketKind.create(Ticket(name)))
        report = await executor.resume_all(keep_results=True)  # every row's fate is checked
        problems = []
        for result in report.results:
            expected = _expected(result.id)
            if result.status is not expected:
                problems.append(f"row {result.id}: {result.status.value}, expected {expected}")
        reasons = {row.id: row.quarantine for row in report.quarantined}
        problems += [f"row {i} was not quarantined" for i in BAD_ROWS if not reasons.get(i)]
        problems += [f"row {i} was quarantined" for i in FOREIGN_ROWS if reasons.get(i)]
        return problems

    problems = asyncio.run(run())
    store.close()
    return len(BAD_ROWS) + len(FOREIGN_ROWS), problems


class _ById:
    """What the broken kinds below share and get right: an ``action_id``."""

    @staticmethod
    def action_id(data: Ticket) -> str:
        return data.ticket_id


def _definitions() -> list[Callable[[], Any]]:
    """Kinds with one mistake each; every one must raise DefinitionError at class creation."""

    def no_initial() -> Any:
        class NoInitial(_ById, Kind[Ticket, None]):
            name = "bad1"
            a = State()
            b = State.done()
            transitions = (a.to(b),)

    def shadowed() -> Any:
        class Shadowed(_ById, Kind[Ticket, None]):
            name = "bad2"
            a = State(initial=True)
            b = State.done()
            c = State.failed()
            transitions = (a.to(b), a.to(c))

    def unreachable() -> Any:
        class Unreachable(_ById, Kind[Ticket, None]):
            name = "bad3"
            a = State(initial=True)
            b = State.done()
            island = State()
            transitions = (a.to(b), island.to(b))

    def wrong_arity() -> Any:
        def effect(data: Ticket) -> Ticket:
            return data

        class WrongArity(_ById, Kind[Ticket, None]):
            name = "bad4"
            a = State(initial=True)
            b = State.done()
            transitions = (a.to(b, effect=effect),)  # type: ignore[arg-type]

    def no_id() -> Any:
        class NoId(Kind[Ticket, None]):
            name = "bad5"
            a = State(initial=True)
            b = State.done()
            transitions = (a.to(b),)

    return [no_initial, shadowed, unreachable, wrong_arity, no_id]


def _bad_definitions() -> tuple[int, list[str]]:
    problems = []
    cases = _definitions()
    for case in cases:
        try:
            case()
        except DefinitionError as exc:
            if "Fix" not in str(exc) or "kind" not in str(exc):
                problems.append(f"{case.__name__}: unclear message: {exc}")
        else:
            problems.append(f"{case.__name__}: no DefinitionError")
    return len(cases), problems


BAD_ARGUMENTS: list[list[str]] = [
    [],
    ["no-such-command"],
    ["diagram"],
    ["diagram", "ticket", "--format", "gif"],
    ["actions"],
    ["worker", "--db", "x.sqlite", "--concurrency", "0", "--module", "m"],
    ["torture", "--kills", "-1"],
]


def _bad_arguments() -> tuple[int, list[str]]:
    """Run ``python -m fsm`` with each of `BAD_ARGUMENTS`, as a user would (so the testing
    tools never import the command line, which runs them)."""
    root = str(Path(fsm.__file__).resolve().parent.parent)  # this fsm, in the child too
    paths = [root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    problems = []
    for argv in BAD_ARGUMENTS:
        proc = subprocess.run(
            [sys.executable, "-m", "fsm", *argv],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        code = proc.returncode
        lines = proc.stderr.strip().splitlines()
        if code != 2 or len(lines) != 1:
            problems.append(f"fsm {' '.join(argv)}: exit {code}, {len(lines)} stderr line(s)")
    return len(BAD_ARGUMENTS), problems


def try_bad_inputs() -> tuple[int, list[str]]:
    """Feed every bad input to the real code; (how many were tried, what went wrong)."""
    tried = 0
    problems: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        parts: list[Callable[[], tuple[int, list[str]]]] = [
            lambda: _bad_rows(Path(tmp)),
            _bad_definitions,
            _bad_arguments,
        ]
        for part in parts:
            n, found = part()
            tried += n
            problems += found
    return tried, problems
