"""The ``fsm`` command: its parser, the plugin commands, and the one error rule.

Each subcommand is a `Command` in its own module (``fsm.cli.kinds``, ``.validate``,
``.diagram``, ``.actions`` (a package, one module per subcommand), ``.prune``, ``.worker``,
``.torture``, ``.console``); installed packages add more through
``fsm.commands`` entry points. Errors follow one rule, so scripts can rely on them: bad
arguments exit 2 and runtime problems (a missing kind, an unreadable database, no Graphviz)
exit 1, each with a single ``fsm: error: <reason>`` line on stderr and no traceback.

The command is safe to point at anything: it never puts the current folder on ``sys.path``
(user modules are loaded by `fsm.discover.load_module`, which cannot shadow installed ones),
inspection opens databases read-only, and text read from a database is printed with its
control characters escaped.
"""

from __future__ import annotations

import argparse
import contextlib
import sqlite3
import sys
from collections.abc import Sequence
from typing import Any, NoReturn, TextIO, cast

import peewee

from fsm import plugins
from fsm.cli.actions import COMMAND as ACTIONS
from fsm.cli.common import PROG, Command, CommandError, UsageError
from fsm.cli.console import COMMAND as CONSOLE
from fsm.cli.diagram import COMMAND as DIAGRAM
from fsm.cli.kinds import COMMAND as KINDS
from fsm.cli.prune import COMMAND as PRUNE
from fsm.cli.torture import COMMAND as TORTURE
from fsm.cli.validate import COMMAND as VALIDATE
from fsm.cli.worker import COMMAND as WORKER
from fsm.errors import FsmError
from fsm.failures import one_line
from fsm.worker.services import ServicesMissing

COMMANDS: dict[str, Command] = {
    "kinds": KINDS,
    "validate": VALIDATE,
    "diagram": DIAGRAM,
    "actions": ACTIONS,
    "prune": PRUNE,
    "worker": WORKER,
    "torture": TORTURE,
    "console": CONSOLE,
}


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage dump on errors replaced by the one-line `UsageError`."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


class PluginCommand:
    """A subcommand from an ``fsm.commands`` entry point (an object with ``help``,
    ``configure(parser)`` and ``run(args)`` like `Command`). One that cannot be loaded
    still shows up, with the reason as its help, and fails when run: it never breaks the
    other commands."""

    def __init__(self, plugin: plugins.Plugin) -> None:
        self.command = cast(Any, plugin.loaded)
        self.error: str | None = None
        try:
            if plugin.error is not None:
                raise plugin.error
            self.help = str(self.command.help)
        except Exception as exc:
            self.command = None
            self.error = f"cannot load command {plugin.name!r} ({plugin.value}): {exc}"
            self.help = f"unavailable: {exc}"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        if self.command is not None:
            self.command.configure(parser)

    def run(self, args: argparse.Namespace) -> int:
        if self.error is not None:
            raise CommandError(self.error)
        return int(self.command.run(args))


def all_commands() -> dict[str, Any]:
    """The built-in commands, then those of installed packages (a built-in name wins)."""
    commands: dict[str, Any] = dict(COMMANDS)
    for plugin in plugins.load_group(plugins.COMMANDS):
        if plugin.name not in commands:
            commands[plugin.name] = PluginCommand(plugin)
    return commands


def build_parser(commands: dict[str, Any]) -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Durable actions as declarative state machines.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in commands.items():
        command.configure(sub.add_parser(name, help=command.help, description=command.help))
    return parser


NOT_INSTALLED = {
    "demo": "'demo' comes with the bark wallet kinds: pip install -e ./definitions "
    "(from fsm's repository)",
}
"""Commands of fsm's companion distribution ``fsm-bark``: named with how to get them."""


def main(
    argv: Sequence[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run the ``fsm`` command; returns the exit code (the console script exits with it).

    ``stdout`` and ``stderr`` replace ``sys.stdout`` and ``sys.stderr`` while it runs, so a
    test (or a program) runs the command in-process and reads what it printed.
    """
    with (
        contextlib.redirect_stdout(stdout or sys.stdout),
        contextlib.redirect_stderr(stderr or sys.stderr),
    ):
        return _run(argv)


def _run(argv: Sequence[str] | None) -> int:
    # The exit-code rule: bad arguments 2, runtime problems 1, each one line.
    try:
        commands = all_commands()
        first = next(iter(sys.argv[1:] if argv is None else argv), None)
        if first in NOT_INSTALLED and first not in commands:
            return _fail(2, NOT_INSTALLED[first])
        try:
            args = build_parser(commands).parse_args(argv)
        except SystemExit as done:  # --help: argparse printed it and exits 0
            return done.code if isinstance(done.code, int) else 0
        return int(commands[args.command].run(args))
    except (UsageError, ServicesMissing) as exc:
        return _fail(2, str(exc))
    except (CommandError, FsmError, OSError) as exc:
        return _fail(1, str(exc))
    except (peewee.PeeweeException, sqlite3.Error) as exc:
        return _fail(1, f"database error: {exc}")


def _fail(code: int, message: str) -> int:
    sys.stderr.write(f"{PROG}: error: {one_line(message)}\n")
    return code
