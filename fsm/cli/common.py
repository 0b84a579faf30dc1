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


def _sqlite_path(url: str) -> str | None:
    """The file a SQLite URL names (the forms `fsm.store.open_store` accepts), else None."""
    if url.startswith("sqlite:///"):
        return url[len("sqlite:///") :]
    return None if "://" in url else url


def open_db(url: str, *, readonly: bool) -> Store:
    """Open an existing database for ``--db URL``; never create one because of a typo.

    ``readonly`` for inspection: the file is never written (see `Store`), so any file can be
    named; one without fsm's schema is a bad ``--db`` argument (exit 2).
    """
    # LEAD: when merging h-store, `open_store(url, readonly=True)` refuses a missing SQLite
    # file itself (a new FsmError subclass). Then drop `_sqlite_path` and this check if the
    # store also covers readonly=False (the worker), else keep it for the worker only; and
    # the two `except` clauses below that only reword may go once main() maps FsmError.
    path = _sqlite_path(url)
    if path is not None and not Path(path).is_file():
        raise CommandError(f"no database at {path!r} (from --db {url!r})")
    try:
        return open_store(url, readonly=readonly)
    except NotAnFsmDatabase as exc:
        raise UsageError(f"--db {url!r}: {exc}") from None
    except (ValueError, FsmError) as exc:
        raise CommandError(f"cannot open database {url!r}: {exc}") from None
    except (peewee.PeeweeException, sqlite3.Error) as exc:
        raise CommandError(f"cannot read database {url!r}: {exc}") from None
