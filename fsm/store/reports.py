"""What an operator reads about actions: a status, a listing's rows, one action's report.

Plain records, like `fsm.store.records`, built by the cold reads of `fsm.store.listing`
(filtered keyset pages), `fsm.store.report` (one action, in one read) and
`fsm.store.pruning`. The status is computed here, once, from a row's columns and the
database's clock, so the listing's SQL (`fsm.store.listing.status_condition`), the report
and the command line cannot disagree about it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import enum
import json
import math
from collections.abc import Iterable
from typing import Any

import attrs

from fsm.events import Delivered
from fsm.failures import chain_of
from fsm.store.records import KeptOutcome, LoggedStep


class ActionStatus(enum.StrEnum):
    """Where an action stands: six live statuses, then three ends (one per kept outcome)."""

    DUE = "due"
    """Live, due now: a worker claims it at its next poll."""
    PARKED = "parked"
    """Live, waiting for its wake-up time (``wake_at``, in the future)."""
    WAITING = "waiting"
    """Live, waiting for a notify only (no wake-up time)."""
    RUNNING = "running"
    """Live, leased: a driver holds it until ``lease_expires``."""
    BROKEN = "broken"
    """Live, the kind's code failed on its step: it waits for a fix and a notify or retry."""
    QUARANTINED = "quarantined"
    """Live, set aside: its row cannot be read (reason in ``quarantine``); never driven."""
    DONE = "done"
    FAILED = "failed"
    STOPPED = "stopped"
    """Ended by an operator (`Executor.delete`)."""

    @property
    def live(self) -> bool:
        return self in LIVE_STATUSES


LIVE_STATUSES = frozenset(
    (
        ActionStatus.DUE,
        ActionStatus.PARKED,
        ActionStatus.WAITING,
        ActionStatus.RUNNING,
        ActionStatus.BROKEN,
        ActionStatus.QUARANTINED,
    )
)
ENDED_STATUSES = (ActionStatus.DONE, ActionStatus.FAILED, ActionStatus.STOPPED)
"""The statuses ``fsm_outcome`` keeps, in the order the listing reads them."""

STATUS_GROUPS: dict[str, frozenset[ActionStatus]] = {
    "live": LIVE_STATUSES,
    "ended": frozenset(ENDED_STATUSES),
}
"""Names that stand for several statuses in a filter."""


def parse_statuses(names: Iterable[str]) -> frozenset[ActionStatus]:
    """The statuses ``names`` stand for (a status or a group of `STATUS_GROUPS`); none: all.

    Raises ``ValueError`` naming the accepted ones for anything else.
    """
    found: set[ActionStatus] = set()
    for name in names:
        if name in STATUS_GROUPS:
            found |= STATUS_GROUPS[name]
            continue
        try:
            found.add(ActionStatus(name))
        except ValueError:
            accepted = ", ".join([*STATUS_GROUPS, *ActionStatus])
            raise ValueError(f"unknown status {name!r} (one of: {accepted})") from None
    return frozenset(found) if found else frozenset(ActionStatus)


def live_status(
    *,
    quarantine: str | None,
    broken: bool,
    lease_owner: str | None,
    lease_expires: float | None,
    wake_at: float | None,
    now: float,
) -> ActionStatus:
    """A live row's status at ``now`` (the database's clock), in this order: quarantined,
    broken, running (a lease not yet expired), waiting (no wake-up), due, parked."""
    if quarantine is not None:
        return ActionStatus.QUARANTINED
    if broken:
        return ActionStatus.BROKEN
    if lease_owner is not None and lease_expires is not None and lease_expires > now:
        return ActionStatus.RUNNING
    if wake_at is None:
        return ActionStatus.WAITING
    return ActionStatus.PARKED if wake_at > now else ActionStatus.DUE


@attrs.frozen
class ActionFilter:
    """Which actions a listing keeps; every field left at its default keeps all.

    ``statuses``: names of `ActionStatus` or of `STATUS_GROUPS` (``live``, ``ended``).
    ``since``: a unix time; live actions started then or later, ended ones that ended then
    or later (the listing's time, `ActionSummary.at`). ``error``: text found, ignoring ASCII
    case, in the error, the cause or the quarantine reason.
    """

    kind: str | None = None
    state: str | None = None
    statuses: tuple[str, ...] = ()
    since: float | None = None
    error: str | None = None

    def __attrs_post_init__(self) -> None:
        parse_statuses(self.statuses)  # refuses an unknown status at once
        if self.since is not None and math.isnan(self.since):
            raise ValueError("since must be a time, not NaN")

    @property
    def wanted(self) -> frozenset[ActionStatus]:
        return parse_statuses(self.statuses)


@attrs.frozen
class Cursor:
    """Where a listing's page ended: the last row's time, id and incarnation.

    A page is what sorts strictly after it (newest first), so pages never overlap and rows
    written meanwhile are seen or not by where they sort. `token` is its printable form.
    """

    at: float
    id: str
    incarnation: str

    @property
    def token(self) -> str:
        raw = json.dumps([self.at, self.id, self.incarnation], separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def parse(cls, token: str) -> Cursor:
        """The cursor a `token` names; ``ValueError`` for anything that is not one."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            at, action_id, incarnation = json.loads(raw)
            if not isinstance(at, int | float) or not math.isfinite(at):
                raise ValueError
            if not (isinstance(action_id, str) and isinstance(incarnation, str)):
                raise ValueError
        except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
            raise ValueError(f"not a listing cursor: {token!r}") from None
        return cls(float(at), action_id, incarnation)


@attrs.frozen
class ActionSummary:
    """One row of a listing: a live action, or one ended incarnation of an id.

    ``at`` orders the listing (newest first): when a live action started, when an ended one
    ended. ``error``: a live action's last error, an ended one's failure; ``quarantine``:
    why a row was set aside. ``wake_at`` and the lease are a live action's only.
    """

    id: str
    kind: str
    state: str
    status: ActionStatus
    incarnation: str
    at: float
    started_at: float
    ended_at: float | None
    updated_at: float
    steps: int
    retries: int
    attempts: int
    error: str | None
    cause: str | None
    quarantine: str | None = None
    wake_at: float | None = None
    lease_owner: str | None = None
    lease_expires: float | None = None

    @property
    def cursor(self) -> Cursor:
        """Where a page ending with this row ends: pass it as ``after`` for the next."""
        return Cursor(self.at, self.id, self.incarnation)

    def to_json(self) -> dict[str, Any]:
        """The row as JSON values (times as unix seconds), with its ``cursor`` token."""
        out = attrs.asdict(self)
        out["status"] = self.status.value
        out["cursor"] = self.cursor.token
        return out


@attrs.frozen
class ActionReport:
    """Everything about one action, read in one call (`Store.inspect`, `Executor.inspect`).

    The action shown is the live incarnation of the id if there is one, else the newest
    ended one (``outcome``); ``earlier`` holds the outcomes of the id's other kept
    incarnations, newest first. ``status`` says where it stands; what goes with it:

    * due, parked (until ``wake_at``), waiting (for a notify): ``attempts`` and ``error``
      say how the last tries went;
    * running: leased by ``lease_owner`` until ``lease_expires``;
    * broken: ``error`` holds the error and the end of its traceback;
    * quarantined: ``quarantine`` is the reason;
    * done, failed, stopped: ``outcome``, with ``error`` and its chain (`error_chain`).

    ``payload`` is the checkpoint as stored (JSON), for a live action; ``action`` is it
    decoded by the kind when the caller knows the kind (`Executor.inspect`), else ``None``
    with ``decode_error`` saying why when decoding failed. ``history`` is the shown
    incarnation's transition log, oldest first: its last ``history_limit`` steps, and
    ``history_truncated`` when there were more (`Store.history` pages through them all).
    """

    id: str
    status: ActionStatus
    kind: str
    state: str
    incarnation: str
    started_at: float
    updated_at: float
    steps: int
    retries: int
    error: str | None
    cause: str | None
    version: int | None = None
    payload: str | None = None
    seq: int | None = None
    attempts: int = 0
    wake_at: float | None = None
    lease_owner: str | None = None
    lease_expires: float | None = None
    quarantine: str | None = None
    notified: bool = False
    resources: tuple[str, ...] = ()
    outcome: KeptOutcome | None = None
    earlier: tuple[KeptOutcome, ...] = ()
    history: tuple[LoggedStep, ...] = ()
    history_truncated: bool = False
    action: Any = None
    decode_error: str | None = None
    events: tuple[Delivered, ...] = ()
    """The oldest pending events in its inbox (at most `SHOWN_EVENTS`), in send order."""
    events_pending: int = 0
    """How many events wait in its inbox."""

    @property
    def live(self) -> bool:
        return self.status.live

    @property
    def ended_at(self) -> float | None:
        return None if self.outcome is None else self.outcome.finished_at

    @property
    def error_chain(self) -> tuple[str, ...]:
        """The error, then each of its causes (``caused by: ...``); empty without an error."""
        return () if self.error is None else chain_of(self.error)

    def to_json(self) -> dict[str, Any]:
        """The report as JSON values: the checkpoint as its stored JSON (parsed), not the
        decoded object; the history as a list of steps."""
        out = attrs.asdict(self, recurse=True, filter=lambda a, _: a.name != "action")
        out["status"] = self.status.value
        out["ended_at"] = self.ended_at
        out["error_chain"] = list(self.error_chain)
        if self.payload is not None:
            with contextlib.suppress(ValueError):  # a damaged row: shown as the text it is
                out["payload"] = json.loads(self.payload)
        return out


SHOWN_EVENTS = 100
"""Pending events an `ActionReport` holds at most (``events_pending`` counts them all)."""


@attrs.frozen
class PruneResult:
    """What `Store.prune` deleted: transition-log rows, kept outcomes, and the events live
    actions took (`fsm.store.pruning.event_deletes`)."""

    log_rows: int
    outcomes: int
    older_than: float
    events: int = 0
