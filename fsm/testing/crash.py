"""Kill real driver processes at every write point, and at random, then check invariants.

A `Scenario` is what a crash test needs to know about a program: how to lay out a fresh
folder (`setup`), the command line of a driver process that resumes whatever is in the
folder and exits 0 once every action is terminal (`driver`), where its fsm database is
(`database`), and how to check the outside world afterwards (`check`, e.g. a ledger with no
effect applied twice). ``after_kill``, if given, checks the folder as each kill left it,
before any driver resumes it: what a finished run no longer shows (an action's inbox, its
pending events and their count, go with its end) is checked where the crash fell.

`double_drive` and `concurrent` run it with every step driven twice, and with several
drivers at once. `enumerate_crashes` first runs the scenario once with ``FSM_CRASH_TRACE``
to learn how many times each write point is passed, then, for every (point, n) pair,
starts fresh, kills the driver with ``FSM_CRASH=point:n`` (a real SIGKILL from inside the
process), restarts drivers until one exits 0, and checks the invariants. `soak` kills
drivers at random moments instead. All return figures for a report.

Only a kill that interrupted live work counts as one (`CrashReport.kills`): when the driver
died, the store still held a live action (not quarantined) *and* the driver had already
changed the store (it claimed, started, stepped or ended an action: between its start and
its death a live row's state, attempts, wake-up time or lease owner changed, a row appeared
or went, or the transition log grew; see `Work`). A driver killed while it was still
starting up, or after it had ended everything, interrupted nothing: that kill is an *idle*
kill (`CrashReport.idle_kills`) and proves nothing about crash safety.
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
from fsm.store.hooks import CRASH_ENV, DB_FAULTS_ENV, DB_FAULTS_TRACE_ENV, TRACE_ENV
from fsm.testing.faults import all_points
from fsm.testing.work import Work, completed, work

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
    after_kill: Callable[[Path], list[str]] | None = None


@attrs.define
class CrashReport:
    """Figures of one crash run."""

    scenario: str
    kills: int = 0
    idle_kills: int = 0
    runs: int = 0
    points: set[str] = attrs.Factory(set)
    actions_completed: int = 0
    db_faults: int = 0
    violations: list[str] = attrs.Factory(list)

    def merge(self, other: CrashReport) -> None:
        self.kills += other.kills
        self.idle_kills += other.idle_kills
        self.runs += other.runs
        self.points |= other.points
        self.actions_completed += other.actions_completed
        self.db_faults += other.db_faults
        self.violations += other.violations


def count_kill(report: CrashReport, before: Work, after: Work) -> bool:
    """Count one SIGKILL as a kill (it interrupted live work) or as an idle kill."""
    if after.interrupted(before):
        report.kills += 1
        return True
    report.idle_kills += 1
    return False


def killed(
    scenario: Scenario,
    folder: Path,
    report: CrashReport,
    before: Work,
    where: str,
    after: Work | None = None,
) -> bool:
    """A driver on ``folder`` died by SIGKILL: count the kill (`count_kill`; ``after``: the
    store as it left it, if already read) and run the scenario's ``after_kill`` checks on
    what it left (``where`` prefixes their lines)."""
    after = work(scenario.database(folder)) if after is None else after
    interrupted = count_kill(report, before, after)
    if scenario.after_kill is not None:
        report.violations += [f"{where}: {v}" for v in scenario.after_kill(folder)]
    return interrupted


def run_driver(
    scenario: Scenario, folder: Path, extra_env: dict[str, str], timeout: float = 300
) -> int:
    """Run one driver process to its end (or its death); return its exit code."""
    env = {**os.environ, **scenario.env, **extra_env}
    for name in (CRASH_ENV, TRACE_ENV):
        if name not in extra_env:
            env.pop(name, None)
    with _spawn(scenario, folder, env) as proc:
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise


def finish(scenario: Scenario, folder: Path, report: CrashReport, restarts: int = 8) -> bool:
    """Restart drivers until one exits 0 (every action terminal)."""
    for _ in range(restarts):
        report.runs += 1
        before = work(scenario.database(folder))
        code = run_driver(scenario, folder, {})
        if code == 0:
            return True
        if code == -signal.SIGKILL:
            killed(scenario, folder, report, before, "after a kill while finishing")
    report.violations.append(f"{scenario.name}: drivers did not finish after {restarts} runs")
    return False


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
        before = work(scenario.database(folder))
        code = run_driver(scenario, folder, {CRASH_ENV: f"{point}:{n}"})
        if code == -signal.SIGKILL:
            if killed(scenario, folder, report, before, f"killed at {point}:{n}"):
                report.points.add(point)
        elif code != 0:
            report.violations.append(f"{point}:{n}: driver exited {code} instead of dying")
        if finish(scenario, folder, report):
            report.violations += [f"{point}:{n}: {v}" for v in scenario.check(folder)]
            report.actions_completed += completed(scenario.database(folder))
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
    """Kill drivers at random moments until ``kills`` kills interrupted live work; check.

    The moments are drawn from ``seed`` over the stretch of a clean run between its first
    and its last write point (`_work_window`), so they fall on work; after a kill that came
    before the driver touched the store they move later. A driver that ends
    every action before its moment exits 0: that folder is checked and the next driver
    starts a new round on a fresh folder, so the kills keep landing on live work. A kill
    that interrupted nothing counts as an idle kill (see the module docstring); at most
    ``4 * kills`` drivers are started, so a program too quick to kill still ends.
    ``db_fault_rate`` also makes the drivers' database calls fail at that rate, each
    driver with its own draw; the soak goes on (within the same bound) until some
    statement has failed.
    """
    rng = random.Random(seed)
    report = CrashReport(scenario.name)
    env = {**os.environ, **scenario.env}
    faults_trace = workdir / "db-faults.trace"
    faults_trace.unlink(missing_ok=True)
    faults = {DB_FAULTS_ENV: f"{db_fault_rate}:{seed}"} if db_fault_rate else {}
    # The window is measured under the same faults: their retries and backoffs move the
    # first write later than a clean run's, and kills aimed by a clean run would land before
    # it, on no work, every time on a slow machine.
    first, last = _work_window(scenario, workdir / "clean", faults)
    window = max(last - first, 0.01)
    if db_fault_rate:
        faults[DB_FAULTS_TRACE_ENV] = str(faults_trace)
    rounds, lag = 0, 0.0
    folder = _fresh(workdir / "soak-0", scenario)
    unfinished = False

    def more() -> bool:
        """Kills short of ``kills``, or faults armed and none met yet (every driver was
        killed before its first failing statement: the soak would have proved nothing)."""
        no_fault = bool(db_fault_rate) and not faults_trace.exists()
        return report.kills < kills or no_fault

    while more() and report.runs < 4 * kills:
        if progress is not None:
            progress(
                f"{scenario.name}: random kill {report.kills + 1}/{kills} "
                f"(driver {report.runs + 1}, {report.idle_kills} idle kills)"
            )
        moment = lag + rng.uniform(first, first + window)
        if db_fault_rate:  # each driver its own draw: the faults fall on other statements
            faults[DB_FAULTS_ENV] = f"{db_fault_rate}:{seed + report.runs}"
        code, untouched = _kill_at(scenario, folder, {**env, **faults}, moment, report)
        # A driver killed before it touched the store started slower than the clean run
        # did (a busy machine): aim later, and drift back once kills land again.
        lag = lag + window if untouched else max(0.0, lag - window / 2)
        unfinished = code != 0
        if not unfinished:
            _check_done(scenario, folder, report)
            rounds += 1
            folder = _fresh(workdir / f"soak-{rounds}", scenario)
    if unfinished and finish(scenario, folder, report):
        _check_done(scenario, folder, report)
    if faults_trace.exists():
        report.db_faults += len(faults_trace.read_text().split())
    return report


def _work_window(
    scenario: Scenario, folder: Path, faults: dict[str, str], timeout: float = 300
) -> tuple[float, float]:
    """When a run from a fresh folder, killed by nothing (``faults``: the database faults
    the soak arms, if any), passes its first and last write points.

    Seconds after the driver's start, read off the growth of its ``FSM_CRASH_TRACE`` file:
    before the first pass the driver is still starting up, after the last it has nothing
    left to do, and a kill in either stretch interrupts no work.
    """
    folder = _fresh(folder, scenario)
    trace_file = folder.parent / f"{folder.name}.points"
    trace_file.unlink(missing_ok=True)
    env = {**os.environ, **scenario.env, **faults, TRACE_ENV: str(trace_file)}
    env.pop(CRASH_ENV, None)
    t0 = time.monotonic()
    proc = _spawn(scenario, folder, env)
    size, first, last = 0, 0.0, 0.0
    while proc.poll() is None:
        now = time.monotonic() - t0
        if now > timeout:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"{scenario.name}: the clean run took over {timeout:.0f} s")
        grown = trace_file.stat().st_size if trace_file.exists() else 0
        if grown != size:
            size, last = grown, now
            first = first or now
        time.sleep(0.002)
    if proc.returncode != 0 and not faults:  # under faults a run may give up; it timed work
        raise RuntimeError(f"{scenario.name}: the clean run failed")
    end = time.monotonic() - t0
    return (first, last) if size else (0.05, end)


def _kill_at(
    scenario: Scenario, folder: Path, env: dict[str, str], moment: float, report: CrashReport
) -> tuple[int, bool]:
    """Run one driver, SIGKILL it after ``moment`` seconds unless it ended.

    Returns its exit code, and whether it was killed before it changed anything.
    """
    before = work(scenario.database(folder))
    report.runs += 1
    proc = _spawn(scenario, folder, env)
    try:
        return proc.wait(timeout=moment), False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        code = proc.wait()
    if code != -signal.SIGKILL:  # it exited just before the signal
        return code, False
    after = work(scenario.database(folder))
    killed(scenario, folder, report, before, f"killed after {moment:.3f} s", after)
    return code, after == before


def _check_done(scenario: Scenario, folder: Path, report: CrashReport) -> None:
    """A folder whose driver exited 0: the scenario's checks and the actions it completed."""
    report.violations += scenario.check(folder)
    report.actions_completed += completed(scenario.database(folder))


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
        report.actions_completed += completed(scenario.database(folder))
    return report


def concurrent(scenario: Scenario, workdir: Path, drivers: int = 3) -> CrashReport:
    """Several drivers resume the same folder at once; nothing may be lost or done twice.

    A first driver is killed at its first checkpoint, so the folder holds live actions (and
    whatever a driver sets up on its first run) before the concurrent ones start.
    """
    report = CrashReport(scenario.name)
    folder = _fresh(workdir / "concurrent", scenario)
    report.runs += 1
    before = work(scenario.database(folder))
    if run_driver(scenario, folder, {CRASH_ENV: "checkpoint.after:1"}) == -signal.SIGKILL:
        killed(scenario, folder, report, before, "killed at checkpoint.after:1")
    env = {**os.environ, **scenario.env}
    procs = [_spawn(scenario, folder, env) for _ in range(drivers)]
    report.runs += drivers
    for proc in procs:
        proc.wait(timeout=300)
    if finish(scenario, folder, report):
        report.violations += scenario.check(folder)
        report.actions_completed += completed(scenario.database(folder))
    return report


def _spawn(scenario: Scenario, folder: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start one driver process on ``folder``, its output discarded."""
    return subprocess.Popen(
        list(scenario.driver(folder)),
        env=env,
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _fresh(folder: Path, scenario: Scenario) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    scenario.setup(folder)
    return folder
