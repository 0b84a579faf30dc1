"""``fsm console --db URL``: serve the web console (`fsm.console`) until interrupted.

The console is the optional extra ``fsm[console]``; without it the command says what to
install, in one line. It listens on 127.0.0.1 unless ``--host`` says otherwise (a warning
then says who can reach it), reads the database read-only unless ``--allow-control``, and
then prints the token every control must carry. The kinds come from ``--module`` and the
installed ``fsm.kinds`` entry points, as for ``fsm diagram``: an action of a kind not
loaded is still listed and shown, without its diagram or a cancel.

Exit codes: 0 stopped (Ctrl-C, SIGTERM); 1 cannot serve (the port is taken, the database
cannot be read, the extra is missing); 2 bad arguments.
"""

from __future__ import annotations

import argparse
import sys

from fsm.cli.common import (
    Command,
    CommandError,
    UsageError,
    add_module_option,
    open_db,
    positive,
    report_problems,
)
from fsm.discover import discover

INSTALL = "fsm console needs the console extra: pip install 'fsm[console]'"


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0..65535 (0: any free one), got {port}")
    return port


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", metavar="URL", required=True, help="the database")
    add_module_option(p)
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only)",
    )
    p.add_argument(
        "--port", type=_port, default=8080, help="port to listen on (default 8080; 0: any)"
    )
    p.add_argument(
        "--allow-control",
        action="store_true",
        help="serve the controls (retry, notify, cancel, stop, unquarantine), each request "
        "carrying the token printed at start; opens the database read-write",
    )
    p.add_argument(
        "--poll",
        type=positive(float),
        default=2.0,
        metavar="SECONDS",
        help="how often an open kind page reads its counts again (default 2)",
    )
    p.add_argument(
        "--late",
        type=positive(float),
        default=60.0,
        metavar="SECONDS",
        help="a state whose claimable actions waited longer is painted late (default 60)",
    )


def run(args: argparse.Namespace) -> int:
    try:
        from fsm.console import Backend, Settings, is_loopback
        from fsm.console.serve import serve
    except ImportError as exc:
        raise CommandError(f"{INSTALL} ({exc})") from None
    if not args.host.strip() or any(c.isspace() for c in args.host):
        raise UsageError(f"--host: not an address: {args.host!r}")
    found = discover(args.module)
    report_problems(found.problems)
    if not is_loopback(args.host):
        report_problems(
            [
                f"serving on {args.host}, not only this machine: whoever reaches it reads "
                "every action"
                + (" (and, with the token, can act on them)" if args.allow_control else "")
            ]
        )
    settings = Settings(
        host=args.host,
        port=args.port,
        allow_control=args.allow_control,
        poll=args.poll,
        late=args.late,
    )
    store = open_db(args.db, readonly=not args.allow_control)
    try:
        kinds = [k.cls for k in found.kinds]
        # pages poll every --poll seconds: one census serves them all for half of it
        backend = Backend(store, kinds, controls=args.allow_control, fresh=args.poll / 2)
    except (TypeError, ValueError) as exc:
        store.close()
        raise CommandError(f"cannot load these kinds: {exc}") from None
    try:
        serve(backend, settings, _say)
    except OSError as exc:
        raise CommandError(f"cannot listen on {args.host}:{args.port}: {exc}") from None
    finally:
        backend.close()
    return 0


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


COMMAND = Command("serve a web page to watch and operate live actions", configure, run)
