"""Plain records the store hands out and takes in: never a peewee row.

The hot path reads and writes these (`Claimed`, `Bookkeeping`, `LogEntry`, `KeptOutcome`),
the cold paths return them (`RowInfo`, `LoggedStep`), so no caller depends on the ORM and a
record stays valid after its store is closed.
"""

from __future__ import annotations

import enum
from typing import Any

import attrs


class ClaimMiss(enum.StrEnum):
    """Why `Store.claim` took no lease."""

    MISSING = "missing"
    """There is no live action with this id."""
    BUSY = "busy"
    """Another live driver holds the lease."""
    QUARANTINED = "quarantined"
    """The row is set aside (see `Store.quarantine`)."""


@attrs.frozen(slots=True)
class Bookkeeping:
    """The columns of a row a drive changes besides the checkpoint itself.

    The executor keeps the row's current values and asks for new ones; the store writes only
    the columns that differ. ``lease_expires`` of ``None`` means not leased. ``broken``: the
    kind's code failed on this step and the action waits for a fix; ``cause``: the error of
    the rejection (or spent retry budget) whose route the action is following.
    """

    version: int
    attempts: int
    last_error: str | None
    wake_at: float | None
    lease_expires: float | None
    broken: bool = False
    cause: str | None = None


BOOKKEEPING = tuple(a.name for a in attrs.fields(Bookkeeping))
"""`Bookkeeping`'s columns, in the order the fenced UPDATE compares them."""


@attrs.frozen(slots=True)
class Claimed:
    """A row we now hold the lease on, as read in the same statement that claimed it."""

    id: str
    kind: str
    state: str
    version: int
    payload: str
    seq: int
    attempts: int
    last_error: str | None
    wake_at: float | None
    epoch: int
    lease_expires: float
    incarnation: str
    cause: str | None
    broken: bool
    inbox: int = 0
    """Pending events in the action's inbox at the claim (schema v6)."""

    @property
    def bookkeeping(self) -> Bookkeeping:
        """The row's bookkeeping columns as claimed (what a first write compares against)."""
        return Bookkeeping(
            self.version,
            self.attempts,
            self.last_error,
            self.wake_at,
            self.lease_expires,
            bool(self.broken),
            self.cause,
        )


@attrs.frozen(slots=True)
class LogEntry:
    """What the transition log records for one step (``seq``: the step's sequence number)."""

    kind: str
    seq: int
    from_state: str
    to_state: str | None
    outcome: str
    via: str
    attempt: int
    error: str | None
    duration: float

    def values(self) -> tuple[Any, ...]:
        """The log row's columns after ``action_id`` and before ``at``."""
        return (
            self.kind,
            self.seq,
            self.from_state,
            self.to_state,
            self.outcome,
            self.via,
            self.attempt,
            self.error,
            self.duration,
        )


@attrs.frozen(slots=True)
class LoggedStep(LogEntry):
    """One row of the transition log as stored: its `LogEntry`, the action, where and when.

    ``id`` grows with every row written, so it orders the log; ``at``: the unix time of the
    step's write.
    """

    action_id: str
    id: int
    at: float


@attrs.frozen(slots=True)
class RowInfo:
    """A row as seen by the cold paths (listing, inspection, quarantine reports)."""

    id: str
    kind: str
    state: str
    version: int
    attempts: int
    last_error: str | None
    wake_at: float | None
    lease_owner: str | None
    quarantine: str | None
    broken: bool = False
    incarnation: str = ""
    cause: str | None = None


@attrs.frozen(slots=True)
class Checkpoint:
    """A live action's checkpoint as last committed: read in one statement, so the state,
    version and payload are always one step's (`Store.checkpoint`)."""

    id: str
    kind: str
    state: str
    version: int
    payload: str
    quarantine: str | None


@attrs.frozen(slots=True)
class KeptOutcome:
    """How an incarnation of an action ended (``status``: done, failed or stopped).

    ``error``: the failure, with its exception's chain of causes on the lines after the
    first (`fsm.failures.chain_of` splits them); ``cause``: the error of the rejection (or
    spent retry budget) whose route led there, with its chain too. ``steps``: the steps the
    kind's code made in this incarnation (its end included), ``retries`` how many of them
    were transient errors sent to the retry handler or failed writes (counted from schema
    v5 on: 0 for what ended or started before).
    """

    id: str
    incarnation: str
    kind: str
    state: str
    status: str
    error: str | None
    cause: str | None
    started_at: float
    finished_at: float
    steps: int = 0
    retries: int = 0
