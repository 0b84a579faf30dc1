"""What ``fsm torture`` runs: every crash, fault and bad-input test on the scenarios found.

Scenarios come from the ``fsm.torture`` entry-point group (an installed package's kinds, such
as the bark wallet demo) and from ``--module`` files or modules with a ``TORTURE`` attribute
(a `fsm.testing.Scenario` or a list of them). For each: every (write point, n) crash, a
random-kill soak with database faults switched on, a double-drive run and a run with three
concurrent drivers; then the bad-input suite once. ``--quick`` bounds the crash enumeration
to the first two passes of each point and the soak to a few kills. A kill counts only when it
interrupted live work (see `fsm.testing.crash`); the others are shown as idle kills.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs

from fsm import plugins
from fsm.discover import DiscoveryError, load_module
from fsm.testing.badinput import try_bad_inputs
from fsm.testing.crash import (
    CrashReport,
    Scenario,
    concurrent,
    double_drive,
    enumerate_crashes,
    soak,
)


@attrs.frozen
class Plan:
    """How hard to push: crash passes per point, random kills, database fault rate."""

    max_passes: int | None
    kills: int
    db_fault_rate: float
    seed: int

    @classmethod
    def quick(cls, seed: int) -> Plan:
        return cls(max_passes=2, kills=4, db_fault_rate=0.05, seed=seed)

    @classmethod
    def full(cls, seed: int, kills: int = 40, max_passes: int | None = None) -> Plan:
        return cls(max_passes=max_passes, kills=kills, db_fault_rate=0.05, seed=seed)


def scenarios_in(obj: Any) -> list[Scenario]:
    """A `Scenario`, or an iterable of them, as a list (anything else: empty)."""
    if isinstance(obj, Scenario):
        return [obj]
    if isinstance(obj, Iterable) and not isinstance(obj, str | bytes):
        return [s for s in obj if isinstance(s, Scenario)]
    return []


def installed_scenarios() -> list[Scenario]:
    """The scenarios of the ``fsm.torture`` entry points; one that fails to load raises."""
    found: list[Scenario] = []
    for plugin in plugins.load_group(plugins.TORTURE):
        if plugin.error is not None:
            raise plugin.error
        found += scenarios_in(plugin.loaded)
    return found


def find_scenarios(modules: Iterable[str]) -> list[Scenario]:
    """The installed scenarios, then the ``TORTURE`` of each module named; a
    `DiscoveryError` for a module without one, or when there is nothing to torture."""
    scenarios = installed_scenarios()
    for spec in modules:
        found = scenarios_in(getattr(load_module(spec), "TORTURE", None))
        if not found:
            raise DiscoveryError(f"module {spec!r} has no TORTURE scenario")
        scenarios += found
    if not scenarios:
        raise DiscoveryError(
            "no scenarios: name a module with a TORTURE scenario (--module examples/payout.py) "
            "or install a package with `fsm.torture` entry points"
        )
    return scenarios


def run(
    scenarios: Sequence[Scenario], plan: Plan, workdir: Path | None = None
) -> tuple[list[CrashReport], tuple[int, list[str]], float]:
    """Torture every scenario; returns per-scenario reports, the bad-input result, seconds."""
    t0 = time.monotonic()
    reports = []
    with tempfile.TemporaryDirectory(prefix="fsm-torture-") as tmp:
        root = Path(workdir or tmp)
        for scenario in scenarios:
            folder = root / scenario.name
            report = enumerate_crashes(
                scenario, folder / "crash", max_passes=plan.max_passes, progress=_progress
            )
            report.merge(
                soak(
                    scenario,
                    folder / "soak",
                    kills=plan.kills,
                    seed=plan.seed,
                    db_fault_rate=plan.db_fault_rate,
                    progress=_progress,
                )
            )
            _progress(f"{scenario.name}: double drive and concurrent drivers")
            report.merge(double_drive(scenario, folder / "double"))
            report.merge(concurrent(scenario, folder / "concurrent"))
            reports.append(report)
        _progress("bad inputs")
        quiet = logging.getLogger("fsm")
        level = quiet.level
        quiet.setLevel(logging.CRITICAL)
        try:
            bad = try_bad_inputs()
        finally:
            quiet.setLevel(level)
    return reports, bad, time.monotonic() - t0


def table(
    reports: Sequence[CrashReport], bad: tuple[int, list[str]], seed: int, seconds: float
) -> str:
    """The one table ``fsm torture`` prints.

    *kills survived* counts only kills that interrupted live work; *idle kills* the others
    (the driver was still starting, or had nothing left to do): see `fsm.testing.crash`.
    """
    header = (
        "scenario",
        "kills survived",
        "idle kills",
        "crash points",
        "db faults",
        "bad inputs",
        "actions completed",
        "violations",
    )
    rows = [
        (
            r.scenario,
            str(r.kills),
            str(r.idle_kills),
            str(len(r.points)),
            str(r.db_faults),
            "-",
            str(r.actions_completed),
            str(len(r.violations)),
        )
        for r in reports
    ]
    rows.append(("bad input suite", "-", "-", "-", "-", str(bad[0]), "-", str(len(bad[1]))))
    total_violations = sum(len(r.violations) for r in reports) + len(bad[1])
    rows.append(
        (
            "total",
            str(sum(r.kills for r in reports)),
            str(sum(r.idle_kills for r in reports)),
            str(len(set().union(*(r.points for r in reports))) if reports else "0"),
            str(sum(r.db_faults for r in reports)),
            str(bad[0]),
            str(sum(r.actions_completed for r in reports)),
            str(total_violations),
        )
    )
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
        for row in (header, *rows)
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    problems = [v for r in reports for v in r.violations] + bad[1]
    lines.append(f"seed {seed}, {seconds:.0f} s")
    lines += [f"violation: {p}" for p in problems]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def _progress(message: str) -> None:
    if sys.stderr.isatty():
        sys.stderr.write(f"\r\x1b[K{message}")
    else:
        sys.stderr.write(message + "\n")
    sys.stderr.flush()
