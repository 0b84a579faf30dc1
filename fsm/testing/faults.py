"""Test hooks for the store: crash points, database faults, "kill after N commits".

Crash-safety is only believable if it is tested by killing real processes at every place the
framework writes. The store names its writes (`fsm.store.WRITE_POINTS`), each passed in two
phases: ``<name>.before`` (the process dies before the write: it is lost) and
``<name>.after`` (it dies right after the write committed, before using it). Setting
``FSM_CRASH=checkpoint.after:3`` in a process's environment makes it SIGKILL itself at the
third pass of that point; `fsm.testing` loops over every (point, n) pair.

`DatabaseFaults` makes the store's statements fail with the database's own errors (locked,
disk I/O, connection lost) at a seeded rate, to show every action still ends correctly.

Each tool is a `StoreHooks` (`CrashPlan.hooks`, `DatabaseFaults.hooks`, `kill_after_commits`)
given to a store (``Store(..., hooks=...)``), or armed by the environment: importing this
module makes `hooks_from_env` what every store made without explicit hooks asks.

These are test tools that act through the environment, so a variable left set in production
would kill or fail a real process. Whenever one arms itself it logs one WARNING naming the
variable and its value (`warn_armed`), so it can never act without a word.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import sqlite3
from collections.abc import Sequence

import attrs

from fsm.store.hooks import (
    CRASH_ENV,
    DB_FAULTS_ENV,
    DB_FAULTS_TRACE_ENV,
    PHASES,
    TRACE_ENV,
    WRITE_POINTS,
    StoreHooks,
    warn_armed,
)

COMMITS = ("checkpoint.after", "resources.after", "inbox.after", "finish.after")
"""The crash points passed right after a step's write committed (``inbox``: a checkpoint
that also took an event or spawned children)."""

log = logging.getLogger(__name__)


def all_points() -> list[str]:
    """Every crash point name, ``<write point>.<phase>``."""
    return [f"{point}.{phase}" for point in WRITE_POINTS for phase in PHASES]


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@attrs.define
class CrashPlan:
    """Die with SIGKILL at the ``n``-th pass of ``point`` (counted in this process).

    With ``trace`` set (``FSM_CRASH_TRACE=FILE``), every pass of every point is also appended
    to that file, one name per line: a dry run tells the crash runner which (point, n) pairs
    a scenario reaches.
    """

    point: str | None
    n: int
    passes: int = 0
    trace: str | None = None

    @classmethod
    def parse(cls, text: str) -> CrashPlan:
        point, _, count = text.rpartition(":")
        if point not in all_points() or not count.isdigit() or int(count) < 1:
            raise ValueError(
                f"{CRASH_ENV}={text!r}: expected POINT:N with N >= 1 and POINT one of "
                f"{', '.join(all_points())}"
            )
        return cls(point, int(count))

    @classmethod
    def from_env(cls) -> CrashPlan | None:
        text = os.environ.get(CRASH_ENV)
        trace = os.environ.get(TRACE_ENV) or None
        if not text and trace is None:
            return None
        plan = cls.parse(text) if text else cls(None, 0)
        plan.trace = trace
        if text:
            warn_armed(CRASH_ENV, text)
        if trace is not None:
            warn_armed(TRACE_ENV, trace)
        return plan

    def hit(self, point: str) -> None:
        if self.trace is not None:
            with open(self.trace, "a", encoding="ascii") as out:
                out.write(point + "\n")
        if point != self.point:
            return
        self.passes += 1
        if self.passes == self.n:
            _die()

    def hooks(self) -> StoreHooks:
        return StoreHooks(point=self.hit)


@attrs.define
class CommitKiller:
    """SIGKILL this process right after its ``n``-th committed step write (`COMMITS`).

    What a test's child process wants when it must die between two steps: the write of the
    ``n``-th step is in the database, the next step has not run.
    """

    n: int
    commits: int = 0

    def hit(self, point: str) -> None:
        if point in COMMITS:
            self.commits += 1
            if self.commits >= self.n:
                _die()


def kill_after_commits(n: int) -> StoreHooks:
    """Store hooks that SIGKILL the process right after its ``n``-th committed step."""
    if n < 1:
        raise ValueError(f"kill after n >= 1 commits, got {n}")
    return StoreHooks(point=CommitKiller(n).hit)


@attrs.define
class DatabaseFaults:
    """Fail a fraction ``rate`` of the store's statements with a real database error.

    The errors are the drivers' own (``sqlite3.OperationalError`` for "database is locked"
    and "disk I/O error"; for PostgreSQL, psycopg's ``OperationalError`` for a lost
    connection), raised where the statement would run, so they reach fsm exactly as a real
    failure would: translated by peewee into ``peewee.OperationalError``.
    """

    rate: float
    seed: int = 0
    kinds: Sequence[str] = ("locked", "io", "connection")
    injected: int = 0
    trace: str | None = None
    rng: random.Random = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"fault rate must be within [0, 1], got {self.rate}")
        self.rng = random.Random(self.seed)

    @classmethod
    def from_env(cls) -> DatabaseFaults | None:
        """``FSM_DB_FAULTS=RATE:SEED`` (e.g. ``0.05:7``) switches faults on in a process.

        With ``FSM_DB_FAULTS_TRACE=FILE`` each injected fault is appended to that file, so a
        parent process can count them.
        """
        text = os.environ.get(DB_FAULTS_ENV)
        if not text:
            return None
        rate, _, seed = text.partition(":")
        try:
            faults = cls(
                float(rate), int(seed or 0), trace=os.environ.get(DB_FAULTS_TRACE_ENV) or None
            )
        except ValueError:
            raise ValueError(f"{DB_FAULTS_ENV}={text!r}: expected RATE:SEED, e.g. 0.05:7") from None
        warn_armed(DB_FAULTS_ENV, text)
        return faults

    def maybe_fail(self, sqlite: bool) -> None:
        if self.rng.random() >= self.rate:
            return
        self.injected += 1
        kind = self.rng.choice(list(self.kinds))
        if self.trace is not None:
            with open(self.trace, "a", encoding="ascii") as out:
                out.write(kind + "\n")
        if sqlite:
            raise sqlite3.OperationalError(_SQLITE_MESSAGES[kind])
        import psycopg

        raise psycopg.OperationalError(_POSTGRES_MESSAGES[kind])

    def hooks(self) -> StoreHooks:
        return StoreHooks(statement=self.maybe_fail)


def hooks_from_env() -> StoreHooks:
    """The hooks ``FSM_CRASH``, ``FSM_CRASH_TRACE`` and ``FSM_DB_FAULTS`` arm (fresh counts:
    one crash plan per store, as each store counts its own passes)."""
    crash = CrashPlan.from_env()
    faults = DatabaseFaults.from_env()
    hooks = StoreHooks()
    if crash is not None:
        hooks |= crash.hooks()
    if faults is not None:
        hooks |= faults.hooks()
    return hooks


_SQLITE_MESSAGES = {
    "locked": "database is locked",
    "io": "disk I/O error",
    "connection": "unable to open database file",
}
_POSTGRES_MESSAGES = {
    "locked": "canceling statement due to lock timeout",
    "io": "could not write to file: No space left on device",
    "connection": "server closed the connection unexpectedly",
}
