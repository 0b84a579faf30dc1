"""``fsm kinds``: list the kinds found, with their version, size and where they are defined."""

from __future__ import annotations

import argparse
import sys

from fsm.cli.common import Command, add_module_option, report_problems, table
from fsm.discover import discover


def run(args: argparse.Namespace) -> int:
    found = discover(args.module)
    report_problems(found.problems)
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
    sys.stdout.write(table(["NAME", "VERSION", "STATES", "DEFINED IN"], rows))
    return 1 if found.problems else 0


COMMAND = Command("list the kinds found", add_module_option, run)
