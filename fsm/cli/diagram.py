"""``fsm diagram KIND``: draw a kind in one of the formats of `fsm.diagram`, with overlays."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import cast

from fsm.cli.common import Command, UsageError, add_module_option, open_db, report_problems
from fsm.diagram import BINARY_FORMATS, FORMATS, NO_OVERLAY, Format, read_overlay, render
from fsm.discover import discover


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", metavar="KIND", help="the kind's name")
    p.add_argument("--format", "-f", choices=FORMATS, default="mermaid", help="output format")
    p.add_argument("--output", "-o", metavar="FILE", help="write here instead of stdout")
    p.add_argument("--db", metavar="URL", help="overlay live data from this database")
    p.add_argument("--action", metavar="ID", help="highlight this action's state (needs --db)")
    add_module_option(p)


def run(args: argparse.Namespace) -> int:
    fmt = cast(Format, args.format)
    if args.action is not None and args.db is None:
        raise UsageError("--action needs --db (the database to read the action from)")
    if fmt in BINARY_FORMATS and args.output is None:
        raise UsageError(f"--format {fmt} is binary: give --output FILE")
    graph = discover(args.module).find(args.kind).cls.graph()
    overlay = NO_OVERLAY
    if args.db is not None:
        store = open_db(args.db, readonly=True)
        try:
            overlay, problems = read_overlay(store, graph, args.action)
        finally:
            store.close()
        report_problems(problems)
    data = render(graph, fmt, overlay)
    if args.output is not None:
        Path(args.output).write_bytes(data)
    elif hasattr(sys.stdout, "buffer"):
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:  # a text stream handed to `fsm.cli.main` (the text formats only reach here)
        sys.stdout.write(data.decode())
    return 0


COMMAND = Command("draw a kind, with live overlays", configure, run)
