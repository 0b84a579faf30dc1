"""``fsm actions history ID``: one incarnation's steps, oldest first, every one of them.

The incarnation is the live one of the id, or else the newest that ended; ``--incarnation``
picks an earlier one (``fsm actions show`` lists them). The steps are read a page at a time
by the log's index on the action (`Store.history`), so a long history prints in constant
memory.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterator

from fsm.cli.actions import render
from fsm.cli.actions.listing import add_db
from fsm.cli.actions.show import steps_table
from fsm.cli.common import CommandError, open_db
from fsm.store import ActionReport, LoggedStep, Store
from fsm.store.inspection import pages

HELP = "print one action's history, step by step"

PAGE = 1000


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("id", metavar="ID", help="the action's id")
    add_db(p)
    p.add_argument("--incarnation", metavar="INC", help="an earlier incarnation of the id")
    p.add_argument("--json", action="store_true", help="print one JSON array of steps")


def run(args: argparse.Namespace) -> int:
    store = open_db(args.db, readonly=True)
    try:
        report = store.inspect(args.id, history=0)
        if report is None:
            raise CommandError(f"no action {args.id!r} in this database (neither live nor kept)")
        since, until = bounds(report, args.incarnation)
        found = _steps(store, args.id, since, until)
        if args.json:
            render.stream_json_array(_json(step) for page in found for step in page)
            return 0
        out = render.console()
        now = store.now()
        incarnation = args.incarnation or report.incarnation or "-"
        head = f"{report.id} ({report.kind}), incarnation {incarnation}"
        out.print(render.cell(head))
        empty = True
        for page in found:
            out.print(steps_table(page, now, out.width))
            empty = False
        if empty:
            out.print("no steps logged (the log may be off, or pruned)")
    finally:
        store.close()
    return 0


def bounds(report: ActionReport, incarnation: str | None) -> tuple[float, float]:
    """The time span of the incarnation asked for (default: the one the report shows)."""
    if incarnation is None or incarnation == report.incarnation:
        end = report.ended_at
        return report.started_at, math.inf if end is None else end
    for kept in report.earlier:
        if kept.incarnation == incarnation:
            return kept.started_at, kept.finished_at
    known = ", ".join(k.incarnation or "-" for k in (report.earlier)) or "none"
    raise CommandError(f"no incarnation {incarnation!r} of {report.id!r} (earlier: {known})")


def _steps(store: Store, action_id: str, since: float, until: float) -> Iterator[list[LoggedStep]]:
    def fetch(after: int | None) -> list[LoggedStep]:
        return store.history(action_id, since=since, until=until, after=after, limit=PAGE)

    return pages(fetch, lambda step: step.id)


def _json(step: LoggedStep) -> dict[str, object]:
    return {
        "id": step.id,
        "seq": step.seq,
        "at": step.at,
        "from_state": step.from_state,
        "to_state": step.to_state,
        "outcome": step.outcome,
        "via": step.via,
        "attempt": step.attempt,
        "error": step.error,
        "duration": step.duration,
        "kind": step.kind,
    }
