"""``fsm actions send ID EVENT --key KEY [--data JSON]``: an event into an action's inbox.

An operator's (or a script's) `fsm.Executor.send`: the event type is found by its name among
the event rows of the action's kind (loaded with ``--module``, else the installed ``fsm.kinds``
entry points), built from ``--data`` (a JSON object of its fields) through fsm's converter,
and stored; a worker takes it. Nothing is driven here.

Exit codes: 0 in the inbox (sent, or already sent with this key) or set aside by the kind's
``unaccepted = "drop"``; 1 refused (no such action, ended, the kind takes no such event, the
key was used for another event); 2 bad arguments (``--data`` not JSON or not the event's
fields).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

import attrs
import cattrs

from fsm.cli.common import CommandError, UsageError, add_module_option, open_db
from fsm.converter import CONVERTER
from fsm.discover import drivable
from fsm.executor import Executor
from fsm.failures import one_line
from fsm.results import SendResult, SendStatus

HELP = "send an event to an action (a worker takes it)"

_DONE = (SendStatus.SENT, SendStatus.DUPLICATE, SendStatus.DROPPED)


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("id", metavar="ID", help="the action's id")
    p.add_argument("event", metavar="EVENT", help="the event's name (its type, e.g. Approved)")
    p.add_argument("--key", required=True, help="deduplicates the send: the same key is one event")
    p.add_argument("--data", default="{}", metavar="JSON", help="the event's fields (default {})")
    # SUPPRESS: ``fsm actions --db URL send ...`` keeps the URL given before the subcommand.
    p.add_argument("--db", metavar="URL", default=argparse.SUPPRESS, help="the database")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_module_option(p)


def run(args: argparse.Namespace) -> int:
    url = getattr(args, "db", None)
    if url is None:
        raise UsageError("actions send: the following arguments are required: --db")
    try:
        data = json.loads(args.data)
    except ValueError as exc:
        raise UsageError(f"actions send: --data is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError("actions send: --data must be a JSON object of the event's fields")
    kinds = drivable(args.module)
    store = open_db(url, readonly=False)
    try:
        executor: Executor[Any] = Executor(store, kinds=kinds)
        event = _event(executor, args.id, args.event, data)
        result = asyncio.run(executor.send(args.id, event, key=args.key))
    finally:
        store.close()
    if result.status not in _DONE:
        raise CommandError(_describe(result, args.event))
    if args.json:
        out = attrs.asdict(result)
        out["status"] = result.status.value
        sys.stdout.write(json.dumps(out) + "\n")
    else:
        sys.stdout.write(one_line(_describe(result, args.event)) + "\n")
    return 0


def _event(executor: Executor[Any], action_id: str, name: str, data: dict[str, Any]) -> Any:
    """The event named ``name`` of the action's kind, built from ``data``."""
    row = executor.store.row(action_id)
    if row is None:
        raise CommandError(f"no live action {action_id!r}")
    if row.kind not in executor.registry:
        raise CommandError(f"kind {row.kind!r} is not loaded (name its module with --module)")
    compiled = getattr(executor.registry.get(row.kind), "compiled", None)
    types = {} if compiled is None else compiled.event_types
    cls = types.get(name)
    if cls is None:
        takes = ", ".join(sorted(types)) or "none"
        raise CommandError(
            f"kind {row.kind!r} has no row taking event {name!r} (it takes: {takes})"
        )
    try:
        return CONVERTER.structure(data, cls)
    except Exception as exc:  # cattrs raises many types; each means "not its fields"
        why = str(exc)
        if isinstance(exc, cattrs.BaseValidationError):
            why = "; ".join(cattrs.transform_error(exc))
        raise UsageError(f"actions send: --data is not the fields of {name}: {why}") from None


def _describe(result: SendResult, name: str) -> str:
    what = {
        SendStatus.SENT: "sent; a worker takes it",
        SendStatus.DUPLICATE: "already sent with this key; nothing new",
        SendStatus.DROPPED: f"set aside: {result.detail}",
    }.get(result.status, f"{result.status.value}: {result.detail or 'no such action'}")
    return f"{result.id}: {name} (key {result.key}) {what}"
