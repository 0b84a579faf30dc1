"""``fsm validate MODULE[:KIND]``: one ``ok``, ``warning`` or ``invalid`` line per kind."""

from __future__ import annotations

import argparse
import sys
import warnings

from fsm.cli.common import Command
from fsm.discover import load_module, select_kinds, split_target
from fsm.errors import DefinitionError
from fsm.failures import one_line
from fsm.validate import KindWarning, validate_kind


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "target",
        metavar="MODULE[:KIND]",
        help="definitions module (dotted name or .py path), optionally one kind in it",
    )


def run(args: argparse.Namespace) -> int:
    spec, wanted = split_target(args.target)
    try:
        with warnings.catch_warnings():
            # Class creation warns; validate_kind returns the same warnings, printed below.
            warnings.simplefilter("ignore", KindWarning)
            module = load_module(spec)
    except DefinitionError as exc:
        sys.stdout.write(f"{spec}: invalid: {one_line(str(exc))}\n")
        return 1
    status = 0
    for cls in select_kinds(module, spec, wanted):
        try:
            found = validate_kind(cls)
        except (DefinitionError, TypeError) as exc:
            sys.stdout.write(f"{cls.name}: invalid: {one_line(str(exc))}\n")
            status = 1
            continue
        for warning in found:
            sys.stdout.write(f"{cls.name}: warning: {one_line(str(warning))}\n")
        sys.stdout.write(f"{cls.name}: ok\n")
    return status


COMMAND = Command("check a definitions module", configure, run)
