"""``fsm actions retry|notify|cancel|stop|unquarantine ID``: the operator's controls.

Each subcommand is one `fsm.Controls` call on the database (opened read-write), and prints one
line saying what it did (``--json``: one JSON object, `fsm.Controlled`'s fields). The
decisions are the library's: a driver holding the action makes the control refuse (or, with
``--wait``, try again with backoff until the driver lets go); nothing is ever written beside
a running step. ``cancel`` reads the action, so it loads the kinds (``--module``, else the
installed ``fsm.kinds`` entry points) like ``fsm worker``; ``unquarantine`` does with
``--module``, to refuse a row the code still cannot read.

Exit codes: 0 done; 1 could not act (busy, no such action, no cancel route, quarantined or
not, a kind not loaded: one line on stderr); 2 bad arguments.
"""

from __future__ import annotations

import argparse
import getpass
import json
import math
import sys
from collections.abc import Callable
from typing import Any

import attrs

from fsm.cli.common import UsageError, add_module_option, open_db
from fsm.discover import drivable
from fsm.executor import Controlled, Controls
from fsm.failures import one_line


def _seconds(text: str) -> float:
    """An argparse type: finite seconds >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be finite seconds >= 0, got {text}")
    return value


def _text(text: str) -> str:
    """An argparse type: text that says something (not blank)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be blank")
    return text


def _login() -> str | None:
    """Who runs the command, for ``--by``'s default (None where the system cannot say)."""
    try:
        return getpass.getuser()
    except Exception:  # no user name in the environment nor in the password database
        return None


def _common(
    p: argparse.ArgumentParser, *, reason_required: bool = False, waits: bool = True
) -> None:
    p.add_argument("id", metavar="ID", help="the action's id")
    # SUPPRESS: ``fsm actions --db URL retry ID`` keeps the URL given before the subcommand.
    p.add_argument("--db", metavar="URL", default=argparse.SUPPRESS, help="the database")
    p.add_argument(
        "--reason",
        type=_text,
        required=reason_required,
        help="why (recorded in the action's history" + (" and cause)" if reason_required else ")"),
    )
    p.add_argument(
        "--by",
        type=_text,
        default=_login(),
        metavar="WHO",
        help="who asks (recorded with it; default: your login name)",
    )
    if waits:
        p.add_argument(
            "--wait",
            type=_seconds,
            default=0.0,
            metavar="SECONDS",
            help="while a driver holds the action, keep trying this long (default 0: refuse)",
        )
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _configure_retry(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument(
        "--reset-attempts",
        action="store_true",
        help="give the action a fresh retry budget (and backoff)",
    )


def _configure_cancel(p: argparse.ArgumentParser) -> None:
    _common(p, reason_required=True)
    add_module_option(p)


def _configure_unquarantine(p: argparse.ArgumentParser) -> None:
    _common(p)
    add_module_option(p)


def _retry(c: Controls, args: argparse.Namespace) -> Controlled:
    return c.retry(
        args.id, reset_attempts=args.reset_attempts, by=args.by, reason=args.reason, wait=args.wait
    )


def _notify(c: Controls, args: argparse.Namespace) -> Controlled:
    return c.notify(args.id, by=args.by, reason=args.reason)


def _cancel(c: Controls, args: argparse.Namespace) -> Controlled:
    return c.cancel(args.id, reason=args.reason, by=args.by, wait=args.wait)


def _stop(c: Controls, args: argparse.Namespace) -> Controlled:
    return c.stop(args.id, by=args.by, reason=args.reason, wait=args.wait)


def _unquarantine(c: Controls, args: argparse.Namespace) -> Controlled:
    return c.unquarantine(args.id, by=args.by, reason=args.reason, wait=args.wait)


@attrs.frozen
class _Control:
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    act: Callable[[Controls, argparse.Namespace], Controlled]
    kinds: str = "none"
    """Which kinds to load: ``none``, ``needed`` (--module, else entry points) or ``named``
    (--module only)."""


CONTROLS: dict[str, _Control] = {
    "retry": _Control("wake a parked or broken action now", _configure_retry, _retry),
    "notify": _Control(
        "mark an action due now (never refused: a driver holding it leaves it due)",
        lambda p: _common(p, waits=False),
        _notify,
    ),
    "cancel": _Control(
        "cancel an action through its kind's cancel route (compensation)",
        _configure_cancel,
        _cancel,
        "needed",
    ),
    "stop": _Control("remove an action without compensation (kept as stopped)", _common, _stop),
    "unquarantine": _Control(
        "put a quarantined action back into service",
        _configure_unquarantine,
        _unquarantine,
        "named",
    ),
}


def register(sub: Any) -> None:
    """Add the controls to ``fsm actions``'s subcommands (``sub``: its subparsers action)."""
    for name, control in CONTROLS.items():
        p = sub.add_parser(name, help=control.help, description=control.help)
        control.configure(p)
        p.set_defaults(handler=run, control=name)


def run(args: argparse.Namespace) -> int:
    control = CONTROLS[args.control]
    url = getattr(args, "db", None)
    if url is None:
        raise UsageError(f"actions {args.control}: the following arguments are required: --db")
    kinds: list[type] = []
    if control.kinds == "needed" or (control.kinds == "named" and args.module):
        kinds = drivable(args.module)
    store = open_db(url, readonly=False)
    try:
        done = control.act(Controls(store, kinds), args)
    finally:
        store.close()
    if args.json:
        sys.stdout.write(json.dumps(attrs.asdict(done)) + "\n")
    else:
        sys.stdout.write(one_line(describe(done)) + "\n")
    return 0


def describe(done: Controlled) -> str:
    """One line for people: what the control did, then what it recorded."""
    where = f"{done.id}: {done.kind} in {done.state}"
    if done.control == "cancel" and done.outcome == "queued":
        what = "being driven: cancel queued, taken at its drive's next step or claim"
    elif done.control == "cancel" and done.to_state is not None:
        what = f"cancelled -> {done.to_state}, due now (a worker runs the compensation)"
    elif done.control == "cancel":
        what = f"cancelled, ended {done.outcome}"
    elif done.control == "stop":
        what = "stopped: removed, resources released"
    elif done.control == "unquarantine":
        what = "back in service, due now"
    elif done.control == "retry":
        what = f"due now (attempts {done.attempts})"
    else:
        what = "due now"
    return f"{where}: {what}; recorded: {done.note}"
