"""The drive loop: the seed's executor, with its state on the row instead of in memory.

One drive claims the action (a lease on its row), then loops: run one step, turn its result
or its exception into an outcome, persist that outcome in one transaction, and go on or
return as the outcome and the `DriveMode` say. Differences from the seed, all deliberate:

* ``attempts``, ``last_error`` and ``wake_at`` live on the row, so backoff and wake-ups
  survive a restart and `run_due` finds due actions with one indexed query.
* The per-action lock is the row's lease, so it also holds across processes; a lease held by
  a certainly dead process (same host, boot and PID namespace) is taken over at once.
* Resources change in the checkpoint's transaction and are released with the row.
* Each step has an idempotency key, ``<id>.<seq>``, where ``seq`` counts checkpoint changes.
* Rows that cannot be read are quarantined and reported; the other actions keep running.

The store is synchronous and runs on the event loop's thread: a SQLite step commit takes
tens of microseconds (WAL, synchronous=NORMAL), less than a hop to a worker thread would cost.
``benchmarks/step.py`` measures both the step cost and the longest stall it causes other tasks.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import logging
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
    FsmError,
    KindMismatch,
    LeaseLost,
    Rejected,
    ResourceConflict,
    UnknownKind,
)
from fsm.ids import check_id, is_valid_id
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
from fsm.retry import SEED_POLICY, RetryPolicy
from fsm.store import Bookkeeping, Claimed, LogEntry, RowInfo, Store, new_owner

log = logging.getLogger(__name__)

DOUBLE_DRIVE_ENV = "FSM_DOUBLE_DRIVE"
"""Set to 1/true/yes to run every step twice and fail loudly if the two runs differ."""

RUN_NOW = 0.0
"""``wake_at`` of an action between two steps of a drive: due at once if the drive dies.

A constant rather than the current time, so consecutive steps leave the ``wake_at`` index
untouched (one less page written per step)."""

_YIELD_AFTER = 0.002
"""Seconds a drive may hold the event loop before it yields once to other tasks."""


class DriveStatus(enum.Enum):
    """How a drive ended."""

    DONE = "done"
    """The action finished successfully; its row and resources are gone."""
    FAILED = "failed"
    """The action finished with `Failed`; its row and resources are gone."""
    PARKED = "parked"
    """The action is waiting (for its wake-up time or a notify); its checkpoint is saved."""
    BUSY = "busy"
    """Another driver (task or process) holds the action; nothing was done."""
    MISSING = "missing"
    """No live action has this id (it may have finished already)."""
    QUARANTINED = "quarantined"
    """The row cannot be read; it is set aside with a reason (see `Store.quarantined`)."""
    ERROR = "error"
    """A handler raised, or the checkpoint could not be written; the row is as it was."""
    LEASE_LOST = "lease_lost"
    """Another driver claimed the action meanwhile; our write was refused and we stopped."""


@attrs.frozen
class DriveResult:
    """What one drive did. ``error`` is the park's error, the failure, or what went wrong."""

    id: str
    status: DriveStatus
    state: str | None = None
    error: BaseException | str | None = None
    steps: int = 0

    @property
    def ok(self) -> bool:
        """True when nothing went wrong: done, or parked without an error."""
        return self.status in (DriveStatus.DONE, DriveStatus.PARKED) and self.error is None


@attrs.frozen
class ResumeReport:
    """The result of `Executor.resume_all`: one result per live action, and the set-aside rows."""

    results: tuple[DriveResult, ...]
    quarantined: tuple[RowInfo, ...]

    def count(self, status: DriveStatus) -> int:
        return sum(1 for r in self.results if r.status is status)


async def _advance(action: Action[Any], ctx: StepContext[Any]) -> Outcome:
    """One call of ``advance``, awaited if needed, with its result checked."""
    result = action.advance(ctx)
    outcome = await result if inspect.isawaitable(result) else result
    if not isinstance(outcome, Next | Park | Done | Failed):
        raise TypeError(
            f"{type(action).__name__}.advance returned {outcome!r}; expected "
            "Next, Park, Done or Failed"
        )
    if isinstance(outcome, Next | Park) and outcome.state.id != ctx.action_id:
        raise FsmError(f"step changed the action id to {outcome.state.id!r}; ids must be stable")
    return outcome


def _describe(codec: KindCodec, outcome: Outcome) -> str:
    """An outcome as text two runs can be compared by: its kind and its checkpoint."""
    if isinstance(outcome, Next | Park):
        state, payload = codec.dump(outcome.state)
        return f"{type(outcome).__name__}({state}, {payload.decode()})"
    return type(outcome).__name__


def _error_text(error: BaseException | str | None) -> str | None:
    if error is None:
        return None
    if isinstance(error, str):
        return error
    return f"{type(error).__name__}: {error}"


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


class _Adapter(logging.LoggerAdapter[logging.Logger]):
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"action {self.extra['action_id'] if self.extra else '?'}: {msg}", kwargs


class Executor(Generic[S]):
    """Drives actions of the registered kinds against one store.

    ``services`` is handed to every step as ``ctx.services`` (bark's ``Wallet``).
    ``retry`` is the default backoff of `Action.on_retry`. ``clock`` (unix seconds; default
    `Store.now`, the database's clock) and ``sleep`` can be replaced in tests.
    ``on_commit(action_id, entry)`` is called after every committed step (progress displays,
    statistics, crash-test hooks). ``double_drive`` runs every step twice from the same state
    and raises `DoubleDriveMismatch` if the results differ (default: the ``FSM_DOUBLE_DRIVE``
    environment variable).
    """

    def __init__(
        self,
        store: Store,
        services: S = None,  # type: ignore[assignment]
        *,
        kinds: Iterable[Any] = (),
        registry: Registry | None = None,
        retry: RetryPolicy = SEED_POLICY,
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
        self.clock = clock if clock is not None else store.now
        self.sleep = sleep
        self.on_commit = on_commit
        self.double_drive = (
            double_drive if double_drive is not None else _env_flag(DOUBLE_DRIVE_ENV)
        )
        self.owner = owner or new_owner()
        self.stopping = False
        self._driving: set[str] = set()

    @property
    def driving(self) -> frozenset[str]:
        """The ids this executor is driving right now (the leases a worker keeps renewing)."""
        return frozenset(self._driving)

    # -- public API -----------------------------------------------------------------------

    async def start(self, action: Action[S], *, resources: Sequence[str] = ()) -> bool:
        """Persist ``action`` as a new live action holding ``resources``, in one transaction.

        Idempotent: returns False (and changes nothing) if an action of the same kind already
        has this id. Raises `InvalidActionId`, `KindMismatch` or `ResourceConflict`.
        """
        action_id = check_id(action.id)
        codec = self.registry.of(action)
        state, payload = codec.dump(action)
        existing = self.store.insert(
            action_id,
            codec.name,
            state,
            codec.version,
            payload.decode(),
            resources,
            self.clock(),
        )
        if existing is None:
            log.info("action %s: started as %s in state %s", action_id, codec.name, state)
            return True
        if existing != codec.name:
            raise KindMismatch(
                f"action id {action_id!r} already belongs to a live {existing!r} action, "
                f"not {codec.name!r}; pick another id"
            )
        log.debug("action %s: already started, keeping the stored checkpoint", action_id)
        return False

    async def drive(
        self, target: str | Action[S], mode: DriveMode = DriveMode.UNTIL_PARK_OR_DONE
    ) -> DriveResult:
        """Drive one action until it parks or ends (or, with UNTIL_DONE, until it ends).

        ``target`` is an id, or an action object: then it is started first if it is new; an
        existing checkpoint always wins over the object's state.
        """
        if isinstance(target, str):
            action_id = target
        else:
            await self.start(target)
            action_id = target.id
        if action_id in self._driving:
            log.debug("action %s: already being driven by this executor, skipping", action_id)
            return DriveResult(action_id, DriveStatus.BUSY)
        claimed = self.store.claim(action_id, self.owner, self.clock())
        if isinstance(claimed, str):
            if claimed == "busy":
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

        The checkpoint is written as usual, the lease released, and the action left due, so
        another driver picks it up at once.
        """
        self.stopping = True

    async def notify(
        self, action_id: str, mode: DriveMode = DriveMode.UNTIL_PARK_OR_DONE
    ) -> DriveResult:
        """An external event concerns this action: mark it due and drive it now."""
        self.store.mark_due(action_id, self.clock())
        return await self.drive(action_id, mode)

    async def update(self, action_id: str, change: Callable[[Action[S]], Action[S]]) -> Action[S]:
        """Change a live action's checkpoint from outside, under its lease.

        For what a user decides while an action waits (bark's "allow this send to exit"):
        ``change`` gets the stored action and returns the new one (same id); it is written as
        a step of its own (``via="update"`` in the log). Raises `ActionBusy` while a driver
        holds the action, ``LookupError`` if there is no such live action.
        """
        if action_id in self._driving:
            raise ActionBusy(f"action {action_id} is being driven; update it once it parks")
        now = self.clock()
        claimed = self.store.claim(action_id, self.owner, now)
        if claimed == "busy":
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
                raise FsmError(f"update changed the action id to {new.id!r}; ids must be stable")
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
                seq=claimed.seq + 1,
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

        Works on quarantined rows too. Returns False if there is no such action; raises
        `ActionBusy` if a driver holds it right now.
        """
        now = self.clock()
        if action_id in self._driving:
            raise ActionBusy(f"action {action_id} is being driven; stop it once it parks")
        claimed = self.store.claim(action_id, self.owner, now)
        if claimed == "missing":
            return False
        if claimed == "busy":
            raise ActionBusy(f"action {action_id} is being driven; stop it once it parks")
        if claimed == "quarantined":
            self.store.remove_quarantined(action_id)
            log.warning("action %s: quarantined row removed by stop", action_id)
            return True
        assert isinstance(claimed, Claimed)
        entry = LogEntry(
            claimed.kind, claimed.seq, claimed.state, None, "stopped", "stop", 0, None, 0.0
        )
        self.store.finish(action_id, claimed.epoch, entry, now)
        log.info("action %s: stopped, resources released", action_id)
        return True

    async def resume_all(
        self, mode: DriveMode = DriveMode.UNTIL_PARK_OR_DONE, *, concurrency: int = 1
    ) -> ResumeReport:
        """Drive every live action once (the seed's sync), and report quarantined rows."""
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
        try:
            codec = self.registry.get(claimed.kind)
        except UnknownKind as exc:
            return str(exc)
        try:
            action = codec.load(claimed.state, claimed.version, claimed.payload)
        except DecodeError as exc:
            return str(exc)
        if action.id != claimed.id:
            return f"payload belongs to action {action.id!r}, not to row {claimed.id!r}"
        return codec, action

    async def _run(self, claimed: Claimed, mode: DriveMode) -> DriveResult:
        action_id = claimed.id
        adapter = _Adapter(log, {"action_id": action_id})
        decoded = self._decode(claimed)
        if isinstance(decoded, str):
            adapter.error("quarantined: %s", decoded)
            self.store.quarantine(action_id, decoded)
            return DriveResult(action_id, DriveStatus.QUARANTINED, claimed.state, decoded)
        codec, action = decoded
        epoch = claimed.epoch
        seq = claimed.seq
        attempts = claimed.attempts
        state = claimed.state
        payload = claimed.payload
        steps = 0
        store = self.store
        ttl = store.lease_ttl
        row = claimed.bookkeeping
        held_since = time.perf_counter()

        while True:
            now = self.clock()
            t0 = time.perf_counter()
            ctx = self._context(action_id, seq, attempts, now, adapter)
            via = "step"
            cause: BaseException | None = None
            try:
                outcome = await _advance(action, ctx)
                if self.double_drive:
                    ctx = self._context(action_id, seq, attempts, now, adapter)
                    again = codec.load(state, row.version, payload)
                    outcome = await self._drive_again(codec, outcome, again, ctx)
            except DoubleDriveMismatch:
                self._let_go(action_id, epoch)
                raise
            except Exception as exc:
                handled = await self._handle(
                    exc, codec, action_id, state, row.version, payload, seq, attempts, now, adapter
                )
                if isinstance(handled, DriveResult):
                    self._let_go(action_id, epoch)
                    return attrs.evolve(handled, steps=steps)
                via, outcome, attempts, ctx, cause = handled

            duration = time.perf_counter() - t0
            steps += 1
            acquired, released = ctx.resource_changes()

            if isinstance(outcome, Done | Failed):
                failed = isinstance(outcome, Failed)
                error = outcome.error if isinstance(outcome, Failed) else None
                entry = LogEntry(
                    codec.name,
                    seq,
                    state,
                    None,
                    "failed" if failed else "done",
                    via,
                    attempts,
                    _error_text(error or cause),
                    duration,
                )
                try:
                    store.finish(action_id, epoch, entry, self.clock())
                except LeaseLost as exc:
                    adapter.warning("lost the lease before finishing: %s", exc)
                    return DriveResult(action_id, DriveStatus.LEASE_LOST, state, exc, steps)
                except Exception as exc:  # the seed logs clean-up errors and reports the outcome
                    adapter.warning("finished but could not delete the checkpoint: %s", exc)
                    self._let_go(action_id, epoch)
                else:
                    if self.on_commit is not None:
                        self.on_commit(action_id, entry)
                if failed:
                    adapter.info("failed: %s", _error_text(error))
                    return DriveResult(action_id, DriveStatus.FAILED, state, error, steps)
                adapter.info("done after %d step(s)", steps)
                return DriveResult(action_id, DriveStatus.DONE, state, None, steps)

            step_seq = seq
            new_state, new_bytes = codec.dump(outcome.state)
            new_payload = new_bytes.decode()
            if isinstance(outcome, Next):
                attempts = 0
                seq += 1
                # Due at once if the drive dies here; a due wake-up need not be rewritten.
                wake_at = row.wake_at
                if wake_at is None or wake_at > now:
                    wake_at = RUN_NOW
                error = None
                sleep_for: float | None = None
                returning = False
            else:
                if new_state != state or new_payload != payload:
                    seq += 1
                error = outcome.error
                wake_after = outcome.wake_after
                wake_at = None if wake_after is None else now + wake_after
                sleep_for = (
                    wake_after if mode is DriveMode.UNTIL_DONE and wake_after is not None else None
                )
                returning = sleep_for is None
            error_text = _error_text(error or cause)
            entry = LogEntry(
                codec.name,
                step_seq,
                state,
                new_state,
                "next" if isinstance(outcome, Next) else "park",
                via,
                attempts,
                error_text,
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
            new_row = Bookkeeping(codec.version, attempts, error_text, wake_at, lease)
            try:
                store.write(
                    action_id,
                    epoch,
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
                return DriveResult(action_id, DriveStatus.LEASE_LOST, state, exc, steps)
            except ResourceConflict as exc:
                # Another action took the resource between the step's check and our commit:
                # nothing of this step was written. Treat it as a transient error of the step.
                adapter.warning("%s; the step will be retried", exc)
                self._let_go(action_id, epoch)
                return DriveResult(action_id, DriveStatus.ERROR, state, exc, steps)
            except Exception as exc:
                adapter.error("could not write the checkpoint: %s", exc)
                self._let_go(action_id, epoch)
                return DriveResult(action_id, DriveStatus.ERROR, state, exc, steps)

            row = new_row
            adapter.debug("%s -> %s (%s)", state, new_state, entry.outcome)
            if self.on_commit is not None:
                self.on_commit(action_id, entry)
            state, payload = new_state, new_payload
            action = outcome.state
            if returning:
                if isinstance(outcome, Next):
                    adapter.info("stopping after this step; the action stays due")
                return DriveResult(action_id, DriveStatus.PARKED, state, error, steps)
            if sleep_for is not None:
                adapter.debug("parked; sleeping %.3fs before the next attempt", sleep_for)
                await self.sleep(sleep_for)
                held_since = time.perf_counter()
            elif time.perf_counter() - held_since > _YIELD_AFTER:
                # Synchronous steps never suspend: let other actions' effects run.
                await asyncio.sleep(0)
                held_since = time.perf_counter()

    async def _drive_again(
        self, codec: KindCodec, first: Outcome, action: Action[S], ctx: StepContext[S]
    ) -> Outcome:
        """Double-drive mode: run the step again from the same state; the results must agree.

        As in bark's checker, a first run that parks is exempt (the second run is then a
        legitimate later re-drive), and the second result is the one used.
        """
        try:
            second = await _advance(action, ctx)
        except Exception as exc:
            if not isinstance(first, Park):
                raise DoubleDriveMismatch(
                    f"action {ctx.action_id}: step {ctx.seq} gave {_describe(codec, first)} "
                    f"once and raised {type(exc).__name__}: {exc} the second time; it is not "
                    "idempotent"
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
        action_id: str,
        state: str,
        version: int,
        payload: str,
        seq: int,
        attempts: int,
        now: float,
        adapter: logging.LoggerAdapter[logging.Logger],
    ) -> tuple[str, Outcome, int, StepContext[S], BaseException] | DriveResult:
        """Route a step's exception to on_rejection or on_retry, on the pre-step state."""
        before: Action[S] = codec.load(state, version, payload)
        ctx = self._context(action_id, seq, attempts, now, adapter)
        try:
            if isinstance(exc, Rejected):
                adapter.warning("rejected: %s", exc)
                via = "rejection"
                result: MaybeAwaitable = before.on_rejection(ctx, exc)
            else:
                attempts += 1
                ctx.attempts = attempts
                adapter.warning("transient error (attempt %d): %s", attempts, _error_text(exc))
                via = "retry"
                result = before.on_retry(ctx, attempts, exc)
            outcome = await result if inspect.isawaitable(result) else result
            if not isinstance(outcome, Next | Park | Done | Failed):
                raise TypeError(f"{via} handler returned {outcome!r}")
        except Exception as handler_exc:
            adapter.warning("%s handler failed, checkpoint left as it was: %s", via, handler_exc)
            return DriveResult(action_id, DriveStatus.ERROR, state, handler_exc)
        return via, outcome, attempts, ctx, exc

    def _context(
        self,
        action_id: str,
        seq: int,
        attempts: int,
        now: float,
        adapter: logging.LoggerAdapter[logging.Logger],
    ) -> StepContext[S]:
        store = self.store
        return StepContext(
            self.services,
            action_id,
            seq,
            attempts,
            now,
            self.retry,
            adapter,
            lambda: store.resources_of(action_id),
            store.holder_of,
        )

    def _let_go(self, action_id: str, epoch: int) -> None:
        try:
            self.store.unclaim(action_id, epoch)
        except Exception as exc:  # the lease then expires on its own
            log.warning("action %s: could not release the lease: %s", action_id, exc)
