"""The rules crash safety rests on, as pure functions: what a step's outcome writes.

A drive runs a step, and `plan` says what the row must become (`plan_broken` for a step
whose code is wrong, `after_failed_write` when the write itself failed): the step sequence
(which names the next step's idempotency key), the attempts (the retry budget), the wake-up
(when a worker finds the action due), the lease (kept while the drive goes on, released when
it returns), the cause an action carries toward its end, and the log entry. The drive loop
only carries the plan out, so every rule here is tested without a database
(``tests/core/test_plan.py``). No I/O, no clock, no store: times come in as arguments.
"""

from __future__ import annotations

import enum
from typing import Protocol

import attrs

from fsm.failures import chained_text, error_text, with_cause
from fsm.protocol import Done, DriveMode, Failed, Next, Outcome, Park
from fsm.store import Bookkeeping, LogEntry

RUN_NOW = 0.0
"""``wake_at`` of an action between two steps of a drive: due at once if the drive dies.

A constant rather than the current time, so consecutive steps leave the ``wake_at`` index
untouched (one less page written per step)."""


class Write(enum.Enum):
    """What a step's write does to the action; the value is the log's ``outcome``."""

    NEXT = "next"
    """A new checkpoint; the retry budget is reset and the drive goes on."""
    PARK = "park"
    """A checkpoint (new or the same) that waits: for its wake-up, a notify, or a nap."""
    BROKEN = "broken"
    """The kind's code failed: checkpoint and budget untouched, waiting for a fix."""
    DONE = "done"
    """Terminal: the row is deleted, its end kept."""
    FAILED = "failed"
    """Terminal: the row is deleted, its end kept with the error."""


class Lease(enum.Enum):
    """What the write does to the drive's lease on the row."""

    KEPT = "kept"
    """Unchanged: more than half of it is left, and the drive goes on."""
    RENEWED = "renewed"
    """A full lease time from the write: less than half was left, and the drive goes on."""
    UNTIL_WAKE = "until_wake"
    """Held through a nap: a lease time past the wake-up, so no one else takes it meanwhile."""
    RELEASED = "released"
    """Let go (or deleted with the row): the drive returns."""


class Position(Protocol):
    """Where a drive stands: the checkpoint and bookkeeping as last written."""

    @property
    def state(self) -> str: ...

    @property
    def payload(self) -> str: ...

    @property
    def seq(self) -> int: ...

    @property
    def bookkeeping(self) -> Bookkeeping: ...


@attrs.define(slots=True)
class Plan:
    """The write a step's outcome makes, and what the drive does after it.

    Read-only by convention, not frozen: a frozen attrs class costs about 0.7 us more to
    build, on every step (``benchmarks/step.py``).
    """

    write: Write
    seq: int
    """The row's step sequence after the write (the next step's key)."""
    state: str
    """The state the row holds after the write; for DONE and FAILED the end state."""
    payload: str
    """The payload the row holds after the write (for DONE and FAILED, the last one)."""
    bookkeeping: Bookkeeping | None
    """The row's bookkeeping after the write; ``None``: the row is deleted."""
    entry: LogEntry
    cause: str | None
    """The error of the route the action follows toward its end (kept with the end)."""
    lease: Lease
    goes_on: bool
    """True when the drive steps again (after ``sleep_for``, if set): it keeps its lease."""
    sleep_for: float | None = None
    """Seconds the drive sleeps through a park before it goes on (``UNTIL_DONE``)."""
    failure: BaseException | str | None = None
    """A FAILED end's error, with the cause that led there."""


def plan(
    outcome: Outcome,
    at: Position,
    checkpoint: tuple[str, str] | None,
    *,
    kind: str,
    version: int,
    via: str,
    attempts: int,
    cause: str | None,
    routed: bool,
    mode: DriveMode,
    stopping: bool,
    started: float,
    now: float,
    lease_ttl: float,
    duration: float,
) -> Plan:
    """What the row must become after the step run from ``at``.

    ``checkpoint``: the (state, payload) a `Next` or `Park` encodes to. ``version``: the
    kind's, written with a new checkpoint. ``via``: ``step``, or the handler (``retry``,
    ``rejection``) whose outcome this is; ``attempts``: the consecutive transient errors
    including this step's; ``cause``: the text of the error a handler turned into the
    outcome, and ``routed`` whether that outcome follows a route (a rejection, a spent
    budget) whose cause the action carries to its end. ``started``: the clock when the step
    began (wake-ups count from it); ``now``: the clock at the write (the lease counts from
    it). ``stopping``: the executor is shutting down, so no drive goes on.

    The rules: a `Next` advances the sequence, resets the attempts and leaves the action due
    (`RUN_NOW`) should the drive die before its next write. A `Park` advances the sequence
    only when the checkpoint changed (a retry keeps its key) and sets the wake-up from its
    delay (none: only a notify wakes it). An end deletes the row (a broken step:
    `plan_broken`). The lease is released whenever the drive returns, held through
    a nap, and renewed once less than half of it is left.
    """
    seq = at.seq
    row = at.bookkeeping
    cause_text = cause if routed else row.cause
    sleep_for: float | None = None
    if isinstance(outcome, Next):  # the hot path first
        assert checkpoint is not None
        state, payload = checkpoint
        write, logged = Write.NEXT, "next"  # the value, without the enum's lookup per step
        attempts = 0
        seq += 1
        # Due at once if the drive dies here; a due wake-up need not be rewritten.
        wake_at = row.wake_at
        if wake_at is None or wake_at > started:
            wake_at = RUN_NOW
        text = cause
        returning = stopping
    elif isinstance(outcome, Park):
        assert checkpoint is not None
        state, payload = checkpoint
        write, logged = Write.PARK, "park"
        if state != at.state or payload != at.payload:
            seq += 1
        error = outcome.error
        text = error_text(error) if error else cause
        wake_after = outcome.wake_after
        wake_at = None if wake_after is None else started + wake_after
        if mode is DriveMode.UNTIL_DONE and wake_after is not None:
            sleep_for = wake_after
        returning = sleep_for is None or stopping
    else:
        return _end(outcome, at, kind, via, attempts, cause, cause_text, duration)
    lease_expires = row.lease_expires
    if returning:
        lease = Lease.RELEASED
        lease_expires = None
        sleep_for = None
    elif sleep_for is not None:
        # The nap starts after this write, however long the step took: the lease outlives it.
        lease = Lease.UNTIL_WAKE
        lease_expires = now + sleep_for + lease_ttl
    elif lease_expires is None or lease_expires - now < lease_ttl / 2:
        lease = Lease.RENEWED
        lease_expires = now + lease_ttl
    else:
        lease = Lease.KEPT
    if (  # the usual step changes none of them: the row's own record is kept (no new one)
        attempts == row.attempts
        and text == row.last_error
        and wake_at == row.wake_at
        and lease_expires == row.lease_expires
        and version == row.version
        and not row.broken
        and cause_text == row.cause
    ):
        new = row
    else:
        new = Bookkeeping(version, attempts, text, wake_at, lease_expires, False, cause_text)
    return Plan(
        write,
        seq,
        state,
        payload,
        new,
        LogEntry(kind, at.seq, at.state, state, logged, via, attempts, text, duration),
        cause_text,
        lease,
        not returning,
        sleep_for,
    )


def _end(
    outcome: Done | Failed,
    at: Position,
    kind: str,
    via: str,
    attempts: int,
    cause: str | None,
    cause_text: str | None,
    duration: float,
) -> Plan:
    """Terminal: the row is deleted; its end is kept with the failure and the cause."""
    failed = isinstance(outcome, Failed)
    failure = with_cause(outcome.error, cause_text) if isinstance(outcome, Failed) else None
    write = Write.FAILED if failed else Write.DONE
    text = chained_text(failure) if failure else cause
    entry = LogEntry(kind, at.seq, at.state, None, write.value, via, attempts, text, duration)
    end_state = outcome.state or at.state
    return Plan(
        write,
        at.seq,
        end_state,
        at.payload,
        None,
        entry,
        cause_text,
        Lease.RELEASED,
        False,
        None,
        failure,
    )


def plan_broken(at: Position, text: str, *, kind: str, duration: float) -> Plan:
    """A step whose kind's code is wrong (``text``: the error and its traceback's end).

    Nothing changes but the error, the broken mark and the lease: the checkpoint and its
    sequence stay (the same key after the fix, so effects the failed run made are
    deduplicated), no attempt is counted (the budget is for the world's faults, not the
    code's), and there is no wake-up: only a notify after the fix, or a resume, drives it.
    """
    row = at.bookkeeping
    return Plan(
        Write.BROKEN,
        at.seq,
        at.state,
        at.payload,
        attrs.evolve(row, last_error=text, wake_at=None, lease_expires=None, broken=True),
        LogEntry(kind, at.seq, at.state, at.state, "broken", "step", row.attempts, text, duration),
        row.cause,
        Lease.RELEASED,
        False,
    )


def plan_update(at: Position, checkpoint: tuple[str, str], *, kind: str, version: int) -> Plan:
    """A checkpoint changed from outside (`Executor.update`), written as a step of its own.

    The sequence does not advance, so a step waiting to be retried keeps its idempotency
    key; the lease taken for the update is released.
    """
    state, payload = checkpoint
    row = at.bookkeeping
    return Plan(
        Write.PARK,
        at.seq,
        state,
        payload,
        attrs.evolve(row, version=version, lease_expires=None),
        LogEntry(kind, at.seq, at.state, state, "park", "update", 0, None, 0.0),
        row.cause,
        Lease.RELEASED,
        False,
    )


def after_failed_write(row: Bookkeeping, text: str, delay: float, now: float) -> Bookkeeping:
    """The row after a step whose own write failed: the checkpoint stays as it was.

    The failed write counts as an attempt and backs off by ``delay`` (the policy's for that
    attempt), so a database fault never makes a drive retry in a hot loop.
    """
    return attrs.evolve(
        row,
        attempts=row.attempts + 1,
        last_error=text,
        wake_at=now + delay,
        lease_expires=None,
        broken=False,
    )
