"""The drive loop: the seed's executor, with its state on the row instead of in memory.

One drive claims the action (a lease on its row), then loops: run one step, turn its result
or its exception into an outcome, persist that outcome in one transaction, and go on or
return as the outcome and the `DriveMode` say. Differences from the seed, all deliberate:

* ``attempts``, ``last_error`` and ``wake_at`` live on the row, so backoff and wake-ups
  survive a restart and `run_due` finds due actions with one indexed query.
* The per-action lock is the row's lease, so it also holds across processes; a lease held by
  a certainly dead process (same host, boot and PID namespace) is taken over at once.
* Resources change in the checkpoint's transaction and are released with the row.
* Each step has an idempotency key, ``<id>~<incarnation>.<seq>``: ``seq`` counts checkpoint
  changes, the incarnation is minted at every start, so a key is never seen twice.
* Three kinds of failure end three ways: a rejection follows the kind's route; a transient
  error is retried with backoff; an error that means the kind's code is wrong parks the
  action as *broken* (visible, budget untouched) until a fix and a notify. Never a hot loop.
* The end of an action is kept (`Store.outcome`), so a start delivered again is recognised.
* Rows that cannot be read are quarantined and reported; the other actions keep running.

The store is synchronous and runs on the event loop's thread: a SQLite step commit takes
tens of microseconds (WAL, synchronous=NORMAL), less than a hop to a worker thread would cost.
``benchmarks/step.py`` measures both the step cost and the longest stall it causes other tasks.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Generic

import attrs

from fsm.codec import KindCodec
from fsm.errors import (
    ActionBusy,
    DecodeError,
    DoubleDriveMismatch,
    KindError,
    KindMismatch,
    LeaseLost,
    Rejected,
    StepTimeout,
    UnknownKind,
)
from fsm.failures import broken_text, error_text, with_cause
from fsm.ids import check_id, is_valid_id, new_incarnation
from fsm.protocol import (
    Action,
    Done,
    DriveMode,
    Failed,
    MaybeAwaitable,
    Next,
    Outcome,
    Park,
    S,
    StepContext,
)
from fsm.registry import Registry
from fsm.results import DriveResult, DriveStatus, ResumeReport, StartResult, StartStatus
from fsm.retry import SEED_POLICY, RetryPolicy
from fsm.store import Bookkeeping, Claimed, ClaimMiss, KeptOutcome, LogEntry, Store, new_owner
from fsm.testing.faults import DOUBLE_DRIVE_ENV, warn_armed

log = logging.getLogger(__name__)

RUN_NOW = 0.0
"""``wake_at`` of an action between two steps of a drive: due at once if the drive dies.

A constant rather than the current time, so consecutive steps leave the ``wake_at`` index
untouched (one less page written per step)."""

_YIELD_AFTER = 0.002
"""Seconds a drive may hold the event loop before it yields once to other tasks."""

DEFAULT_STEP_TIMEOUT = 300.0
"""Seconds an async step may run before it is cancelled, unless its state or kind says."""

DEFAULT_REDELIVERY_WINDOW = 7 * 24 * 3600.0
"""Seconds after its end during which a start of the same id is taken as a re-delivery."""


@attrs.define
class _Cursor:
    """Where a drive stands: the checkpoint and bookkeeping as last written, and the action."""

    id: str
    epoch: int
    incarnation: str
    state: str
    payload: str
    seq: int
    row: Bookkeeping
    action: Action[Any]
    steps: int = 0


@attrs.frozen
class _Handled:
    """A step's exception turned into an outcome by the action's own handler."""

    via: str
    outcome: Outcome
    attempts: int
    ctx: StepContext[Any]
    error: BaseException
    routed: bool
    """True when the outcome follows a route (a rejection, a spent budget), not a backoff."""


async def _advance(action: Action[Any], ctx: StepContext[Any], timeout: float | None) -> Outcome:
    """One call of ``advance``, awaited (under ``timeout``) if needed, with its result checked."""
    result = action.advance(ctx)
    if inspect.isawaitable(result):
        outcome = await _within(result, timeout)
    else:
        outcome = result
    _check_outcome(type(action).__name__ + ".advance", outcome, ctx.action_id)
    return outcome


async def _within(awaitable: Awaitable[Outcome], timeout: float | None) -> Outcome:
    """Await a step; past ``timeout`` it is cancelled and `StepTimeout` raised (transient)."""
    if timeout is None:
        return await awaitable
    scope = asyncio.timeout(timeout)
    try:
        async with scope:
            return await awaitable
    except TimeoutError:
        if scope.expired():
            raise StepTimeout(f"step ran past its {timeout:g}s timeout and was cancelled") from None
        raise


def _check_outcome(what: str, outcome: object, action_id: str) -> None:
    if not isinstance(outcome, Next | Park | Done | Failed):
        raise KindError(f"{what} returned {outcome!r}; expected Next, Park, Done or Failed")
    if isinstance(outcome, Park) and outcome.wake_after is not None:
        after = outcome.wake_after
        if not (isinstance(after, int | float) and 0 <= after < math.inf):
            raise KindError(
                f"{what} parked with wake_after={after!r}; expected seconds >= 0 (finite), "
                "or None to wait for a notify"
            )
    if isinstance(outcome, Next | Park) and outcome.state.id != action_id:
        raise KindError(
            f"{what} changed the action id from {action_id!r} to {outcome.state.id!r}; "
            "ids must be stable"
        )


def _describe(codec: KindCodec, outcome: Outcome) -> str:
    """An outcome as text two runs can be compared by: its kind, checkpoint or end."""
    if isinstance(outcome, Next | Park):
        state, payload = codec.dump(outcome.state)
        return f"{type(outcome).__name__}({state}, {payload.decode()})"
    if isinstance(outcome, Failed):
        return f"Failed({outcome.state}, {error_text(outcome.error)})"
    return f"Done({outcome.state})"


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


class _Adapter(logging.LoggerAdapter[logging.Logger]):
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"action {self.extra['action_id'] if self.extra else '?'}: {msg}", kwargs


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
    environment variable, warned about when set).
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
        self.clock = clock if clock is not None else store.now
        self.sleep = sleep
        self.on_commit = on_commit
        if double_drive is None:
            double_drive = _env_flag(DOUBLE_DRIVE_ENV)
            if double_drive:
                warn_armed(DOUBLE_DRIVE_ENV, os.environ[DOUBLE_DRIVE_ENV])
        self.double_drive = double_drive
        self.owner = owner or new_owner()
        self.stopping = False
        self._driving: set[str] = set()
        self._wakers: dict[str, asyncio.Event] = {}

    @property
    def driving(self) -> frozenset[str]:
        """The ids this executor is driving right now (the leases a worker keeps renewing)."""
        return frozenset(self._driving)

    # -- public API -----------------------------------------------------------------------

    async def start(
        self, action: Action[S], *, resources: Sequence[str] = (), again: bool = False
    ) -> StartResult:
        """Persist ``action`` as a new live action holding ``resources``, in one transaction.

        Idempotent: if an action of the same kind is live with this id, nothing changes
        (`StartStatus.LIVE`). If an incarnation of this id *ended* within the redelivery
        window, the start is taken as a re-delivery of the same request: nothing runs again,
        and the result carries the kept outcome (`StartStatus.ENDED`). ``again=True`` says
        the caller means a new incarnation of an ended id; its steps get new idempotency
        keys. The result is true only when a new incarnation started. Raises
        `InvalidActionId`, `KindMismatch`, `ResourceConflict`, or `KindError` when the
        action cannot be stored.
        """
        action_id = check_id(action.id)
        codec = self.registry.of(action)
        state, payload = codec.dump(action)
        now = self.clock()
        incarnation = new_incarnation()
        found = self.store.insert(
            action_id,
            codec.name,
            state,
            codec.version,
            payload.decode(),
            resources,
            now,
            incarnation=incarnation,
            ended_since=None if again else now - self.redelivery_window,
        )
        if found is None:
            log.info("action %s: started as %s in state %s", action_id, codec.name, state)
            return StartResult(action_id, StartStatus.STARTED, incarnation)
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
            return StartResult(action_id, StartStatus.ENDED, found.incarnation, found)
        log.debug("action %s: already started, keeping the stored checkpoint", action_id)
        return StartResult(action_id, StartStatus.LIVE)

    async def drive(
        self, target: str | Action[S], mode: DriveMode = DriveMode.UNTIL_PARK_OR_DONE
    ) -> DriveResult:
        """Drive one action until it parks or ends (or, with UNTIL_DONE, until it ends).

        ``target`` is an id, or an action object: then it is started first if it is new (an
        existing checkpoint always wins over the object's state), and if its id ended within
        the redelivery window the kept outcome is returned without running anything.
        """
        if isinstance(target, str):
            action_id = target
        else:
            started = await self.start(target)
            if started.outcome is not None:
                return DriveResult.of_outcome(started.outcome)
            action_id = target.id
        if action_id in self._driving:
            log.debug("action %s: already being driven by this executor, skipping", action_id)
            return DriveResult(action_id, DriveStatus.BUSY)
        claimed = self.store.claim(action_id, self.owner, self.clock())
        if isinstance(claimed, str):
            if claimed is ClaimMiss.BUSY:
                log.debug("action %s: already being driven, skipping", action_id)
            return DriveResult(action_id, DriveStatus(claimed))
        return await self.drive_claimed(claimed, mode)

    async def drive_claimed(
        self, claimed: Claimed, mode: DriveMode = DriveMode.UNTIL_PARK_OR_DONE
    ) -> DriveResult:
        """Drive an action whose lease this executor already took (`Store.claim_due`)."""
        self._driving.add(claimed.id)
        try:
            return await self._run(claimed, mode)
        except BaseException:
            self._let_go(claimed.id, claimed.epoch)
            raise
        finally:
            self._driving.discard(claimed.id)

    def stop_after_current_steps(self) -> None:
        """Graceful shutdown: every drive ends after the step it is running.

        The checkpoint is written as usual, the lease released, and the action left due (or
        waiting for its wake-up), so another driver picks it up. Sleeping drives wake now.
        """
        self.stopping = True
        for waker in self._wakers.values():
            waker.set()

    async def notify(
        self, action_id: str, mode: DriveMode = DriveMode.UNTIL_PARK_OR_DONE
    ) -> DriveResult:
        """An external event concerns this action: mark it due and drive it now.

        If a driver holds the action right now, the mark keeps it due when that driver parks
        (a notify is never lost); a drive of this executor sleeping through a park wakes.
        """
        self.store.mark_due(action_id, self.clock())
        waker = self._wakers.get(action_id)
        if waker is not None:
            waker.set()
        return await self.drive(action_id, mode)

    async def update(self, action_id: str, change: Callable[[Action[S]], Action[S]]) -> Action[S]:
        """Change a live action's checkpoint from outside, under its lease.

        For what a user decides while an action waits (bark's "allow this send to exit"):
        ``change`` gets the stored action and returns the new one (same id); it is written as
        a step of its own (``via="update"`` in the log). The step sequence does not advance,
        so a step waiting to be retried keeps its idempotency key. Raises `ActionBusy` while a
        driver holds the action, ``LookupError`` if there is no such live action.
        """
        if action_id in self._driving:
            raise ActionBusy(f"action {action_id} is being driven; update it once it parks")
        now = self.clock()
        claimed = self.store.claim(action_id, self.owner, now)
        if claimed is ClaimMiss.BUSY:
            raise ActionBusy(f"action {action_id} is being driven; update it once it parks")
        if isinstance(claimed, str):
            raise LookupError(f"no live action {action_id!r} to update ({claimed})")
        try:
            decoded = self._decode(claimed)
            if isinstance(decoded, str):
                raise DecodeError(f"action {action_id}: {decoded}")
            codec, action = decoded
            new = change(action)
            if new.id != action_id:
                raise KindError(f"update changed the action id to {new.id!r}; ids must be stable")
            state, payload = codec.dump(new)
            entry = LogEntry(
                codec.name, claimed.seq, claimed.state, state, "park", "update", 0, None, 0.0
            )
            was = claimed.bookkeeping
            self.store.write(
                action_id,
                claimed.epoch,
                state=state,
                payload=payload.decode(),
                seq=claimed.seq,
                was=was,
                new=attrs.evolve(was, version=codec.version, lease_expires=None),
                acquired=(),
                released=(),
                entry=entry,
                now=now,
            )
        except BaseException:
            self._let_go(action_id, claimed.epoch)
            raise
        log.info("action %s: updated from outside", action_id)
        return new

    async def stop(self, action_id: str) -> bool:
        """Manual clean-up: release the action's resources and remove its checkpoint.

        Works on quarantined rows too. The end is kept as ``stopped``. Returns False if there
        is no such action; raises `ActionBusy` if a driver holds it right now.
        """
        now = self.clock()
        if action_id in self._driving:
            raise ActionBusy(f"action {action_id} is being driven; stop it once it parks")
        claimed = self.store.claim(action_id, self.owner, now)
        if claimed is ClaimMiss.MISSING:
            return False
        if claimed is ClaimMiss.BUSY:
            raise ActionBusy(f"action {action_id} is being driven; stop it once it parks")
        if claimed is ClaimMiss.QUARANTINED:
            self.store.remove_quarantined(action_id)
            log.warning("action %s: quarantined row removed by stop", action_id)
            return True
        assert isinstance(claimed, Claimed)
        entry = LogEntry(
            claimed.kind, claimed.seq, claimed.state, None, "stopped", "stop", 0, None, 0.0
        )
        self.store.finish(
            action_id,
            claimed.epoch,
            entry,
            now,
            status="stopped",
            state=claimed.state,
            error="stopped by Executor.stop",
            cause=claimed.cause,
        )
        log.info("action %s: stopped, resources released", action_id)
        return True

    async def resume_all(
        self, mode: DriveMode = DriveMode.UNTIL_PARK_OR_DONE, *, concurrency: int = 1
    ) -> ResumeReport:
        """Drive every live action once (the seed's sync), and report quarantined rows.

        Broken actions are driven too: a restart after a fix is the usual way they recover.
        """
        return await self._drive_many(self.store.live_ids(), mode, concurrency)

    async def run_due(
        self, mode: DriveMode = DriveMode.UNTIL_PARK_OR_DONE, *, concurrency: int = 1
    ) -> ResumeReport:
        """Drive the actions whose wake-up time has passed."""
        return await self._drive_many(self.store.due_ids(self.clock()), mode, concurrency)

    async def _drive_many(
        self, ids: Sequence[str], mode: DriveMode, concurrency: int
    ) -> ResumeReport:
        gate = asyncio.Semaphore(max(1, concurrency))

        async def one(action_id: str) -> DriveResult:
            async with gate:
                try:
                    return await self.drive(action_id, mode)
                except Exception as exc:  # a store error for one action must not stop the rest
                    log.exception("action %s: drive failed", action_id)
                    return DriveResult(action_id, DriveStatus.ERROR, error=exc)

        results = await asyncio.gather(*(one(i) for i in ids))
        return ResumeReport(tuple(results), tuple(self.store.quarantined()))

    # -- the loop -------------------------------------------------------------------------

    def _decode(self, claimed: Claimed) -> tuple[KindCodec, Action[S]] | str:
        if not is_valid_id(claimed.id):
            return f"id {claimed.id!r} breaks the key rules"
        codec = self.registry.get(claimed.kind)
        try:
            action = codec.load(claimed.state, claimed.version, claimed.payload)
        except DecodeError as exc:
            return str(exc)
        if action.id != claimed.id:
            return f"payload belongs to action {action.id!r}, not to row {claimed.id!r}"
        return codec, action

    def _foreign(self, claimed: Claimed) -> str | None:
        """Why this executor must leave the row to another driver, if it must.

        A kind it does not know, or a row written by a newer version of the kind (a rolling
        deploy, or one worker pool per team), is not a bad row: it is left as it is.
        """
        try:
            codec = self.registry.get(claimed.kind)
        except UnknownKind as exc:
            return str(exc)
        if claimed.version > codec.version:
            return (
                f"row of kind {claimed.kind!r} is v{claimed.version}, newer than this code "
                f"(v{codec.version})"
            )
        return None

    async def _run(self, claimed: Claimed, mode: DriveMode) -> DriveResult:
        action_id = claimed.id
        adapter = _Adapter(log, {"action_id": action_id})
        foreign = self._foreign(claimed)
        if foreign is not None:
            adapter.info("left for another driver: %s", foreign)
            self._let_go(action_id, claimed.epoch)
            return DriveResult(action_id, DriveStatus.SKIPPED, claimed.state, foreign)
        decoded = self._decode(claimed)
        if isinstance(decoded, str):
            adapter.error("quarantined: %s", decoded)
            self.store.quarantine(action_id, decoded)
            return DriveResult(action_id, DriveStatus.QUARANTINED, claimed.state, decoded)
        codec, action = decoded
        cur = _Cursor(
            action_id,
            claimed.epoch,
            claimed.incarnation,
            claimed.state,
            claimed.payload,
            claimed.seq,
            claimed.bookkeeping,
            action,
        )
        held_since = time.perf_counter()
        while True:
            if self.stopping:
                adapter.info("stopping: the lease is released, the action stays as written")
                self._let_go(action_id, cur.epoch)
                return DriveResult(action_id, DriveStatus.PARKED, cur.state, None, cur.steps)
            result, sleep_for = await self._one_step(codec, cur, mode, adapter)
            if result is not None:
                return result
            if sleep_for is not None:
                adapter.debug("parked; sleeping %.3fs before the next attempt", sleep_for)
                await self._nap(action_id, sleep_for)
                held_since = time.perf_counter()
            elif time.perf_counter() - held_since > _YIELD_AFTER:
                # Synchronous steps never suspend: let other actions' effects run.
                await asyncio.sleep(0)
                held_since = time.perf_counter()

    async def _one_step(
        self,
        codec: KindCodec,
        cur: _Cursor,
        mode: DriveMode,
        adapter: logging.LoggerAdapter[logging.Logger],
    ) -> tuple[DriveResult | None, float | None]:
        """Run one step and persist what it led to.

        Returns the drive's result when the drive ends here, else how long to sleep (None:
        go on at once).
        """
        now = self.clock()
        t0 = time.perf_counter()
        ctx = self._context(cur, now, adapter)
        via = "step"
        cause: BaseException | None = None
        routed = False
        try:
            outcome = await _advance(cur.action, ctx, self._timeout(cur.action))
            if self.double_drive:
                outcome = await self._drive_again(codec, outcome, cur, now, adapter)
            encoded = _encode(codec, outcome)
        except DoubleDriveMismatch as exc:
            # A step that is not idempotent is a bug of the kind: parked as broken (so a
            # worker does not pick it up again at once), then reported loudly.
            self._park_broken(codec, cur, exc, now, t0, adapter)
            raise
        except Exception as exc:
            if not isinstance(exc, Rejected) and cur.action.policy(self.retry).is_broken(exc):
                return self._park_broken(codec, cur, exc, now, t0, adapter), None
            handled = await self._handle(exc, codec, cur, now, adapter)
            if isinstance(handled, BaseException):
                return self._park_broken(codec, cur, handled, now, t0, adapter), None
            via, outcome, ctx, cause, routed = (
                handled.via,
                handled.outcome,
                handled.ctx,
                handled.error,
                handled.routed,
            )
            attempts = handled.attempts
            try:
                encoded = _encode(codec, outcome)
            except Exception as enc_exc:
                return self._park_broken(codec, cur, enc_exc, now, t0, adapter), None
        else:
            attempts = cur.row.attempts
        duration = time.perf_counter() - t0
        cur.steps += 1
        cause_text = error_text(cause) if routed else cur.row.cause
        if isinstance(outcome, Done | Failed):
            return self._finish(
                codec, cur, outcome, via, attempts, cause, cause_text, duration, adapter
            ), None
        assert encoded is not None
        return self._commit(
            codec,
            cur,
            outcome,
            encoded,
            ctx,
            via,
            attempts,
            cause,
            cause_text,
            duration,
            now,
            mode,
            adapter,
        )

    def _finish(
        self,
        codec: KindCodec,
        cur: _Cursor,
        outcome: Done | Failed,
        via: str,
        attempts: int,
        cause: BaseException | None,
        cause_text: str | None,
        duration: float,
        adapter: logging.LoggerAdapter[logging.Logger],
    ) -> DriveResult:
        """Terminal: delete the row, keep the outcome, and report the terminal state."""
        failed = isinstance(outcome, Failed)
        error = with_cause(outcome.error, cause_text) if isinstance(outcome, Failed) else None
        end_state = outcome.state or cur.state
        entry = LogEntry(
            codec.name,
            cur.seq,
            cur.state,
            None,
            "failed" if failed else "done",
            via,
            attempts,
            error_text(error or cause),
            duration,
        )
        try:
            self.store.finish(
                cur.id,
                cur.epoch,
                entry,
                self.clock(),
                status="failed" if failed else "done",
                state=end_state,
                error=error_text(error),
                cause=cause_text,
            )
        except LeaseLost as exc:
            adapter.warning("lost the lease before finishing: %s", exc)
            return DriveResult(cur.id, DriveStatus.LEASE_LOST, cur.state, exc, cur.steps)
        except Exception as exc:
            # The end could not be written: nothing of it happened. The step is retried.
            adapter.error("could not write the end of the action: %s", exc)
            return self._record_failure(cur, exc, adapter)
        self._committed(cur.id, entry)
        if failed:
            adapter.info("failed in %s: %s", end_state, error_text(error))
            return DriveResult(cur.id, DriveStatus.FAILED, end_state, error, cur.steps, cause_text)
        adapter.info("done in %s after %d step(s)", end_state, cur.steps)
        return DriveResult(cur.id, DriveStatus.DONE, end_state, None, cur.steps, cause_text)

    def _commit(
        self,
        codec: KindCodec,
        cur: _Cursor,
        outcome: Next | Park,
        encoded: tuple[str, str],
        ctx: StepContext[S],
        via: str,
        attempts: int,
        cause: BaseException | None,
        cause_text: str | None,
        duration: float,
        now: float,
        mode: DriveMode,
        adapter: logging.LoggerAdapter[logging.Logger],
    ) -> tuple[DriveResult | None, float | None]:
        """Persist a `Next` or `Park` with its resource changes; say whether to go on."""
        new_state, new_payload = encoded
        step_seq = cur.seq
        seq = cur.seq
        row = cur.row
        ttl = self.store.lease_ttl
        if isinstance(outcome, Next):
            attempts = 0
            seq += 1
            # Due at once if the drive dies here; a due wake-up need not be rewritten.
            wake_at = row.wake_at
            if wake_at is None or wake_at > now:
                wake_at = RUN_NOW
            error: BaseException | None = None
            sleep_for: float | None = None
            returning = self.stopping
        else:
            if new_state != cur.state or new_payload != cur.payload:
                seq += 1
            error = outcome.error
            wake_after = outcome.wake_after
            wake_at = None if wake_after is None else now + wake_after
            sleep_for = (
                wake_after if mode is DriveMode.UNTIL_DONE and wake_after is not None else None
            )
            returning = sleep_for is None or self.stopping
        last_error = error_text(error or cause)
        entry = LogEntry(
            codec.name,
            step_seq,
            cur.state,
            new_state,
            "next" if isinstance(outcome, Next) else "park",
            via,
            attempts,
            last_error,
            duration,
        )
        write_now = self.clock()
        lease = row.lease_expires
        if returning:
            lease = None
        elif sleep_for is not None:
            lease = (wake_at or write_now) + ttl
        elif lease is None or lease - write_now < ttl / 2:
            lease = write_now + ttl  # renewed when half of it is gone
        new_row = Bookkeeping(
            codec.version, attempts, last_error, wake_at, lease, False, cause_text
        )
        acquired, released = ctx.resource_changes()
        try:
            self.store.write(
                cur.id,
                cur.epoch,
                state=new_state,
                payload=new_payload,
                seq=seq,
                was=row,
                new=new_row,
                acquired=acquired,
                released=released,
                entry=entry,
                now=write_now,
            )
        except LeaseLost as exc:
            adapter.warning("%s; dropping the action", exc)
            return DriveResult(cur.id, DriveStatus.LEASE_LOST, cur.state, exc, cur.steps), None
        except Exception as exc:
            # Nothing of this step was written (a resource taken meanwhile, a database fault):
            # the step is retried from the stored checkpoint, under the same key, after backoff.
            adapter.error("could not write the checkpoint: %s", exc)
            return self._record_failure(cur, exc, adapter), None
        adapter.debug("%s -> %s (%s)", cur.state, new_state, entry.outcome)
        self._committed(cur.id, entry)
        cur.row = new_row
        cur.state, cur.payload, cur.seq = new_state, new_payload, seq
        cur.action = outcome.state
        if returning:
            if self.stopping:
                adapter.info("stopping after this step; the lease is released")
            return DriveResult(cur.id, DriveStatus.PARKED, cur.state, error, cur.steps), None
        return None, sleep_for

    def _park_broken(
        self,
        codec: KindCodec,
        cur: _Cursor,
        error: BaseException,
        now: float,
        t0: float,
        adapter: logging.LoggerAdapter[logging.Logger],
    ) -> DriveResult:
        """The kind's code failed: keep the checkpoint, mark the row broken, wait for a fix.

        The retry budget is untouched and the action never ends as failed; it has no
        wake-up, so only a notify (after the fix) or a resume drives it again. The step's
        key stays the same, so effects the failed run already made are deduplicated.
        """
        text = broken_text(error)
        adapter.error("%s", text.replace("\n", " | "))
        entry = LogEntry(
            codec.name,
            cur.seq,
            cur.state,
            cur.state,
            "broken",
            "step",
            cur.row.attempts,
            text,
            time.perf_counter() - t0,
        )
        new_row = attrs.evolve(
            cur.row, last_error=text, wake_at=None, lease_expires=None, broken=True
        )
        try:
            self.store.write(
                cur.id,
                cur.epoch,
                state=cur.state,
                payload=cur.payload,
                seq=cur.seq,
                was=cur.row,
                new=new_row,
                acquired=(),
                released=(),
                entry=entry,
                now=self.clock(),
            )
        except LeaseLost as exc:
            adapter.warning("%s; dropping the action", exc)
            return DriveResult(cur.id, DriveStatus.LEASE_LOST, cur.state, exc, cur.steps)
        except Exception as exc:
            adapter.error("could not mark the action broken: %s", exc)
            self._fallback(cur, cur.row.attempts, text, None, True, now, adapter)
        return DriveResult(cur.id, DriveStatus.BROKEN, cur.state, error, cur.steps)

    def _record_failure(
        self,
        cur: _Cursor,
        error: BaseException,
        adapter: logging.LoggerAdapter[logging.Logger],
    ) -> DriveResult:
        """A step's write failed: count the attempt and back off, keeping the checkpoint."""
        attempts = cur.row.attempts + 1
        now = self.clock()
        delay = cur.action.policy(self.retry).delay(attempts)
        text = error_text(f"could not write the checkpoint: {error_text(error)}")
        assert text is not None
        self._fallback(cur, attempts, text, now + delay, False, now, adapter)
        return DriveResult(cur.id, DriveStatus.ERROR, cur.state, error, cur.steps)

    def _fallback(
        self,
        cur: _Cursor,
        attempts: int,
        text: str,
        wake_at: float | None,
        broken: bool,
        now: float,
        adapter: logging.LoggerAdapter[logging.Logger],
    ) -> None:
        try:
            self.store.record_failure(
                cur.id,
                cur.epoch,
                attempts=attempts,
                error=text,
                wake_at=wake_at,
                broken=broken,
                now=now,
            )
        except Exception as exc:  # the database is gone: the lease runs out, then a retry
            adapter.warning("could not record the failure either (%s); the lease runs out", exc)
            self._let_go(cur.id, cur.epoch)

    async def _drive_again(
        self,
        codec: KindCodec,
        first: Outcome,
        cur: _Cursor,
        now: float,
        adapter: logging.LoggerAdapter[logging.Logger],
    ) -> Outcome:
        """Double-drive mode: run the step again from the same state; the results must agree.

        As in bark's checker, a first run that parks is exempt (the second run is then a
        legitimate later re-drive), and the second result is the one used. A transient error
        in the second run is just that, a transient error of the step; a rejection after a
        first run that went on means the step is not idempotent.
        """
        ctx = self._context(cur, now, adapter)
        again = codec.load(cur.state, cur.row.version, cur.payload)
        try:
            second = await _advance(again, ctx, self._timeout(again))
        except Rejected as exc:
            if not isinstance(first, Park):
                raise DoubleDriveMismatch(
                    f"action {ctx.action_id}: step {ctx.seq} gave {_describe(codec, first)} "
                    f"once and was rejected the second time ({exc}); it is not idempotent"
                ) from exc
            raise
        if not isinstance(first, Park) and _describe(codec, first) != _describe(codec, second):
            raise DoubleDriveMismatch(
                f"action {ctx.action_id}: step {ctx.seq} gave {_describe(codec, first)} once "
                f"and {_describe(codec, second)} the second time; it is not idempotent"
            )
        return second

    async def _handle(
        self,
        exc: Exception,
        codec: KindCodec,
        cur: _Cursor,
        now: float,
        adapter: logging.LoggerAdapter[logging.Logger],
    ) -> _Handled | BaseException:
        """Route a step's exception to on_rejection or on_retry, on the pre-step state.

        A handler that raises, or returns something that is not an outcome, is a bug of the
        kind: returned as the exception, for the caller to park the action as broken.
        """
        before: Action[S] = codec.load(cur.state, cur.row.version, cur.payload)
        attempts = cur.row.attempts
        ctx = self._context(cur, now, adapter)
        try:
            if isinstance(exc, Rejected):
                adapter.warning("rejected: %s", exc)
                via = "rejection"
                result: MaybeAwaitable = before.on_rejection(ctx, exc)
            else:
                attempts += 1
                ctx.attempts = attempts
                adapter.warning("transient error (attempt %d): %s", attempts, error_text(exc))
                via = "retry"
                result = before.on_retry(ctx, attempts, exc)
            outcome = await result if inspect.isawaitable(result) else result
            _check_outcome(f"the {via} handler of {type(before).__name__}", outcome, cur.id)
        except Exception as handler_exc:
            adapter.warning("%s handler failed, checkpoint left as it was: %s", via, handler_exc)
            return handler_exc
        routed = via == "rejection" or not (
            isinstance(outcome, Park) and outcome.state.state == cur.state
        )
        return _Handled(via, outcome, attempts, ctx, exc, routed)

    def _timeout(self, action: Action[S]) -> float | None:
        own = action.step_timeout()
        return own if own is not None else self.step_timeout

    async def _nap(self, action_id: str, seconds: float) -> None:
        """Sleep through a park, cut short by a notify of this action or by a stop."""
        waker = self._wakers[action_id] = asyncio.Event()
        try:
            sleeper = asyncio.ensure_future(self.sleep(seconds))
            woken = asyncio.ensure_future(waker.wait())
            _, pending = await asyncio.wait((sleeper, woken), return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
        finally:
            del self._wakers[action_id]

    def _context(
        self,
        cur: _Cursor,
        now: float,
        adapter: logging.LoggerAdapter[logging.Logger],
    ) -> StepContext[S]:
        store = self.store
        action_id = cur.id
        return StepContext(
            self.services,
            action_id,
            cur.seq,
            cur.row.attempts,
            now,
            self.retry,
            adapter,
            lambda: store.resources_of(action_id),
            store.holder_of,
            cur.incarnation,
        )

    def _committed(self, action_id: str, entry: LogEntry) -> None:
        """Call the ``on_commit`` hook. The step is committed; an exception from the hook
        ends the drive like a crash would (crash tests raise there on purpose): the lease is
        released and the action is due again."""
        if self.on_commit is not None:
            self.on_commit(action_id, entry)

    def _let_go(self, action_id: str, epoch: int) -> None:
        try:
            self.store.unclaim(action_id, epoch)
        except Exception as exc:  # the lease then expires on its own
            log.warning("action %s: could not release the lease: %s", action_id, exc)


def _encode(codec: KindCodec, outcome: Outcome) -> tuple[str, str] | None:
    """The checkpoint a `Next` or `Park` writes, encoded inside the step's error handling."""
    if isinstance(outcome, Next | Park):
        state, payload = codec.dump(outcome.state)
        return state, payload.decode()
    return None


__all__ = [
    "DEFAULT_REDELIVERY_WINDOW",
    "DEFAULT_STEP_TIMEOUT",
    "RUN_NOW",
    "DriveResult",
    "DriveStatus",
    "Executor",
    "ResumeReport",
    "StartResult",
    "StartStatus",
]
