"""`Executor`: the settings of a set of drives, and the calls a program makes on actions.

Start, drive, notify, update and delete an action, resume or run what is due, stop. The drive
itself is `fsm.executor.drive`; what its writes are, `fsm.executor.plan`; the operator's
controls (retry, notify, cancel, stop, unquarantine), `fsm.executor.controls`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Generic

import fsm.results
from fsm.blocking import DEFAULT_BLOCKING_THREADS, BlockingPool
from fsm.errors import KindMismatch, NoSuchAction
from fsm.executor import sending
from fsm.executor.claims import why_not
from fsm.executor.controls import Controls
from fsm.executor.drive import Drive
from fsm.executor.many import drive_many
from fsm.executor.naps import Naps
from fsm.executor.observed import ObservedDrive
from fsm.executor.ready import prepare
from fsm.executor.turns import Turns
from fsm.executor.updates import update
from fsm.ids import check_id, new_incarnation
from fsm.observer import Observer
from fsm.protocol import Action, DriveMode, S
from fsm.registry import Registry, decode_report
from fsm.results import (
    DriveResult,
    DriveStatus,
    ResumeReport,
    SendResult,
    StartResult,
    StartStatus,
    Tally,
)
from fsm.retry import SEED_POLICY, RetryPolicy
from fsm.store import ActionReport, Claimed, KeptOutcome, LogEntry, Store, new_owner
from fsm.store.hooks import warn_armed
from fsm.store.inspection import pages
from fsm.store.leases import CLAIMED_EPOCH
from fsm.store.waking import TURN

log = logging.getLogger(__name__)

DOUBLE_DRIVE_ENV = "FSM_DOUBLE_DRIVE"
"""Set to 1/true/yes to run every step twice and fail loudly if the two runs differ."""

DEFAULT_STEP_TIMEOUT = 300.0
"""Seconds an async step may run before it is cancelled, unless its state or kind says."""

RESUME_PAGE = 500
"""Ids `Executor.resume_all` reads at a time."""

DEFAULT_REDELIVERY_WINDOW = 7 * 24 * 3600.0
"""Seconds after its end during which a start of the same id is taken as a re-delivery."""


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


class Executor(Generic[S]):
    """Drives actions of the registered kinds against one store.

    ``services`` is handed to every step as ``ctx.services`` (bark's ``Wallet``).
    ``retry`` is the default backoff of `Action.on_retry` and the default classification of
    errors (`RetryPolicy.never_retry`). ``step_timeout``: seconds an async step may run before
    it is cancelled and retried (a state or kind may say otherwise; ``None``: no limit).
    ``redelivery_window``: seconds after an action ended during which starting its id again
    returns the kept outcome instead of running it again (`start`). ``clock`` (unix seconds;
    default `Store.now`, the database's clock) and ``sleep`` can be replaced in tests.
    ``on_commit(action_id, entry)`` is called after every committed step (progress displays,
    statistics, crash-test hooks). ``double_drive`` runs every step twice from the same state
    and raises `DoubleDriveMismatch` if the results differ (default: the ``FSM_DOUBLE_DRIVE``
    environment variable, warned about when set). ``blocking_threads``: how many blocking
    callbacks (``blocking = True``, see `fsm.blocking`) may run at once, each on a thread.
    ``observer`` hears of every start and every step, for metrics and tracing (see
    `fsm.observer`; `fsm.telemetry.otel.OpenTelemetry` is one); without one a step pays
    nothing for it.
    """

    def __init__(
        self,
        store: Store,
        services: S = None,  # type: ignore[assignment]
        *,
        kinds: Iterable[Any] = (),
        registry: Registry | None = None,
        retry: RetryPolicy = SEED_POLICY,
        step_timeout: float | None = DEFAULT_STEP_TIMEOUT,
        redelivery_window: float = DEFAULT_REDELIVERY_WINDOW,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_commit: Callable[[str, LogEntry], None] | None = None,
        double_drive: bool | None = None,
        owner: str | None = None,
        blocking_threads: int = DEFAULT_BLOCKING_THREADS,
        observer: Observer | None = None,
    ) -> None:
        self.store = store
        self.services = services
        self.registry = registry if registry is not None else Registry()
        for kind in kinds:
            self.registry.register(kind)
        self.retry = retry
        if step_timeout is not None and not 0 < step_timeout < math.inf:
            raise ValueError(f"step_timeout must be seconds > 0 (or None), got {step_timeout}")
        if not redelivery_window >= 0:  # also refuses NaN
            raise ValueError(f"redelivery_window must be seconds >= 0, got {redelivery_window}")
        self.step_timeout = step_timeout
        self.redelivery_window = redelivery_window
        self.clock = clock if clock is not None else store.clock
        self.sleep = sleep
        self.on_commit = on_commit
        self.observer = observer
        if double_drive is None:
            double_drive = _env_flag(DOUBLE_DRIVE_ENV)
            if double_drive:
                warn_armed(DOUBLE_DRIVE_ENV, os.environ[DOUBLE_DRIVE_ENV])
        self.double_drive = double_drive
        self.owner = owner or new_owner()
        self.threads = BlockingPool(blocking_threads)  # blocking callbacks (fsm.blocking)
        self.stopping = False
        self.naps = Naps()  # the drives sleeping through a park, for notify and stop to wake
        self.turns = Turns(TURN)  # starts let through per turn of the loop (fsm.executor.turns)
        self._driving: dict[str, Drive] = {}
        self.controls = Controls(
            store,
            registry=self.registry,
            clock=lambda: self.clock(),
            owner=self.owner,
            driving=self._driving,
            heard=self._heard,
        )
        """The operator's controls over this store's actions (`fsm.Controls`), with this
        executor's kinds, clock and lease owner; an action it is driving counts as busy."""

    def _heard(self, action_id: str) -> None:
        """An event reached the inbox of ``action_id``: a drive of it here reads it at its
        next step boundary, and wakes from a nap."""
        drive = self._driving.get(action_id)
        if drive is not None:
            drive.heard()
        self.naps.wake(action_id)

    def hear(self, counts: Mapping[str, int]) -> None:
        """Pending events counted on the rows of the actions being driven (a worker reads them
        with each lease renewal): a drive that did not know of them (sent from another
        process) reads its inbox at its next step boundary."""
        for action_id, count in counts.items():
            drive = self._driving.get(action_id)
            if drive is not None and count > drive.pending:
                drive.pending = count

    @property
    def driving(self) -> frozenset[str]:
        """The ids this executor is driving right now (the leases a worker keeps renewing)."""
        return frozenset(self._driving)

    # -- public API -----------------------------------------------------------------------

    async def start(
        self, action: Action[S], *, resources: Sequence[str] = (), again: bool = False
    ) -> StartResult:
        """Persist ``action`` as a new live action holding ``resources``, in one transaction
        (through the store's committer: the event loop does not wait for the commit).

        Idempotent: if an action of the same kind is live with this id, nothing changes
        (`StartStatus.LIVE`). If an incarnation of this id *ended* within the redelivery
        window, the start is taken as a re-delivery of the same request: nothing runs again,
        and the result carries the kept outcome (`StartStatus.ENDED`). ``again=True`` says
        the caller means a new incarnation of an ended id; its steps get new idempotency
        keys. The result is true only when a new incarnation started. Raises
        `InvalidActionId`, `KindMismatch`, `ResourceConflict`, or `KindError` when the
        action cannot be stored.
        """
        return (await self._start(action, resources, again))[0]

    async def _start(
        self,
        action: Action[S],
        resources: Sequence[str] = (),
        again: bool = False,
        claim: bool = False,
    ) -> tuple[StartResult, Claimed | None]:
        """`start`, and with ``claim`` the new row created already claimed by this executor
        (`Store.insert`'s ``lease``): then the row as claimed, ready to drive."""
        await self.turns.take()
        action_id = check_id(action.id)
        codec = self.registry.of(action)
        state, payload = codec.dump(action)
        text = payload.decode()
        now = self.clock()
        incarnation = new_incarnation()
        lease = (self.owner, now + self.store.lease_ttl) if claim else None
        found = await self.store.insert_soon(
            action_id,
            codec.name,
            state,
            codec.version,
            text,
            resources,
            now,
            incarnation=incarnation,
            ended_since=None if again else now - self.redelivery_window,
            lease=lease,
        )
        if found is None:
            log.info(
                "action %s: started as %s in state %s",
                action_id,
                codec.name,
                state,
                extra={"action": action_id, "kind": codec.name, "state": state},
            )
            if self.observer is not None:
                self.observer.started(action_id, codec.name, state, incarnation)
            started = StartResult(action_id, StartStatus.STARTED, incarnation)
            if lease is None:
                return started, None
            return started, Claimed(
                action_id, codec.name, state, codec.version, text, 0, 0, None, now,
                CLAIMED_EPOCH, lease[1], incarnation, None, False,
            )  # fmt: skip
        kind = found.kind if isinstance(found, KeptOutcome) else found
        if kind != codec.name:
            where = "an ended" if isinstance(found, KeptOutcome) else "a live"
            raise KindMismatch(
                f"action id {action_id!r} already belongs to {where} {kind!r} action, "
                f"not {codec.name!r}; pick another id"
            )
        if isinstance(found, KeptOutcome):
            log.info(
                "action %s: ended (%s) at %.0f; start taken as a re-delivery (again=True "
                "starts a new incarnation)",
                action_id,
                found.status,
                found.finished_at,
            )
            return StartResult(action_id, StartStatus.ENDED, found.incarnation, found), None
        log.debug("action %s: already started, keeping the stored checkpoint", action_id)
        return StartResult(action_id, StartStatus.LIVE), None

    async def drive(
        self, target: str | Action[S], mode: DriveMode = DriveMode.UNTIL_PARK_OR_DONE
    ) -> DriveResult:
        """Drive one action until it parks or ends (or, with UNTIL_DONE, until it ends).

        ``target`` is an id, or an action object: then it is started first if it is new (an
        existing checkpoint always wins over the object's state), and if its id ended within
        the redelivery window the kept outcome is returned without running anything.
        """
        # Claiming is a coroutine of its own, done before the drive runs: a drive asleep in
        # a park holds this small frame and `Drive.run`'s, not the claim's too.
        one = await self._claim_drive(target)
        return one if isinstance(one, DriveResult) else await one.run(mode)

    async def drive_claimed(
        self, claimed: Claimed, mode: DriveMode = DriveMode.UNTIL_PARK_OR_DONE
    ) -> DriveResult:
        """Drive an action whose lease this executor already took (`Store.claim_due`)."""
        one = prepare(self, claimed, self._stepper)
        del claimed  # a parked drive keeps only what it stands on (the `Drive`), not the row
        return one if isinstance(one, DriveResult) else await one.run(mode)

    @property
    def _stepper(self) -> type[Drive] | None:
        """The drive class: `ObservedDrive` with an observer, chosen once per drive."""
        return None if self.observer is None else ObservedDrive

    async def _claim_drive(self, target: str | Action[S]) -> Drive | DriveResult:
        """``target``'s drive, claimed and ready to run, or the result that says why not."""
        if isinstance(target, str):
            action_id = target
        else:
            # A new action is created already claimed: its drive commits once to start
            started, claimed = await self._start(target, claim=True)
            if claimed is not None:
                return prepare(self, claimed, self._stepper)
            if started.outcome is not None:
                return DriveResult.of_outcome(started.outcome)
            action_id = target.id
        if action_id in self._driving:
            log.debug("action %s: already being driven by this executor, skipping", action_id)
            return DriveResult(action_id, DriveStatus.BUSY)
        taken = why_not(await self.store.claim_soon(action_id, self.owner, self.clock()), action_id)
        if isinstance(taken, DriveStatus):
            return DriveResult(action_id, taken)
        return prepare(self, taken, self._stepper)

    def stop(self) -> None:
        """Graceful shutdown (as `Worker.stop`): every drive ends after the step it is running.

        The checkpoint is written as usual, the lease released, and the action left due (or
        waiting for its wake-up), so another driver picks it up. Sleeping drives wake now.
        """
        self.stopping = True
        self.naps.wake_all()

    async def notify(
        self, action_id: str, mode: DriveMode = DriveMode.UNTIL_PARK_OR_DONE
    ) -> DriveResult:
        """An external event concerns this action: mark it due and drive it now.

        If a driver holds the action right now, the mark keeps it due when that driver parks
        (a notify is never lost); a drive of this executor sleeping through a park wakes.
        """
        self.store.mark_due(action_id, self.clock())
        self.naps.wake(action_id)
        return await self.drive(action_id, mode)

    async def send(self, action_id: str, event: object, *, key: str) -> SendResult:
        """Send ``event`` (an instance of an attrs class) to the live action ``action_id``.

        Stored in the action's inbox in one transaction, deduplicated by ``key`` (a send
        repeating a key with the same event is a `SendStatus.DUPLICATE`, with another event
        refused), the action made due and the workers woken; the action is never driven
        here, so this needs no services. A step of a state whose row takes the event
        (``waiting.to(approved, on=Approved)``) consumes it in its checkpoint's transaction;
        until one does, it stays queued (unless the kind says ``unaccepted = "reject"`` or
        ``"drop"``). An event to an ended or unknown action is refused (`SendStatus.FINISHED`,
        `SendStatus.UNKNOWN`); see docs/events.md.
        """
        return await sending.send(self, action_id, event, key)

    async def update(self, action_id: str, change: Callable[[Action[S]], Action[S]]) -> Action[S]:
        """Change a live action's checkpoint from outside, under its lease.

        For what a user decides while an action waits (bark's "allow this send to exit"):
        ``change`` gets the stored action and returns the new one (same id); it is written as
        a step of its own (``via="update"`` in the log). The step sequence does not advance,
        so a step waiting to be retried keeps its idempotency key. Raises `ActionBusy` while a
        driver holds the action, `NoSuchAction` (a ``LookupError``) if there is no such live
        action.
        """
        return await update(self, action_id, change)

    async def delete(self, action_id: str) -> bool:
        """Manual clean-up: `Controls.stop` (``self.controls.stop``), kept under its old name.

        Releases the action's resources and removes its checkpoint, quarantined rows too; the
        end is kept as ``stopped``. Returns False if there is no such action; raises
        `ActionBusy` if a driver holds it right now.
        """
        try:
            self.controls.stop(action_id, by="Executor.delete")
        except NoSuchAction:
            return False
        return True

    async def inspect(self, action_id: str, *, history: int = 1000) -> ActionReport | None:
        """Everything about one action, in one read: its status (due, parked until when,
        waiting for a notify, running under whose lease until when, broken with which error,
        quarantined with which reason, or done, failed or stopped with its outcome), its
        checkpoint decoded by its kind (``action``; ``decode_error`` if it cannot be), its
        resources and its newest ``history`` steps. ``None`` if the id is unknown. See
        `fsm.ActionReport`; `Store.inspect` is the same without decoding."""
        report = self.store.inspect(action_id, history=history)
        return None if report is None else decode_report(self.registry, report)

    async def resume_all(
        self,
        mode: DriveMode = DriveMode.UNTIL_PARK_OR_DONE,
        *,
        concurrency: int = 1,
        keep_results: bool = False,
    ) -> ResumeReport:
        """Drive every live action once (the seed's sync), and report quarantined rows.

        Broken actions are driven too: a restart after a fix is the usual way they recover.
        The ids are read a page at a time, in id order (`RESUME_PAGE`, keyset pagination),
        and at most ``concurrency`` drives run at once. The report counts the drives by
        status and keeps in full only those that went wrong (`ResumeReport`), so memory holds
        a page of ids and the running drives, however many rows the table has;
        ``keep_results=True`` keeps every result too (`ResumeReport.results`).
        """
        found = pages(lambda after: self.store.live_ids_after(after, RESUME_PAGE), str)
        ids = (i for page in found for i in page)
        return await self._drive_many(ids, mode, concurrency, keep_results)

    async def run_due(
        self,
        mode: DriveMode = DriveMode.UNTIL_PARK_OR_DONE,
        *,
        concurrency: int = 1,
        keep_results: bool = False,
    ) -> ResumeReport:
        """Drive the actions whose wake-up time has passed (up to 1,000: a worker's batch),
        earliest first; reported as `resume_all` reports."""
        ids = self.store.due_ids(self.clock())
        return await self._drive_many(ids, mode, concurrency, keep_results)

    async def _drive_many(
        self, ids: Iterable[str], mode: DriveMode, concurrency: int, keep_results: bool
    ) -> ResumeReport:
        tally = Tally(keep_results=keep_results)
        await drive_many(self.drive, ids, mode, concurrency, tally)
        kept = fsm.results.KEPT_FAILURES
        set_aside = self.store.quarantined(limit=kept + 1)
        omitted = self.store.count_quarantined() - kept if len(set_aside) > kept else 0
        return tally.report(tuple(set_aside[:kept]), omitted)
