"""What the executor's calls return: how a drive ended, how a start went, a resume's report,
what an operator's control did."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType

import attrs

from fsm.store import KeptOutcome, RowInfo


class DriveStatus(enum.Enum):
    """How a drive ended."""

    DONE = "done"
    """The action finished successfully; its row and resources are gone."""
    FAILED = "failed"
    """The action finished with `Failed`; its row and resources are gone."""
    PARKED = "parked"
    """The action is waiting (for its wake-up time or a notify); its checkpoint is saved."""
    BROKEN = "broken"
    """The kind's code failed (a wrong return type, an unstorable checkpoint, a TypeError...):
    the action waits, checkpoint unchanged and retry budget untouched, for a fix and a notify."""
    BUSY = "busy"
    """Another driver (task or process) holds the action; nothing was done."""
    MISSING = "missing"
    """No live action has this id (it may have finished already)."""
    SKIPPED = "skipped"
    """The row is of a kind this executor does not know, or newer than its code: left as it
    is for a driver that can drive it."""
    QUARANTINED = "quarantined"
    """The row cannot be read; it is set aside with a reason (see `Store.quarantined`)."""
    ERROR = "error"
    """The checkpoint could not be written; the attempt and its backoff were recorded if the
    database allowed it, else the lease runs out and the action is retried after it."""
    LEASE_LOST = "lease_lost"
    """Another driver claimed the action meanwhile; our write was refused and we stopped."""


@attrs.frozen
class DriveResult:
    """What one drive did.

    ``state`` is where the action stands: the terminal state reached for done and failed.
    ``error`` is the park's error, the failure, or what went wrong; ``cause`` the error of the
    rejection (or spent retry budget) whose route led the action to its end, if any.
    ``kind`` and ``key`` are known when the drive read the row: the action's kind, and the
    idempotency key of the step it stands at (for done and failed, the step that ended it;
    otherwise the next step to run), for logs that say which step a line is about.
    """

    id: str
    status: DriveStatus
    state: str | None = None
    error: BaseException | str | None = None
    steps: int = 0
    cause: str | None = None
    kind: str | None = attrs.field(default=None, kw_only=True)
    key: str | None = attrs.field(default=None, kw_only=True)

    @property
    def ok(self) -> bool:
        """True when nothing went wrong: done, or parked without an error."""
        return self.status in (DriveStatus.DONE, DriveStatus.PARKED) and self.error is None

    @classmethod
    def of_outcome(cls, kept: KeptOutcome) -> DriveResult:
        """The result a drive of an incarnation that already ended reports (no step runs)."""
        if kept.status == "done":
            return cls(kept.id, DriveStatus.DONE, kept.state, None, 0, kept.cause)
        error = kept.error if kept.status == "failed" else f"stopped by an operator ({kept.error})"
        return cls(kept.id, DriveStatus.FAILED, kept.state, error, 0, kept.cause)


class StartStatus(enum.Enum):
    """What `Executor.start` did."""

    STARTED = "started"
    """A new incarnation of the id is live."""
    LIVE = "live"
    """An action of the same kind is already live with this id; nothing changed."""
    ENDED = "ended"
    """An incarnation of this id ended within the redelivery window: nothing changed, and
    ``outcome`` says how it ended. Pass ``again=True`` to start a new incarnation."""


@attrs.frozen
class StartResult:
    """What `Executor.start` did; true only when it started a new incarnation."""

    id: str
    status: StartStatus
    incarnation: str | None = None
    outcome: KeptOutcome | None = None

    def __bool__(self) -> bool:
        return self.status is StartStatus.STARTED


class SendStatus(enum.Enum):
    """What `Executor.send` did with an event."""

    SENT = "sent"
    """Stored in the action's inbox, the action made due: a step will take it."""
    DUPLICATE = "duplicate"
    """This key was sent to this action before with the same event: nothing new."""
    DROPPED = "dropped"
    """The kind drops events its current state does not take (``unaccepted = "drop"``):
    kept as set aside (``detail``: why), for the record and for its key."""
    REFUSED = "refused"
    """Nothing stored (``detail``: why): no state of the kind takes this event, the state
    does not take it and the kind rejects such events, or the key was used for another."""
    FINISHED = "finished"
    """The action has ended (``detail``: how); events to it are refused. (A dead letter
    would be read by no one: its sender is told now instead.)"""
    UNKNOWN = "unknown"
    """No action has this id."""


@attrs.frozen
class SendResult:
    """What `Executor.send` did; true when the event is (or was already) in the inbox."""

    id: str
    status: SendStatus
    key: str
    detail: str | None = None

    def __bool__(self) -> bool:
        return self.status in (SendStatus.SENT, SendStatus.DUPLICATE)


KEPT_FAILURES = 1000
"""How many results that are not `DriveResult.ok` a `ResumeReport` keeps in full."""


@attrs.frozen
class ResumeReport:
    """What `Executor.resume_all` (or `Executor.run_due`) did, sized for a million actions.

    Every drive is counted by status (`count`, `counts`, `total`); the drives that went wrong,
    those whose result is not `DriveResult.ok` (an error, a broken or quarantined row, a
    failed end, a parked retry, a busy or missing action...), are kept in full in `failures`,
    the first `KEPT_FAILURES` of them to end, in the order their ids were driven;
    ``failures_omitted`` says how many more were counted but not kept. A report of a million
    drives that went well is a few counters, not a million results. ``quarantined``: the rows
    set aside in the table when the run ended (`Store.quarantined`), the first
    `KEPT_FAILURES` by start, ``quarantined_omitted`` how many more there are.

    ``keep_results=True`` (on `Executor.resume_all` and `Executor.run_due`) keeps every
    result as well, in `results`: for small runs and tests that look at each action.
    """

    counts: Mapping[DriveStatus, int]
    """How many drives ended with each status (statuses no drive ended with are absent)."""
    failures: tuple[DriveResult, ...]
    """The drives that did not end `DriveResult.ok`, in full (at most `KEPT_FAILURES`)."""
    quarantined: tuple[RowInfo, ...]
    """The rows set aside in the table when the run ended (at most `KEPT_FAILURES`)."""
    failures_omitted: int = 0
    """How many more drives did not end ok than `failures` holds."""
    quarantined_omitted: int = 0
    """How many more rows were set aside than `quarantined` holds."""
    _results: tuple[DriveResult, ...] | None = None

    @property
    def total(self) -> int:
        """How many drives ran."""
        return sum(self.counts.values())

    def count(self, status: DriveStatus) -> int:
        """How many drives ended with ``status``."""
        return self.counts.get(status, 0)

    @property
    def results(self) -> tuple[DriveResult, ...]:
        """Every drive's result, in the order the ids were driven; only with ``keep_results``.

        Raises ``LookupError`` when the run kept counts and failures only, rather than
        answering with an empty or partial list that reads like fewer drives.
        """
        if self._results is None:
            raise LookupError(
                "this report kept counts and failures only (see ResumeReport.failures); "
                "pass keep_results=True to resume_all or run_due to keep every result"
            )
        return self._results


class Tally:
    """A `ResumeReport` being made, one result at a time, in memory bounded by its failures.

    ``slot`` is a result's place in the order its id was driven: results may come in any
    order (drives run concurrently), the report lists them in that order.
    """

    def __init__(self, *, keep_results: bool = False) -> None:
        self._counts: dict[DriveStatus, int] = {}
        self._failures: list[tuple[int, DriveResult]] = []
        self._omitted = 0
        self._results: list[tuple[int, DriveResult]] | None = [] if keep_results else None

    def add(self, slot: int, result: DriveResult) -> None:
        self._counts[result.status] = self._counts.get(result.status, 0) + 1
        if self._results is not None:
            self._results.append((slot, result))
        if not result.ok:
            if len(self._failures) < KEPT_FAILURES:
                self._failures.append((slot, result))
            else:
                self._omitted += 1

    def report(self, quarantined: tuple[RowInfo, ...], quarantined_omitted: int) -> ResumeReport:
        return ResumeReport(
            MappingProxyType(dict(self._counts)),
            _in_order(self._failures),
            quarantined,
            self._omitted,
            quarantined_omitted,
            None if self._results is None else _in_order(self._results),
        )


def _in_order(results: list[tuple[int, DriveResult]]) -> tuple[DriveResult, ...]:
    return tuple(result for _, result in sorted(results, key=lambda kept: kept[0]))


@attrs.frozen
class Controlled:
    """What an operator's control did to one action (`fsm.Controls`).

    ``control``: retry, notify, cancel, stop or unquarantine. ``state``: where the action
    stood; ``to_state``: where it stands now (``None``: it ended). ``outcome``: what its
    history records (``due``, ``cancelled``, ``released``, ``stopped``, or ``failed`` /
    ``done`` for a cancel route to a terminal state). ``note``: the who and why recorded
    with it (a cancel's is also the action's cause). ``quarantine``: for unquarantine, why
    the row had been set aside. ``attempts``: the action's attempts after the control.
    """

    id: str
    control: str
    kind: str
    state: str
    to_state: str | None
    outcome: str
    note: str | None
    quarantine: str | None = None
    attempts: int = 0
