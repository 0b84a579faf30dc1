"""``fsm torture``: every crash, fault and bad-input test, one table (see
`fsm.testing.torture`). Exit code 0 means no violation."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fsm.cli.common import Command, add_module_option, positive
from fsm.testing import torture


def configure(p: argparse.ArgumentParser) -> None:
    add_module_option(p)
    p.add_argument("--quick", action="store_true", help="the short run (a few minutes; CI)")
    p.add_argument("--seed", type=int, default=1, help="seed of the random kills and faults")
    p.add_argument(
        "--kills",
        type=positive(int),
        default=40,
        metavar="N",
        help="random kills in the soak of the full run",
    )
    p.add_argument(
        "--max-passes",
        type=positive(int),
        metavar="N",
        help="crash at most the first N passes of each write point (default: every pass)",
    )
    p.add_argument("--workdir", metavar="DIR", help="keep the runs' files here")


def run(args: argparse.Namespace) -> int:
    scenarios = torture.find_scenarios(args.module)
    plan = (
        torture.Plan.quick(args.seed)
        if args.quick
        else torture.Plan.full(args.seed, kills=int(args.kills), max_passes=args.max_passes)
    )
    workdir = Path(args.workdir) if args.workdir else None
    reports, bad, seconds = torture.run(scenarios, plan, workdir)
    sys.stderr.write("\n" if sys.stderr.isatty() else "")
    sys.stdout.write(torture.table(reports, bad, args.seed, seconds))
    violations = sum(len(r.violations) for r in reports) + len(bad[1])
    return 0 if violations == 0 else 1


COMMAND = Command("crash, fault and bad-input tests, one table", configure, run)
