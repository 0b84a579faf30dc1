"""``fsm worker --db URL``: drive due actions until SIGTERM/SIGINT (see `fsm.worker`).

Every refusal happens before the worker starts: no kinds to drive, kinds whose services
nothing builds (both exit 2), a ``--services`` factory that is not one or fails (exit 1).
"""

from __future__ import annotations

import argparse

from fsm.cli.common import Command, UsageError, add_module_option, duration, open_db, positive
from fsm.discover import drivable
from fsm.errors import FsmError
from fsm.executor.executor import DEFAULT_REDELIVERY_WINDOW
from fsm.worker import run_worker
from fsm.worker.retention import check_retention
from fsm.worker.services import load_factory, services_for


def _seconds_or_inf(text: str) -> float:
    """A duration in seconds, ``0`` or more; ``inf`` for no limit."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0:  # also refuses NaN
        raise argparse.ArgumentTypeError(f"must be >= 0 (or inf), got {text}")
    return value


def _factory_spec(text: str) -> tuple[str, str]:
    """An argparse type: ``MODULE:FACTORY`` -> (module, attribute)."""
    module, sep, attr = text.rpartition(":")
    if not sep or not module or not attr.isidentifier():
        raise argparse.ArgumentTypeError(f"must be MODULE:FACTORY, got {text!r}")
    return module, attr


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", metavar="URL", required=True, help="sqlite:///PATH or postgresql://")
    add_module_option(p)
    p.add_argument(
        "--services",
        type=_factory_spec,
        metavar="MODULE:FACTORY",
        help="a callable taking the store and returning the services handed to every step",
    )
    p.add_argument("--concurrency", type=positive(int), default=8, metavar="N")
    p.add_argument("--lease-ttl", type=positive(float), default=30.0, metavar="SECONDS")
    p.add_argument("--poll", type=positive(float), default=0.2, metavar="SECONDS")
    p.add_argument("--json", action="store_true", help="log one JSON object per line")
    p.add_argument(
        "--max-outage",
        type=_seconds_or_inf,
        default=300.0,
        metavar="SECONDS",
        help="exit (code 1) after the database has failed for this long; 0: at the first "
        "failure, inf: never (default 300)",
    )
    p.add_argument(
        "--retention",
        type=duration,
        metavar="DURATION",
        help="prune history (log rows, kept outcomes) older than this, at start and every "
        "hour: 30d, 12h; at least the redelivery window (7d). Default: keep everything",
    )


def run(args: argparse.Namespace) -> int:
    try:
        check_retention(args.retention, DEFAULT_REDELIVERY_WINDOW)
    except ValueError as exc:
        raise UsageError(f"--retention: {exc}") from None
    kinds = drivable(args.module)
    if not kinds:
        raise UsageError(
            "no kinds to drive: name a definitions module with --module, or install a package "
            "with `fsm.kinds` entry points"
        )
    services: object = None
    if args.services is None:
        services = services_for(kinds)  # refuses before any database is opened
    factory = None if args.services is None else load_factory(*args.services)
    store = open_db(args.db, readonly=False)
    store.lease_ttl = args.lease_ttl
    if factory is not None:
        try:
            services = services_for(
                kinds, lambda: factory(store), factory_name=":".join(args.services)
            )
        except FsmError:
            store.close()
            raise
    return run_worker(
        store,
        services,
        kinds,
        concurrency=args.concurrency,
        poll=args.poll,
        json_logs=args.json,
        max_outage=args.max_outage,
        retention=args.retention,
    )


COMMAND = Command("drive due actions until SIGTERM/SIGINT", configure, run)
