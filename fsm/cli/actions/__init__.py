"""``fsm actions``: find actions, read one, and act on them; one module per subcommand.

`SUBCOMMANDS` maps a read subcommand's name to its module, which has ``HELP`` (one line),
``configure(parser)`` and ``run(args) -> exit code``; adding a subcommand is adding an
entry. The operator's controls (`fsm.cli.control`) register themselves next to them.
``fsm actions --db URL`` with no subcommand is ``list`` (as it was before there were
subcommands, so old scripts keep working).
"""

from __future__ import annotations

import argparse
from typing import Protocol

from fsm.cli import control
from fsm.cli.actions import history, listing, send, show
from fsm.cli.common import Command


class Subcommand(Protocol):
    """What `SUBCOMMANDS` holds: a module (or any object) with these three."""

    HELP: str

    def configure(self, p: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


SUBCOMMANDS: dict[str, Subcommand] = {
    "list": listing,
    "show": show,
    "history": history,
    "send": send,
}

DEFAULT = "list"


def configure(p: argparse.ArgumentParser) -> None:
    listing.configure(p, bare=True)  # the bare ``fsm actions --db URL`` lists
    sub = p.add_subparsers(dest="actions_command", metavar="SUBCOMMAND")
    for name, module in SUBCOMMANDS.items():
        module.configure(sub.add_parser(name, help=module.HELP, description=module.HELP))
    control.register(sub)  # retry, notify, cancel, stop, unquarantine (`fsm.cli.control`)


def run(args: argparse.Namespace) -> int:
    handler = getattr(args, "handler", None)  # set by a control's subparser
    if handler is not None:
        return int(handler(args))
    return SUBCOMMANDS[args.actions_command or DEFAULT].run(args)


COMMAND = Command(
    "find actions, read one, act on one: "
    + ", ".join([*SUBCOMMANDS, *control.CONTROLS])
    + " (default: list)",
    configure,
    run,
)
