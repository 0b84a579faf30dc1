"""``fsm worker --db URL``: drive due actions until SIGTERM/SIGINT (see `fsm.worker`).

Every refusal happens before the worker starts: no kinds to drive, kinds whose services
nothing builds, a ``--metrics-port`` that is not a port (all exit 2), a ``--services``
factory that is not one or fails, a metrics port that is in use or not ours to open, or
OpenTelemetry missing for ``--metrics-port`` (exit 1).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING

from fsm.cli.common import (
    Command,
    CommandError,
    UsageError,
    add_module_option,
    duration,
    open_db,
    positive,
)
from fsm.discover import drivable
from fsm.errors import FsmError
from fsm.executor.executor import DEFAULT_REDELIVERY_WINDOW
from fsm.store import Store
from fsm.worker import run_worker
from fsm.worker.retention import check_retention
from fsm.worker.services import load_factory, services_for

if TYPE_CHECKING:
    from fsm.telemetry.metrics import Metrics


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


def _port(text: str) -> int:
    """An argparse type: a TCP port, 0 (any free port) to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port from 0 to 65535, got {text}")
    return value


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
    p.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="text: one line per event; json: one JSON object per line, with the action, "
        "kind, state and step key of every event about an action (default text)",
    )
    p.add_argument(
        "--json",
        dest="log_format",
        action="store_const",
        const="json",
        help="the same as --log-format json",
    )
    p.add_argument(
        "--metrics-port",
        type=_port,
        metavar="N",
        help="serve Prometheus metrics on this port (0: any free port, logged); needs "
        "pip install 'fsm[otel]'",
    )
    p.add_argument(
        "--metrics-addr",
        default="0.0.0.0",
        metavar="ADDR",
        help="the address the metrics are served on (default 0.0.0.0: every interface)",
    )
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
    telemetry = None
    if args.metrics_port is not None:
        try:
            telemetry = _telemetry(store, args.metrics_port, args.metrics_addr)
        except BaseException:
            store.close()
            raise
    try:
        return run_worker(
            store,
            services,
            kinds,
            concurrency=args.concurrency,
            poll=args.poll,
            json_logs=args.log_format == "json",
            max_outage=args.max_outage,
            retention=args.retention,
            observer=None if telemetry is None else telemetry[0],
            serving=None if telemetry is None else telemetry[1],
        )
    finally:
        if telemetry is not None:
            telemetry[2]()


def _telemetry(store: Store, port: int, addr: str) -> tuple[Metrics, str, Callable[[], None]]:
    """The worker's metrics: its observer, where they are served, and how to stop serving.

    prometheus-client is imported here only, when ``--metrics-port`` asks for it.
    """
    try:
        from fsm.telemetry.metrics import Metrics
        from fsm.telemetry.prometheus import serve
    except ImportError as exc:
        raise CommandError(
            f"--metrics-port needs prometheus-client ({exc.name} is missing): "
            "pip install 'fsm[otel]'"
        ) from None
    metrics = Metrics(store)
    endpoint = serve(metrics, port, addr)

    def stop() -> None:
        endpoint.close()
        metrics.close()

    return metrics, f"http://{addr}:{endpoint.port}/metrics", stop


COMMAND = Command("drive due actions until SIGTERM/SIGINT", configure, run)
