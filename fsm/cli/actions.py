"""``fsm actions --db URL``: the live and quarantined actions of a database, one per line.

The database is opened read-only, and what it holds is shown whatever it is: text with its
control characters escaped, any stored wake-up time in words (`when`).
"""

from __future__ import annotations

import argparse
import math
import sys
from datetime import UTC, datetime

from fsm.cli.common import Command, open_db, table
from fsm.store import RowInfo


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", metavar="URL", required=True, help="the database to read")
    p.add_argument("--kind", metavar="K", help="only actions of this kind")


def run(args: argparse.Namespace) -> int:
    store = open_db(args.db, readonly=True)
    try:
        rows = [r for r in store.rows() if args.kind is None or r.kind == args.kind]
    finally:
        store.close()
    if not rows:
        sys.stdout.write("no actions\n")
        return 0
    lines = [
        [
            r.id,
            r.kind,
            r.state,
            status(r),
            str(r.attempts),
            when(r.wake_at),
            f"quarantined: {r.quarantine}" if r.quarantine is not None else r.last_error or "",
        ]
        for r in rows
    ]
    headers = ["ID", "KIND", "STATE", "STATUS", "ATTEMPTS", "WAKE_AT", "ERROR"]
    sys.stdout.write(table(headers, lines))
    return 0


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
