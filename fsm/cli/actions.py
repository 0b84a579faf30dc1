"""``fsm actions --db URL``: the live and quarantined actions of a database, one per line.

The operator's controls are subcommands of it (``fsm actions retry ID``, ...: see
`fsm.cli.control`); without a subcommand it lists.

The database is opened read-only, and what it holds is shown whatever it is: text with its
control characters escaped, any stored wake-up time in words (`when`). Rows are read and
printed a page at a time (keyset pagination by id), so a million rows list in constant
memory and the first page shows at once; a column widens when a later page needs it.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

from fsm.cli import control
from fsm.cli.common import Command, UsageError, open_db, positive
from fsm.failures import one_line
from fsm.store import RowInfo
from fsm.store.inspection import pages

PAGE = 1000
"""Rows read and printed at a time."""

HEADERS = ("ID", "KIND", "STATE", "STATUS", "ATTEMPTS", "WAKE_AT", "ERROR")


def configure(p: argparse.ArgumentParser) -> None:
    # Not required here: a subcommand takes its own --db (checked in `run`).
    p.add_argument("--db", metavar="URL", help="the database to read")
    p.add_argument("--kind", metavar="K", help="only actions of this kind")
    p.add_argument(
        "--limit", metavar="N", type=positive(int), help="show at most N actions (first by id)"
    )
    sub = p.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
    control.register(sub)


def run(args: argparse.Namespace) -> int:
    handler = getattr(args, "handler", None)
    if handler is not None:
        return int(handler(args))
    if args.db is None:
        raise UsageError("actions: the following arguments are required: --db")
    store = open_db(args.db, readonly=True)
    try:
        size = PAGE if args.limit is None else min(PAGE, int(args.limit))
        found = pages(lambda after: store.rows_after(after, size, args.kind), lambda r: r.id)
        if args.limit is not None:
            found = _first(found, int(args.limit))
        widths: list[int] = []
        for page in found:
            lines = [cells(r) for r in page]
            if not widths:
                lines.insert(0, list(HEADERS))
            widths = [
                max(w, *(len(line[i]) for line in lines))
                for i, w in enumerate(widths or [0] * (len(HEADERS) - 1))
            ]
            sys.stdout.write("".join(_aligned(line, widths) for line in lines))
            sys.stdout.flush()
    finally:
        store.close()
    if not widths:
        sys.stdout.write("no actions\n")
    return 0


def cells(r: RowInfo) -> list[str]:
    """One row's cells, each on one line."""
    error = f"quarantined: {r.quarantine}" if r.quarantine is not None else r.last_error or ""
    shown = (r.id, r.kind, r.state, status(r), str(r.attempts), when(r.wake_at), error)
    return [one_line(cell) for cell in shown]


def _aligned(line: Sequence[str], widths: Sequence[int]) -> str:
    """Left-aligned columns, two spaces apart; the last column is not padded."""
    padded = [cell.ljust(w) for cell, w in zip(line, widths, strict=False)]
    return "  ".join([*padded, line[-1]]).rstrip() + "\n"


def _first(found: Iterator[list[RowInfo]], limit: int) -> Iterator[list[RowInfo]]:
    """The pages of the first ``limit`` rows (the page reads stop there)."""
    left = limit
    for page in found:
        yield page[:left]
        left -= len(page)
        if left <= 0:
            return


def status(r: RowInfo) -> str:
    """What an operator needs to know first: set aside, broken (waiting for a fix), or live."""
    if r.quarantine is not None:
        return "quarantined"
    if r.broken:
        return "broken"
    if r.lease_owner is not None:
        return "running"
    return "live"


def when(timestamp: float | None) -> str:
    """A stored wake-up time for people (UTC), whatever the row holds: infinity is
    ``never``, a time beyond the calendar ``far future (1e+12)``, NaN ``invalid (nan)``."""
    if timestamp is None:
        return "-"
    if math.isnan(timestamp):
        return "invalid (nan)"
    if math.isinf(timestamp):
        return "never" if timestamp > 0 else "far past (-inf)"
    try:
        return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return f"{'far future' if timestamp > 0 else 'far past'} ({timestamp:.3g})"


COMMAND = Command("list live and quarantined actions", configure, run)
