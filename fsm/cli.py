"""The ``fsm`` command: list and validate kinds, draw them, inspect a database.

Each subcommand is one entry of `COMMANDS` (its help, how it adds its arguments, and its
handler), so later subcommands (``drive``, ``worker``, ``demo``) are added without touching
the dispatch. Errors follow one rule, so scripts can rely on them: bad arguments exit 2 and
runtime problems (a missing kind, an unreadable database, no Graphviz) exit 1, each with a
single ``fsm: error: <reason>`` line on stderr and no traceback.

The command is safe to point at anything: it never puts the current folder on ``sys.path``
(user modules are loaded by `fsm.discover.load_module`, which cannot shadow installed ones),
inspection opens databases read-only, and text read from a database is printed with its
control characters escaped.
"""

from __future__ import annotations

import argparse
import math
import sqlite3
import sys
import warnings
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, NoReturn, TextIO, cast

import attrs
import peewee

from fsm.diagram import (
    BINARY_FORMATS,
    FORMATS,
    Format,
    Overlay,
    action_overlay,
    live_counts,
    render,
)
from fsm.discover import (
    KindClass,
    ServicesMissing,
    discover,
    drivable,
    kinds_in,
    load_module,
    services_for,
)
from fsm.errors import DefinitionError, FsmError, NotAnFsmDatabase
from fsm.failures import one_line as _one_line
from fsm.graph import KindGraph
from fsm.store import RowInfo, Store, open_store
from fsm.validate import KindWarning, validate_kind

PROG = "fsm"


class UsageError(Exception):
    """Bad command-line arguments: exit code 2."""


class CommandError(Exception):
    """The command cannot do what was asked: exit code 1."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage dump on errors replaced by the one-line `UsageError`."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


@attrs.frozen
class Command:
    """A subcommand: its one-line help, its arguments, and its handler (returns exit code)."""

    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# -- helpers ------------------------------------------------------------------------------


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Left-aligned columns, two spaces apart; the last column is not padded."""
    body = [list(headers), *([_one_line(cell) for cell in r] for r in rows)]
    widths = [max(len(r[i]) for r in body) for i in range(len(headers) - 1)]
    lines = [
        "  ".join([*(cell.ljust(w) for cell, w in zip(r, widths, strict=False)), r[-1]]).rstrip()
        for r in body
    ]
    return "\n".join(lines) + "\n"


def _sqlite_path(url: str) -> str | None:
    """The file a SQLite URL names (the forms `fsm.store.open_store` accepts), else None."""
    if url.startswith("sqlite:///"):
        return url[len("sqlite:///") :]
    return None if "://" in url else url


def _open_db(url: str, *, readonly: bool) -> Store:
    """Open an existing database; never create one because of a mistyped path.

    ``readonly`` for inspection: the file is never written (see `Store`), so any file can be
    named; one without fsm's schema is a bad ``--db`` argument (exit 2).
    """
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


def _when(timestamp: float | None) -> str:
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


def _split_target(target: str) -> tuple[str, str | None]:
    """``MODULE[:KIND]`` -> (module, kind); a colon is a separator only before an identifier."""
    head, sep, tail = target.rpartition(":")
    if sep and head and tail.isidentifier():
        return head, tail
    return target, None


# -- fsm kinds ----------------------------------------------------------------------------


def _configure_kinds(p: argparse.ArgumentParser) -> None:
    _add_module_option(p)


def _add_module_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--module",
        "-m",
        action="append",
        default=[],
        metavar="M",
        help="definitions module (dotted name or .py path); repeatable",
    )


def _report_problems(problems: Iterable[str], out: TextIO) -> None:
    for problem in problems:
        out.write(f"{PROG}: warning: {_one_line(problem)}\n")


def _run_kinds(args: argparse.Namespace) -> int:
    found = discover(args.module)
    _report_problems(found.problems, sys.stderr)
    if not found.kinds:
        sys.stdout.write(
            "no kinds found: name a definitions module with --module, or install a package "
            "with `fsm.kinds` entry points\n"
        )
        return 1 if found.problems else 0
    rows = []
    for kind in found.kinds:
        graph = kind.cls.graph()
        defined = f"{kind.location} ({kind.qualname})"
        rows.append([graph.name, str(graph.version), str(len(graph.states)), defined])
    sys.stdout.write(_table(["NAME", "VERSION", "STATES", "DEFINED IN"], rows))
    return 1 if found.problems else 0


# -- fsm validate -------------------------------------------------------------------------


def _configure_validate(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "target",
        metavar="MODULE[:KIND]",
        help="definitions module (dotted name or .py path), optionally one kind in it",
    )


def _run_validate(args: argparse.Namespace) -> int:
    spec, wanted = _split_target(args.target)
    try:
        with warnings.catch_warnings():
            # Class creation warns; validate_kind returns the same warnings, printed below.
            warnings.simplefilter("ignore", KindWarning)
            module = load_module(spec)
    except DefinitionError as exc:
        sys.stdout.write(f"{spec}: invalid: {_one_line(str(exc))}\n")
        return 1
    classes: list[type[KindClass]] = kinds_in(module)
    if wanted is not None:
        classes = [c for c in classes if wanted in (c.name, c.__name__)]
        if not classes:
            names = ", ".join(c.name for c in kinds_in(module)) or "none"
            raise CommandError(f"module {spec!r} has no kind {wanted!r} (its kinds: {names})")
    elif not classes:
        raise CommandError(f"module {spec!r} defines no kinds")
    status = 0
    for cls in classes:
        try:
            found = validate_kind(cls)
        except (DefinitionError, TypeError) as exc:
            sys.stdout.write(f"{cls.name}: invalid: {_one_line(str(exc))}\n")
            status = 1
            continue
        for warning in found:
            sys.stdout.write(f"{cls.name}: warning: {_one_line(str(warning))}\n")
        sys.stdout.write(f"{cls.name}: ok\n")
    return status


# -- fsm diagram --------------------------------------------------------------------------


def _configure_diagram(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", metavar="KIND", help="the kind's name")
    p.add_argument("--format", "-f", choices=FORMATS, default="mermaid", help="output format")
    p.add_argument("--output", "-o", metavar="FILE", help="write here instead of stdout")
    p.add_argument("--db", metavar="URL", help="overlay live data from this database")
    p.add_argument("--action", metavar="ID", help="highlight this action's state (needs --db)")
    _add_module_option(p)


def _overlay(store: Store, graph: KindGraph, action_id: str | None) -> Overlay:
    """The current state of ``action_id``, or else the live actions per state of the kind.

    Counts in states the code does not know (rows of an older version) cannot be drawn;
    they are reported on stderr rather than dropped silently.
    """
    if action_id is not None:
        return action_overlay(store, graph, action_id)
    known = {s.name for s in graph.states}
    counts = live_counts(store, graph.name)
    unknown = [f"{s} ({n})" for s, n in counts.items() if s not in known]
    if unknown:
        _report_problems(
            [
                f"live {graph.name!r} actions in states this code does not have: "
                + ", ".join(unknown)
            ],
            sys.stderr,
        )
    return Overlay(counts={s: n for s, n in counts.items() if s in known})


def _run_diagram(args: argparse.Namespace) -> int:
    fmt = cast(Format, args.format)
    if args.action is not None and args.db is None:
        raise UsageError("--action needs --db (the database to read the action from)")
    if fmt in BINARY_FORMATS and args.output is None:
        raise UsageError(f"--format {fmt} is binary: give --output FILE")
    graph = discover(args.module).find(args.kind).cls.graph()
    overlay = Overlay()
    if args.db is not None:
        store = _open_db(args.db, readonly=True)
        try:
            overlay = _overlay(store, graph, args.action)
        finally:
            store.close()
    data = render(graph, fmt, overlay)
    if args.output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        Path(args.output).write_bytes(data)
    return 0


# -- fsm actions --------------------------------------------------------------------------


def _configure_actions(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", metavar="URL", required=True, help="the database to read")
    p.add_argument("--kind", metavar="K", help="only actions of this kind")


def _run_actions(args: argparse.Namespace) -> int:
    store = _open_db(args.db, readonly=True)
    try:
        rows = [r for r in store.rows() if args.kind is None or r.kind == args.kind]
    finally:
        store.close()
    if not rows:
        sys.stdout.write("no actions\n")
        return 0
    table = [
        [
            r.id,
            r.kind,
            r.state,
            _status(r),
            str(r.attempts),
            _when(r.wake_at),
            f"quarantined: {r.quarantine}" if r.quarantine is not None else r.last_error or "",
        ]
        for r in rows
    ]
    headers = ["ID", "KIND", "STATE", "STATUS", "ATTEMPTS", "WAKE_AT", "ERROR"]
    sys.stdout.write(_table(headers, table))
    return 0


def _status(r: RowInfo) -> str:
    """What an operator needs to know first: set aside, broken (waiting for a fix), or live."""
    if r.quarantine is not None:
        return "quarantined"
    if r.broken:
        return "broken"
    if r.lease_owner is not None:
        return "running"
    return "live"


# -- fsm worker -----------------------------------------------------------------------------


def _positive(kind: type[int] | type[float]) -> Callable[[str], float]:
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


def _configure_worker(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", metavar="URL", required=True, help="sqlite:///PATH or postgresql://")
    _add_module_option(p)
    p.add_argument(
        "--services",
        type=_factory_spec,
        metavar="MODULE:FACTORY",
        help="a callable taking the store and returning the services handed to every step",
    )
    p.add_argument("--concurrency", type=_positive(int), default=8, metavar="N")
    p.add_argument("--lease-ttl", type=_positive(float), default=30.0, metavar="SECONDS")
    p.add_argument("--poll", type=_positive(float), default=0.2, metavar="SECONDS")
    p.add_argument("--json", action="store_true", help="log one JSON object per line")
    p.add_argument(
        "--max-outage",
        type=_seconds_or_inf,
        default=300.0,
        metavar="SECONDS",
        help="exit (code 1) after the database has failed for this long; 0: at the first "
        "failure, inf: never (default 300)",
    )


def _load_factory(spec: tuple[str, str]) -> Callable[[Store], object]:
    module, attr = spec
    factory = getattr(load_module(module), attr, None)
    if not callable(factory):
        raise CommandError(f"--services {module}:{attr} is not a callable")
    return cast(Callable[[Store], object], factory)


def _run_worker(args: argparse.Namespace) -> int:
    from fsm.worker import run_worker

    kinds = drivable(args.module)
    if not kinds:
        raise UsageError(
            "no kinds to drive: name a definitions module with --module, or install a package "
            "with `fsm.kinds` entry points"
        )
    services: object = None
    if args.services is None:
        services = services_for(kinds)  # refuses before any database is opened
    factory = None if args.services is None else _load_factory(args.services)
    store = _open_db(args.db, readonly=False)
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
    )


# -- fsm torture ----------------------------------------------------------------------------


def _configure_torture(p: argparse.ArgumentParser) -> None:
    _add_module_option(p)
    p.add_argument("--quick", action="store_true", help="the short run (a few minutes; CI)")
    p.add_argument("--seed", type=int, default=1, help="seed of the random kills and faults")
    p.add_argument(
        "--kills",
        type=_positive(int),
        default=40,
        metavar="N",
        help="random kills in the soak of the full run",
    )
    p.add_argument(
        "--max-passes",
        type=_positive(int),
        metavar="N",
        help="crash at most the first N passes of each write point (default: every pass)",
    )
    p.add_argument("--workdir", metavar="DIR", help="keep the runs' files here")


def _run_torture(args: argparse.Namespace) -> int:
    from fsm import torture

    scenarios = torture.installed_scenarios()
    for spec in args.module:
        found = torture.scenarios_in(getattr(load_module(spec), "TORTURE", None))
        if not found:
            raise CommandError(f"module {spec!r} has no TORTURE scenario")
        scenarios += found
    if not scenarios:
        raise CommandError(
            "no scenarios: name a module with a TORTURE scenario (--module examples/payout.py) "
            "or install a package with `fsm.torture` entry points"
        )
    plan = (
        torture.Plan.quick(args.seed)
        if args.quick
        else torture.Plan.full(args.seed, kills=int(args.kills), max_passes=args.max_passes)
    )
    workdir = Path(args.workdir) if args.workdir else None
    reports, bad, seconds = torture.run(scenarios, plan, workdir)
    sys.stderr.write("\n" if sys.stderr.isatty() else "")
    text = torture.table(reports, bad, args.seed, seconds)
    sys.stdout.write(text)
    violations = sum(len(r.violations) for r in reports) + len(bad[1])
    return 0 if violations == 0 else 1


# -- dispatch -----------------------------------------------------------------------------

COMMANDS: dict[str, Command] = {
    "kinds": Command("list the kinds found", _configure_kinds, _run_kinds),
    "validate": Command("check a definitions module", _configure_validate, _run_validate),
    "diagram": Command("draw a kind, with live overlays", _configure_diagram, _run_diagram),
    "actions": Command("list live and quarantined actions", _configure_actions, _run_actions),
    "worker": Command("drive due actions until SIGTERM/SIGINT", _configure_worker, _run_worker),
    "torture": Command(
        "crash, fault and bad-input tests, one table", _configure_torture, _run_torture
    ),
}


COMMAND_GROUP = "fsm.commands"
"""Entry points adding subcommands (``name = "module:object"``; the object has ``help``,
``configure(parser)`` and ``run(args)`` like `Command`), so packages above fsm, such as
``definitions`` and its ``demo``, plug in without fsm importing them."""


def all_commands() -> dict[str, Any]:
    """The built-in commands, then those of installed packages (a built-in name wins)."""
    commands: dict[str, Any] = dict(COMMANDS)
    for ep in sorted(entry_points(group=COMMAND_GROUP), key=lambda e: e.name):
        if ep.name not in commands:
            commands[ep.name] = _PluginCommand(ep)
    return commands


class _PluginCommand:
    """A subcommand from an entry point. One that cannot be loaded still shows up, with the
    reason as its help, and fails when run: it never breaks the other commands."""

    def __init__(self, ep: EntryPoint) -> None:
        self.ep = ep
        self.error: str | None = None
        self.command: Any = None
        try:
            self.command = ep.load()
            self.help = str(self.command.help)
        except Exception as exc:
            self.error = f"cannot load command {ep.name!r} ({ep.value}): {exc}"
            self.help = f"unavailable: {exc}"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        if self.command is not None:
            self.command.configure(parser)

    def run(self, args: argparse.Namespace) -> int:
        if self.error is not None:
            raise CommandError(self.error)
        return int(self.command.run(args))


def build_parser(commands: dict[str, Any] | None = None) -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Durable actions as declarative state machines.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in (COMMANDS if commands is None else commands).items():
        command.configure(sub.add_parser(name, help=command.help, description=command.help))
    return parser


NOT_INSTALLED = {
    "demo": "'demo' comes with the bark wallet kinds: pip install -e ./definitions "
    "(from fsm's repository)",
}
"""Commands of fsm's companion distribution ``fsm-bark``: named with how to get them."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``fsm`` command; returns the exit code (the console script exits with it)."""
    try:
        commands = all_commands()
        first = next(iter(sys.argv[1:] if argv is None else argv), None)
        if first in NOT_INSTALLED and first not in commands:
            return _fail(2, NOT_INSTALLED[first])
        args = build_parser(commands).parse_args(argv)
        return int(commands[args.command].run(args))
    except (UsageError, ServicesMissing) as exc:
        return _fail(2, str(exc))
    except (CommandError, FsmError, OSError) as exc:
        return _fail(1, str(exc))
    except (peewee.PeeweeException, sqlite3.Error) as exc:
        return _fail(1, f"database error: {exc}")


def _fail(code: int, message: str) -> int:
    sys.stderr.write(f"{PROG}: error: {_one_line(message)}\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
