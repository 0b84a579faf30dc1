"""Kill real driver processes at every write point, and at random, then check invariants.

A `Scenario` is what a crash test needs to know about a program: how to lay out a fresh
folder (`setup`), the command line of a driver process that resumes whatever is in the
folder and exits 0 once every action is terminal (`driver`), where its fsm database is
(`database`), and how to check the outside world afterwards (`check`, e.g. a ledger with no
effect applied twice).

`double_drive` and `concurrent` run it with every step driven twice, and with several
drivers at once. `enumerate_crashes` first runs the scenario once with ``FSM_CRASH_TRACE``
to learn how many times each write point is passed, then, for every (point, n) pair,
starts fresh, kills the driver with ``FSM_CRASH=point:n`` (a real SIGKILL from inside the
process), restarts drivers until one exits 0, and checks the invariants. `soak` kills
drivers at random moments instead. All return figures for a report.
"""

from __future__ import annotations

import collections
import os
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs

from fsm.executor import DOUBLE_DRIVE_ENV
from fsm.faults import CRASH_ENV, DB_FAULTS_ENV, DB_FAULTS_TRACE_ENV, TRACE_ENV, all_points
from fsm.store import open_store

Progress = Callable[[str], None]


@attrs.frozen
class Scenario:
    """A program to crash: see the module docstring."""

    name: str
    setup: Callable[[Path], None]
    driver: Callable[[Path], Sequence[str]]
    database: Callable[[Path], str]
    check: Callable[[Path], list[str]]
    env: dict[str, str] = attrs.Factory(dict)


@attrs.define
class CrashReport:
    """Figures of one crash run."""

    scenario: str
    kills: int = 0
    runs: int = 0
    points: set[str] = attrs.Factory(set)
    actions_completed: int = 0
    db_faults: int = 0
    violations: list[str] = attrs.Factory(list)

    def merge(self, other: CrashReport) -> None:
        self.kills += other.kills
        self.runs += other.runs
        self.points |= other.points
        self.actions_completed += other.actions_completed
        self.db_faults += other.db_faults
        self.violations += other.violations


def run_driver(
    scenario: Scenario, folder: Path, extra_env: dict[str, str], timeout: float = 300
) -> int:
    """Run one driver process to its end (or its death); return its exit code."""
    env = {**os.environ, **scenario.env, **extra_env}
    for name in (CRASH_ENV, TRACE_ENV):
        if name not in extra_env:
            env.pop(name, None)
    proc = subprocess.run(
        list(scenario.driver(folder)),
        env=env,
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=timeout,
        check=False,
    )
    return proc.returncode


def finish(scenario: Scenario, folder: Path, report: CrashReport, restarts: int = 8) -> bool:
    """Restart drivers until one exits 0 (every action terminal)."""
    for _ in range(restarts):
        report.runs += 1
        code = run_driver(scenario, folder, {})
        if code == 0:
            return True
        if code == -signal.SIGKILL:
            report.kills += 1
    report.violations.append(f"{scenario.name}: drivers did not finish after {restarts} runs")
    return False


def completed(scenario: Scenario, folder: Path) -> int:
    """How many actions ended, according to the transition log."""
    store = open_store(scenario.database(folder))
    try:
        return sum(1 for t in store.transitions() if t.to_state is None)
    finally:
        store.close()


def trace(scenario: Scenario, workdir: Path) -> collections.Counter[str]:
    """How many times one clean run passes each write point."""
    folder = _fresh(workdir / "trace", scenario)
    trace_file = workdir / "trace.points"
    trace_file.unlink(missing_ok=True)
    code = run_driver(scenario, folder, {TRACE_ENV: str(trace_file)})
    if code != 0:
        raise RuntimeError(f"{scenario.name}: the clean run failed with exit code {code}")
    if not trace_file.exists():
        return collections.Counter()
    return collections.Counter(trace_file.read_text().split())


def enumerate_crashes(
    scenario: Scenario,
    workdir: Path,
    *,
    max_passes: int | None = None,
    points: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> CrashReport:
    """Kill the driver at every (point, n) pair a clean run reaches, up to ``max_passes``."""
    report = CrashReport(scenario.name)
    counts = trace(scenario, workdir)
    chosen = [p for p in (points or all_points()) if counts.get(p)]
    pairs = [(p, n) for p in chosen for n in range(1, min(counts[p], max_passes or 10**9) + 1)]
    for i, (point, n) in enumerate(pairs, 1):
        if progress is not None:
            progress(f"{scenario.name}: crash {i}/{len(pairs)} at {point}:{n}")
        folder = _fresh(workdir / "run", scenario)
        report.runs += 1
        code = run_driver(scenario, folder, {CRASH_ENV: f"{point}:{n}"})
        if code == -signal.SIGKILL:
            report.kills += 1
            report.points.add(point)
        elif code != 0:
            report.violations.append(f"{point}:{n}: driver exited {code} instead of dying")
        if finish(scenario, folder, report):
            report.violations += [f"{point}:{n}: {v}" for v in scenario.check(folder)]
            report.actions_completed += completed(scenario, folder)
    return report


def soak(
    scenario: Scenario,
    workdir: Path,
    *,
    kills: int,
    seed: int,
    db_fault_rate: float = 0.0,
    progress: Progress | None = None,
) -> CrashReport:
    """Kill a driver at random moments ``kills`` times, then finish and check.

    The moments are drawn from ``seed`` over the length of a clean run; a driver that
    finishes before its moment just exits 0 and the next one starts on the finished state.
    ``db_fault_rate`` also makes the drivers' database calls fail at that rate.
    """
    rng = random.Random(seed)
    report = CrashReport(scenario.name)
    folder = _fresh(workdir / "clean", scenario)
    t0 = time.monotonic()
    if run_driver(scenario, folder, {}) != 0:
        raise RuntimeError(f"{scenario.name}: the clean run failed")
    clean_seconds = time.monotonic() - t0
    folder = _fresh(workdir / "soak", scenario)
    env = {**os.environ, **scenario.env}
    faults_trace = workdir / "db-faults.trace"
    faults_trace.unlink(missing_ok=True)
    if db_fault_rate:
        env[DB_FAULTS_ENV] = f"{db_fault_rate}:{seed}"
        env[DB_FAULTS_TRACE_ENV] = str(faults_trace)
    for k in range(kills):
        if progress is not None:
            progress(f"{scenario.name}: random kill {k + 1}/{kills}")
        proc = subprocess.Popen(
            list(scenario.driver(folder)),
            env=env,
            cwd=folder,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        report.runs += 1
        try:
            proc.wait(timeout=rng.uniform(0.05, max(0.1, clean_seconds)))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            report.kills += 1
    if faults_trace.exists():
        report.db_faults += len(faults_trace.read_text().split())
    if finish(scenario, folder, report):
        report.violations += scenario.check(folder)
        report.actions_completed += completed(scenario, folder)
    return report


def double_drive(scenario: Scenario, workdir: Path) -> CrashReport:
    """Run the scenario with every step driven twice (``FSM_DOUBLE_DRIVE=1``), then check."""
    report = CrashReport(scenario.name)
    folder = _fresh(workdir / "double", scenario)
    report.runs += 1
    code = run_driver(scenario, folder, {DOUBLE_DRIVE_ENV: "1"})
    if code != 0:
        report.violations.append(f"double-drive run exited {code}: a step is not idempotent")
    elif finish(scenario, folder, report):
        report.violations += scenario.check(folder)
        report.actions_completed += completed(scenario, folder)
    return report


def concurrent(scenario: Scenario, workdir: Path, drivers: int = 3) -> CrashReport:
    """Several drivers resume the same folder at once; nothing may be lost or done twice.

    A first driver is killed at its first checkpoint, so the folder holds live actions (and
    whatever a driver sets up on its first run) before the concurrent ones start.
    """
    report = CrashReport(scenario.name)
    folder = _fresh(workdir / "concurrent", scenario)
    report.runs += 1
    if run_driver(scenario, folder, {CRASH_ENV: "checkpoint.after:1"}) == -signal.SIGKILL:
        report.kills += 1
    env = {**os.environ, **scenario.env}
    procs = [
        subprocess.Popen(
            list(scenario.driver(folder)),
            env=env,
            cwd=folder,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(drivers)
    ]
    report.runs += drivers
    for proc in procs:
        proc.wait(timeout=300)
    if finish(scenario, folder, report):
        report.violations += scenario.check(folder)
        report.actions_completed += completed(scenario, folder)
    return report


def _fresh(folder: Path, scenario: Scenario) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    scenario.setup(folder)
    return folder
