"""``fsm actions show ID``: everything about one action, from one read (`Store.inspect`).

Its status and what goes with it (the wake-up, the lease, the error and its chain of
causes, the quarantine reason, the outcome), the checkpoint as stored (JSON: the command
needs no kind to read it), its resources, the id's earlier incarnations, and the newest
steps of its history (``fsm actions history ID`` prints them all).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from rich.table import Table
from rich.text import Text

from fsm.cli.actions import render
from fsm.cli.actions.listing import add_db
from fsm.cli.common import CommandError, open_db
from fsm.store import ActionReport, ActionStatus, LoggedStep

HELP = "show one action: status, error, checkpoint, resources, lease, recent history"

SHOWN_STEPS = 10
"""Steps of history the table shows (``--json`` holds the report's)."""


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("id", metavar="ID", help="the action's id")
    add_db(p)
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")


def run(args: argparse.Namespace) -> int:
    store = open_db(args.db, readonly=True)
    try:
        report = store.inspect(args.id)
        now = store.now()
    finally:
        store.close()
    if report is None:
        raise CommandError(f"no action {args.id!r} in this database (neither live nor kept)")
    if args.json:
        render.write_json(report.to_json())
        return 0
    out = render.console()
    rows = [[render.cell(name), value] for name, value in fields(report, now)]
    t = render.table(
        (render.Column("FIELD", 11, 11), render.Column("VALUE", fold=True)), rows, out.width
    )
    t.show_header = False
    out.print(t)
    if report.history:
        shown = report.history[-SHOWN_STEPS:]
        older = len(report.history) - len(shown) + (1 if report.history_truncated else 0)
        head = f"last {render.plural(len(shown), 'step')}"
        head += " (more: fsm actions history)" if older else ""
        out.print(Text(head, style="bold"))
        out.print(steps_table(shown, now, out.width))
    return 0


def fields(r: ActionReport, now: float) -> list[tuple[str, Text]]:
    """The report as (name, value) lines, the most telling first."""
    out: list[tuple[str, Text]] = [
        ("id", render.cell(r.id)),
        ("kind", render.cell(f"{r.kind}" + (f" v{r.version}" if r.version is not None else ""))),
        ("status", render.cell(status_line(r, now))),
        ("state", render.cell(r.state)),
        ("incarnation", render.cell(r.incarnation or "-")),
        ("started", render.cell(_when(r.started_at, now))),
    ]
    if r.outcome is not None:
        out.append(("ended", render.cell(_when(r.outcome.finished_at, now))))
    else:
        out.append(("updated", render.cell(_when(r.updated_at, now))))
    counts = render.plural(r.steps, "step") + f", {render.plural(r.retries, 'retry', 'retries')}"
    if r.live:
        counts += f"; {render.plural(r.attempts, 'attempt')} since the last success"
    out.append(("steps", render.cell(counts)))
    if r.quarantine is not None:
        out.append(("quarantine", render.cell(r.quarantine)))
    if r.error is not None:
        out.append(("error", render.lines("\n".join(r.error_chain))))
    if r.cause is not None:
        out.append(("cause", render.lines(r.cause)))
    if r.live:
        out.append(("wake", render.cell(_wake(r, now))))
        lease = (
            f"{r.lease_owner} until {render.relative(r.lease_expires, now)}"
            if r.lease_owner is not None
            else "none"
        )
        out.append(("lease", render.cell(lease)))
        out.append(("resources", render.cell(", ".join(r.resources) or "none")))
        out.append(("inbox", render.lines(_inbox(r, now))))
        out.append(("checkpoint", render.lines(_pretty(r.payload))))
    for kept in r.earlier:
        ended = f"{kept.status} in {kept.state} {render.relative(kept.finished_at, now)}"
        out.append(("earlier", render.cell(f"{kept.incarnation or '-'}: {ended}")))
    return out


def _inbox(r: ActionReport, now: float) -> str:
    """The pending events, oldest first: name, key and when each was sent."""
    if not r.events_pending:
        return "empty"
    lines = [f"{r.events_pending} pending"]
    lines += [f"{e.name} (key {e.key}, sent {render.relative(e.sent_at, now)})" for e in r.events]
    if r.events_pending > len(r.events):
        lines.append(f"... and {r.events_pending - len(r.events)} more")
    return "\n".join(lines)


def status_line(r: ActionReport, now: float) -> str:
    """The status with what goes with it, in words."""
    s = r.status
    if s is ActionStatus.PARKED:
        return f"parked until {_when(r.wake_at or 0.0, now)}"
    if s is ActionStatus.DUE:
        return f"due (since {render.relative(r.wake_at, now)})"
    if s is ActionStatus.WAITING:
        return "waiting for a notify"
    if s is ActionStatus.RUNNING:
        return f"running: leased by {r.lease_owner} until {render.relative(r.lease_expires, now)}"
    if s is ActionStatus.BROKEN:
        return "broken: the kind's code failed; fix it, then notify or retry"
    if s is ActionStatus.QUARANTINED:
        return "quarantined: set aside, never driven"
    return f"{s.value} {render.relative(r.ended_at, now)} (in state {r.state})"


FIELD_COLUMNS = (render.Column("FIELD", 11, 11), render.Column("VALUE", fold=True))

STEP_COLUMNS = (
    render.Column("SEQ", 3, 6),
    render.Column("WHEN", 4, 11),
    render.Column("FROM", 4, 16),
    render.Column("TO", 4, 16),
    render.Column("OUTCOME", 4, 7),
    render.Column("VIA", 3, 9),
    render.Column("ERROR", 5),
)


def steps_table(steps: Sequence[LoggedStep], now: float, width: int) -> Table:
    """Steps of a history, one per line: the end's ``TO`` is ``(end)``."""
    rows = []
    for step in steps:
        error = "" if step.error is None else step.error.split("\n", 1)[0]
        shown = (
            step.seq,
            render.short(step.at, now),
            step.from_state,
            step.to_state or "(end)",
            step.outcome,
            step.via,
            error,
        )
        rows.append([render.cell(c) for c in shown])
    return render.table(STEP_COLUMNS, rows, width)


def _when(at: float, now: float) -> str:
    near, exact = render.relative(at, now), render.absolute(at)
    return near if near == exact else f"{near} ({exact})"


def _wake(r: ActionReport, now: float) -> str:
    if r.wake_at is None:
        return "on a notify only"
    return _when(r.wake_at, now) + (" (notified)" if r.notified else "")


def _pretty(payload: str | None) -> str:
    if payload is None:
        return "-"
    try:
        return json.dumps(json.loads(payload), indent=2, sort_keys=True)
    except ValueError:
        return payload
