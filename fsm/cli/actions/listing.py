"""``fsm actions list``: live and ended actions, newest first, filtered, a page at a time.

What is listed and in which order is `Store.list_actions`'s (the library decides; this
module presents): live actions by when they started, ended ones by when they ended, newest
first. A page is what the index range reads return (`fsm.store.listing`), so the first page
shows at once at any table size; ``--after`` continues from a page's last row, ``--all``
walks every page (in constant memory).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from fsm.cli.actions import render
from fsm.cli.common import UsageError, duration, open_db, positive
from fsm.store import ActionFilter, ActionStatus, ActionSummary, Cursor
from fsm.store.reports import STATUS_GROUPS, parse_statuses

HELP = "list live and ended actions, newest first (filters, pages)"

DEFAULT_LIMIT = 50
PAGE = 1000
"""Rows read at a time by ``--all``."""


COLUMNS = (
    render.Column("ID", 22, 26, fold=True),
    render.Column("KIND", 7, 14),
    render.Column("STATE", 7, 14),
    render.Column("STATUS", 7, 11),
    render.Column("WHEN", 10, 10),
    render.Column("NOTE", 13, fold=True),
)
"""The listing in 80 columns: the id and the note whole (folded onto more lines), names
cut short when the terminal is narrow."""

NOTE_CHARS = 160
"""A note longer than this is cut (``fsm actions show`` has it whole)."""


def add_db(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    p.add_argument("--db", metavar="URL", required=required, help="the database to read")


def configure(p: argparse.ArgumentParser, *, bare: bool = False) -> None:
    """The options of ``list`` (and of the bare ``fsm actions``, where ``--db`` can wait for
    a subcommand's)."""
    add_db(p, required=not bare)
    statuses = ", ".join([*STATUS_GROUPS, *ActionStatus])
    p.add_argument("--kind", metavar="K", help="only actions of this kind")
    p.add_argument("--state", metavar="S", help="only actions in (or ended in) this state")
    p.add_argument(
        "--status",
        action="append",
        default=[],
        metavar="S",
        help=f"only these statuses (repeatable, or comma-separated): {statuses}",
    )
    p.add_argument(
        "--since",
        metavar="WHEN",
        help="started (live) or ended since: a duration ago (30d, 12h, 90m) or a UTC time "
        "(2024-05-01T12:00)",
    )
    p.add_argument("--error", metavar="TEXT", help="only actions whose error or cause has TEXT")
    p.add_argument(
        "--limit",
        metavar="N",
        type=positive(int),
        help=f"show at most N actions (default {DEFAULT_LIMIT})",
    )
    p.add_argument("--after", metavar="CURSOR", help="the page after this cursor")
    p.add_argument("--all", action="store_true", help="every action, page after page")
    p.add_argument("--json", action="store_true", help="print one JSON array")


def run(args: argparse.Namespace) -> int:
    if args.db is None:
        raise UsageError("the following arguments are required: --db")
    if args.all and args.limit is not None:
        raise UsageError("--all and --limit do not go together")
    after = _cursor(args.after)
    store = open_db(args.db, readonly=True)
    try:
        where = _filter(args, store.now())
        if args.all:
            found = (a for page in store.walk_actions(where, page=PAGE, after=after) for a in page)
            if args.json:
                render.stream_json_array(a.to_json() for a in found)
            else:
                _tables(store.now(), render.chunks(found, PAGE))
            return 0
        limit = DEFAULT_LIMIT if args.limit is None else int(args.limit)
        page = store.list_actions(where, after=after, limit=limit + 1)
        now = store.now()
    finally:
        store.close()
    shown, more = page[:limit], len(page) > limit
    if args.json:
        render.stream_json_array(a.to_json() for a in shown)
        return 0
    _tables(now, [shown] if shown else [])
    if more:
        out = render.console()
        out.print(f"more: --after {shown[-1].cursor.token}", soft_wrap=True)
    return 0


def _tables(now: float, pages: Iterable[Sequence[ActionSummary]]) -> None:
    out = render.console()
    first = True
    for page in pages:
        cells = [[render.cell(c) for c in row(a, now)] for a in page]
        t = render.table(COLUMNS, cells, out.width)
        t.show_header = first
        out.print(t)
        first = False
    if first:
        out.print("no actions")


def row(a: ActionSummary, now: float) -> tuple[str, ...]:
    """A listed action's cells: WHEN is its start (live) or its end, NOTE what matters most."""
    text = note(a, now)
    if len(text) > NOTE_CHARS:
        text = text[: NOTE_CHARS - 1] + "…"
    return (a.id, a.kind, a.state, a.status.value, render.short(a.at, now), text)


def note(a: ActionSummary, now: float) -> str:
    """The one thing to read about an action: why it is set aside, its error, or what next."""
    if a.quarantine is not None:
        return a.quarantine
    if a.error is not None:
        first = a.error.split("\n", 1)[0]
        return f"attempt {a.attempts}: {first}" if a.attempts else first
    status = a.status
    if status is ActionStatus.PARKED:
        return f"wakes {render.relative(a.wake_at, now)}"
    if status is ActionStatus.WAITING:
        return "waits for a notify"
    if status is ActionStatus.RUNNING:
        return f"leased by {a.lease_owner} until {render.relative(a.lease_expires, now)}"
    if not status.live:
        retries = f", {render.plural(a.retries, 'retry', 'retries')}" if a.retries else ""
        return render.plural(a.steps, "step") + retries
    return ""


def _cursor(token: str | None) -> Cursor | None:
    if token is None:
        return None
    try:
        return Cursor.parse(token)
    except ValueError as exc:
        raise UsageError(f"--after: {exc}") from None


def _filter(args: argparse.Namespace, now: float) -> ActionFilter:
    names = [name.strip() for given in args.status for name in given.split(",") if name.strip()]
    try:
        parse_statuses(names)
    except ValueError as exc:
        raise UsageError(f"--status: {exc}") from None
    return ActionFilter(
        kind=args.kind,
        state=args.state,
        statuses=tuple(names),
        since=None if args.since is None else since(args.since, now),
        error=args.error,
    )


def since(text: str, now: float) -> float:
    """``--since``: a duration before ``now`` (``12h``), or a time (ISO 8601, UTC if bare)."""
    try:
        return now - duration(text)
    except argparse.ArgumentTypeError:
        pass
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"--since: not a duration (30d, 12h) nor a time (2024-05-01T12:00): {text!r}"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()
