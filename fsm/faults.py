"""Fault injection at the store's write points: crash points and database errors.

Crash-safety is only believable if it is tested by killing real processes at every place the
framework writes. Each write has a name (`WRITE_POINTS`), in two phases: ``<name>.before``
(the process dies before the write: it is lost) and ``<name>.after`` (it dies right after the
write committed, before using it). Setting ``FSM_CRASH=checkpoint.after:3`` in a process's
environment makes it SIGKILL itself at the third pass of that point; `fsm.testing` loops over
every (point, n) pair.

The transition log has no point of its own: its row is written by the checkpoint's statement
(a trigger on SQLite, a CTE on PostgreSQL) or inside the same transaction, so no crash can
fall between the two.

`DatabaseFaults` makes the store's statements fail with the database's own errors (locked,
disk I/O, connection lost) at a seeded rate, to show every action still ends correctly.

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

WRITE_POINTS: tuple[str, ...] = (
    "start",  # insert of a new action and its resources
    "claim",  # taking the lease (a single drive, or a worker's batch)
    "checkpoint",  # the step's checkpoint (and its log row)
    "resources",  # a checkpoint that also changes resources (one transaction)
    "finish",  # the terminal delete (resources released by cascade, log row)
    "unclaim",  # letting go of the lease without a checkpoint change
    "wake",  # marking an action due (notify)
    "quarantine",  # setting an unreadable row aside
)
"""Every place the store writes, in the order a drive usually passes them."""

PHASES = ("before", "after")
CRASH_ENV = "FSM_CRASH"
TRACE_ENV = "FSM_CRASH_TRACE"
DB_FAULTS_ENV = "FSM_DB_FAULTS"
DB_FAULTS_TRACE_ENV = "FSM_DB_FAULTS_TRACE"

log = logging.getLogger(__name__)


def warn_armed(name: str, value: str) -> None:
    """Say, in one WARNING line, that the test-only environment variable ``name`` is acting.

    Called by every reader of such a variable (crash points, database faults, the executor's
    double-drive mode) at the moment it arms, so a variable forgotten in a production
    environment shows in the logs instead of silently killing or failing work.
    """
    log.warning(
        "%s=%r is set: test-only fault injection is armed in this process (unset it in production)",
        name,
        value,
    )


def all_points() -> list[str]:
    """Every crash point name, ``<write point>.<phase>``."""
    return [f"{point}.{phase}" for point in WRITE_POINTS for phase in PHASES]


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
            os.kill(os.getpid(), signal.SIGKILL)


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
