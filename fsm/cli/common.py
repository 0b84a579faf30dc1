"""What every ``fsm`` subcommand shares: the `Command` seam, its two errors, output helpers.

`Command` and `CommandError` are the documented seam for plugin commands (``fsm.commands``
entry points, such as the wallet's ``demo``): a command reads its arguments from an
``argparse.Namespace``, writes to ``sys.stdout``/``sys.stderr`` (looked up when it writes, so
`fsm.cli.main` can hand it other streams) and returns its exit code.
"""

from __future__ import annotations

import argparse
import math
import sqlite3
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import attrs
import peewee

from fsm.errors import FsmError, NotAnFsmDatabase
from fsm.failures import one_line
from fsm.store import Store, open_store
from fsm.store.opening import sqlite_path

PROG = "fsm"


class UsageError(Exception):
    """Bad command-line arguments: exit code 2."""


class CommandError(Exception):
    """The command cannot do what was asked: exit code 1."""


@attrs.frozen
class Command:
    """A subcommand: its one-line help, its arguments, and its handler (returns exit code)."""

    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Left-aligned columns, two spaces apart; the last column is not padded."""
    body = [list(headers), *([one_line(cell) for cell in r] for r in rows)]
    widths = [max(len(r[i]) for r in body) for i in range(len(headers) - 1)]
    lines = [
        "  ".join([*(cell.ljust(w) for cell, w in zip(r, widths, strict=False)), r[-1]]).rstrip()
        for r in body
    ]
    return "\n".join(lines) + "\n"


def add_module_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--module",
        "-m",
        action="append",
        default=[],
        metavar="M",
        help="definitions module (dotted name or .py path); repeatable",
    )


def report_problems(problems: Iterable[str]) -> None:
    """One ``fsm: warning:`` line on stderr per problem."""
    for problem in problems:
        sys.stderr.write(f"{PROG}: warning: {one_line(problem)}\n")


def positive(kind: type[int] | type[float]) -> Callable[[str], float]:
    """An argparse type: a finite number > 0 (``nan``, ``inf`` and ``0`` are refused: a NaN
    lease would never expire, an infinite poll never wake)."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not math.isfinite(value) or value <= 0:
            raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
        return value

    return parse


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def duration(text: str) -> float:
    """An argparse type: a duration such as ``30d``, ``12h``, ``90m``, ``45s`` or ``2w``
    (a plain number is seconds), finite and not negative; in seconds."""
    number, unit = (text[:-1], text[-1]) if text[-1:] in _UNITS else (text, "s")
    try:
        value = float(number) * _UNITS[unit]
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0) or number.strip() != number:
        raise argparse.ArgumentTypeError(
            f"not a duration: {text!r} (a number and a unit: 30d, 12h, 90m, 45s, 2w)"
        )
    return value


def open_db(url: str, *, readonly: bool) -> Store:
    """Open an existing database for ``--db URL``; never create one because of a typo.

    ``readonly`` for inspection: the file is never written (see `Store`), so any file can be
    named; one without fsm's schema is a bad ``--db`` argument (exit 2).
    """
    try:
        # The worker opens read-write, and SQLite would create a file for a mistyped path.
        path = sqlite_path(url)
        if path is not None and not Path(path).is_file():
            raise CommandError(f"no database at {path!r} (from --db {url!r})")
        return open_store(url, readonly=readonly)
    except NotAnFsmDatabase as exc:
        raise UsageError(f"--db {url!r}: {exc}") from None
    except (ValueError, FsmError) as exc:
        raise CommandError(f"cannot open database {url!r}: {exc}") from None
    except (peewee.PeeweeException, sqlite3.Error) as exc:
        raise CommandError(f"cannot read database {url!r}: {exc}") from None
