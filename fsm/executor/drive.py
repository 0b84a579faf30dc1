"""The drive loop, a thin shell: run a step, ask `plan` what to write, write it, go on or return.

One `Drive` per claimed action holds where it stands (the checkpoint and bookkeeping as last
written) and loops until the plan says return. What it writes is decided by the pure
functions of `fsm.executor.plan`; here is only what needs the world: the clock, the step's
code, the store, the lease, sleeping through parks, and the fallbacks when a write fails.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from fsm.blocking import BlockingPool
from fsm.codec import KindCodec
from fsm.errors import DoubleDriveMismatch, LeaseLost, Rejected
from fsm.events import CANCEL
from fsm.executor.claims import let_go
from fsm.executor.drivelog import Adapter
from fsm.executor.inboxes import queued_cancel, step_inbox
from fsm.executor.naps import Naps, Timer
from fsm.executor.plan import Plan, Write, after_failed_write, plan, plan_broken
from fsm.executor.step import advance, drive_again, encode, handle
from fsm.failures import broken_text, chained_text, error_text
from fsm.ids import idempotency_key
from fsm.observer import Observer
from fsm.protocol import Action, Done, DriveMode, Failed, Inbox, Next, Park, StepContext
from fsm.registry import Registry
from fsm.results import DriveResult, DriveStatus
from fsm.retry import RetryPolicy
from fsm.store import Bookkeeping, Claimed, LogEntry, Store
from fsm.store.inbox import StepInbox

log = logging.getLogger(__name__)

_YIELD_AFTER = 0.002
"""Seconds a drive may hold the event loop before it yields once to other tasks."""

_CANCEL = (CANCEL,)
_ENDS = (Done, Failed)  # ``isinstance`` is quicker with a tuple than with a union
_OUTCOMES = (Next, Park, Done, Failed)


class Driver(Protocol):
    """What a drive uses of its executor (`fsm.Executor` is one); read at every step."""

    store: Store
    services: Any
    registry: Registry
    retry: RetryPolicy
    step_timeout: float | None
    clock: Callable[[], float]
    sleep: Callable[[float], Awaitable[None]]
    on_commit: Callable[[str, LogEntry], None] | None
    double_drive: bool
    stopping: bool
    naps: Naps
    observer: Observer | None
    threads: BlockingPool
    _driving: dict[str, Drive]
    """The drives running: each adds itself while it runs (`Executor.driving`; a send of
    this executor tells the drive of its action at once, `Drive.heard`)."""


class Drive:
    """One drive of one claimed action: where it stands, and its loop.

    Slotted, and what can be rebuilt is not held through a nap (the decoded action, the log
    adapter): a parked drive holds its checkpoint's text and bookkeeping, little more.
    """

    __slots__ = (
        "_log",
        "action",
        "bookkeeping",
        "codec",
        "epoch",
        "ex",
        "id",
        "incarnation",
        "kind",
        "payload",
        "pending",
        "seen",
        "seq",
        "state",
        "steps",
    )

    def __init__(self, ex: Driver, claimed: Claimed, codec: KindCodec, action: Action[Any]) -> None:
        self.ex = ex
        self.codec = codec
        self.kind = codec.name
        self._log: logging.LoggerAdapter[logging.Logger] | None = None
        self.id = claimed.id
        self.epoch = claimed.epoch
        self.incarnation = claimed.incarnation
        # Where the drive stands (a `fsm.executor.plan.Position`), as last written:
        self.state = claimed.state
        self.payload = claimed.payload
        self.seq = claimed.seq
        self.bookkeeping = claimed.bookkeeping
        self.action = action
        self.steps = 0
        self.pending = claimed.inbox
        """Pending events in the inbox, as far as this drive knows (the claim's count, its
        own takings, sends of this process): while 0, no step reads the inbox."""
        self.seen = 0
        """``pending`` when the drive last looked for a queued cancel (`cancel_queued`)."""

    @property
    def adapter(self) -> logging.LoggerAdapter[logging.Logger]:
        """The action's logger (action, kind, state and step key on every record:
        `fsm.executor.drivelog`), made when first needed after a nap."""
        adapter = self._log
        if adapter is None:
            adapter = self._log = Adapter(log, self)
        return adapter

    async def run(self, mode: DriveMode) -> DriveResult:
        """Step until the plan says return; if anything escapes, the lease is let go.

        A drive asleep in a park holds this frame: what it does besides the loop is in
        methods (`stopped`, `doze`, `rouse`), which keeps the frame small.
        """
        self.ex._driving[self.id] = self
        try:
            held_since = time.perf_counter()
            while True:
                if self.ex.stopping:
                    return self.stopped()
                then = await self.step(mode)
                if then is None:
                    if time.perf_counter() - held_since > _YIELD_AFTER:
                        # Synchronous steps never suspend: let other actions' effects run.
                        await asyncio.sleep(0)
                        held_since = time.perf_counter()
                    continue
                if isinstance(then, DriveResult):
                    return then
                woken, timer = self.doze(then)
                try:
                    await woken
                finally:
                    self.ex.naps.end(self.id, timer)
                self.rouse()
                held_since = time.perf_counter()
        except BaseException:
            let_go(self.ex.store, self.id, self.epoch, self.adapter)
            raise
        finally:
            if self.ex._driving.get(self.id) is self:
                del self.ex._driving[self.id]

    def stopped(self) -> DriveResult:
        """The executor is stopping: let go of the lease, leave the action as written."""
        self.adapter.info("stopping: the lease is released, the action stays as written")
        let_go(self.ex.store, self.id, self.epoch, self.adapter)
        return self.result(DriveStatus.PARKED)

    def doze(self, seconds: float) -> tuple[asyncio.Future[None], Timer]:
        """Begin a nap (`Naps.start`), letting go of what `rouse` rebuilds after it."""
        self.adapter.debug("parked; sleeping %.3fs before the next attempt", seconds)
        del self.action
        self._log = None  # made again when next used
        return self.ex.naps.start(self.id, seconds, self.ex.sleep)

    def rouse(self) -> None:
        """After a nap: the action, loaded from the checkpoint this drive just wrote, as a
        restart would load it. (A checkpoint that does not load back fails here as it does
        on the step's error path, which loads it too.)

        Events sent while it slept by other processes (a send, a child's end, a queued
        cancel) reached the inbox, not this drive (`heard` is this process's): it counts
        them again, so that the next step reads them before a deadline or a plain row. A
        read that fails on an error that can pass keeps the count it had."""
        self.action = self.codec.load(self.state, self.bookkeeping.version, self.payload)
        try:
            self.pending = self.ex.store.inbox_count(self.id)
        except Exception as exc:  # the step's own write will meet the fault, and back off
            self.adapter.warning("could not read the inbox's count after a nap: %s", exc)
        self.seen = min(self.seen, self.pending)

    async def step(self, mode: DriveMode) -> DriveResult | float | None:
        """Run one step and persist what it led to.

        Returns the drive's result when the drive ends here, else how long to sleep before
        the next step (None: go on at once).
        """
        ex = self.ex
        codec = self.codec
        started = ex.clock()
        t0 = time.perf_counter()
        ctx = self.context(started)
        via = "step"
        cause: str | None = None
        routed = False
        if self.pending > self.seen:  # new events since the last look: a cancel among them?
            cancelled = await queued_cancel(self, ctx, started, t0, mode)
            if cancelled is not False:
                return cancelled
        try:
            outcome = advance(self.action, ctx, ex.step_timeout)
            if not isinstance(outcome, _OUTCOMES):  # ``advance`` was asynchronous
                outcome = await outcome
            if ex.double_drive:
                again = self.context(started)
                loaded = codec.load(self.state, self.bookkeeping.version, self.payload)
                outcome = await drive_again(codec, outcome, loaded, again, ex.step_timeout)
            encoded = encode(codec, outcome)
        except DoubleDriveMismatch as exc:
            # A step that is not idempotent is a bug of the kind: parked as broken (so a
            # worker does not pick it up again at once), then reported loudly.
            await self.park_broken(exc, started, t0)
            raise
        except Exception as exc:
            if not isinstance(exc, Rejected) and self.action.policy(ex.retry).is_broken(exc):
                return await self.park_broken(exc, started, t0)
            before = codec.load(self.state, self.bookkeeping.version, self.payload)
            handled = await handle(exc, before, self.context(started), self.state, self.adapter)
            if isinstance(handled, Exception):
                return await self.park_broken(handled, started, t0)
            via, outcome, ctx, routed = handled.via, handled.outcome, handled.ctx, handled.routed
            cause = chained_text(handled.error)
            attempts = handled.attempts
            try:
                encoded = encode(codec, outcome)
            except Exception as enc_exc:
                return await self.park_broken(enc_exc, started, t0)
        else:
            attempts = self.bookkeeping.attempts
        duration = time.perf_counter() - t0
        self.steps += 1
        now = ex.clock()
        planned = plan(
            outcome,
            self,
            encoded,
            kind=codec.name,
            version=codec.version,
            via=via,
            attempts=attempts,
            cause=cause,
            routed=routed,
            mode=mode,
            stopping=ex.stopping,
            started=started,
            now=now,
            lease_ttl=ex.store.lease_ttl,
            duration=duration,
        )
        try:
            inbox = step_inbox(self, ctx)
        except Exception as exc:  # a child that does not encode: the kind's bug
            return await self.park_broken(exc, started, t0)
        if isinstance(outcome, _ENDS):
            return await self.finish(planned, now, inbox)
        acquired, released = ctx.resource_changes()
        try:
            await self.write(planned, acquired, released, now, inbox)
        except LeaseLost as exc:
            return self.dropped(exc)
        except Exception as exc:
            # Nothing of this step was written (a resource taken meanwhile, a database fault):
            # the step is retried from the stored checkpoint, under the same key, after backoff.
            self.adapter.error("could not write the checkpoint: %s", exc)
            return self.record_failure(exc)
        return self.advanced(planned, outcome)

    def heard(self) -> None:
        """A send of this process put an event in the inbox: the next step boundary reads it."""
        self.pending += 1

    def advanced(self, planned: Plan, outcome: Next | Park) -> DriveResult | float | None:
        """A `Next` or `Park` is durable: the drive stands on it; say whether it goes on."""
        entry, new = planned.entry, planned.bookkeeping
        assert new is not None  # a checkpoint's write keeps the row
        if log.isEnabledFor(logging.DEBUG):
            self.adapter.debug("%s -> %s (%s)", self.state, planned.state, entry.outcome)
        self.committed(entry)
        self.bookkeeping = new
        self.seen = 0 if planned.state != self.state else self.seen  # a queued cancel: new route?
        self.state, self.payload, self.seq = planned.state, planned.payload, planned.seq
        self.action = outcome.state
        if planned.goes_on:
            return planned.sleep_for
        if self.ex.stopping:
            self.adapter.info("stopping after this step; the lease is released")
        error = outcome.error if isinstance(outcome, Park) else None
        return self.result(DriveStatus.PARKED, error)

    def write(
        self,
        planned: Plan,
        acquired: Sequence[str],
        released: Sequence[str],
        now: float,
        inbox: StepInbox | None = None,
    ) -> Awaitable[None]:
        """Write a planned checkpoint, fenced by the claim's epoch, through the committer;
        awaiting it returns once the checkpoint is durable."""
        new = planned.bookkeeping
        assert new is not None
        return self.ex.store.write_soon(
            self.id,
            self.epoch,
            (planned.state, planned.payload, planned.seq, self.bookkeeping, new, acquired, released,
             planned.entry, now),
            inbox,
        )  # fmt: skip

    def dropped(self, exc: LeaseLost) -> DriveResult:
        """Another driver claimed the action meanwhile: our write was refused; stop here."""
        self.adapter.warning("%s; dropping the action", exc.why)
        return self.result(DriveStatus.LEASE_LOST, exc)

    async def finish(
        self, planned: Plan, now: float, inbox: StepInbox | None = None
    ) -> DriveResult:
        """Terminal: delete the row, keep the outcome, and report the terminal state."""
        failure = planned.failure
        try:
            await self.ex.store.finish_soon(
                self.id,
                self.epoch,
                planned.entry,
                now,
                inbox,
                status=planned.entry.outcome,  # the end's: done or failed
                state=planned.state,
                error=None if failure is None else chained_text(failure),
                cause=planned.cause,
            )
        except LeaseLost as exc:
            self.adapter.warning("lost the lease before finishing: %s", exc.why)
            return self.result(DriveStatus.LEASE_LOST, exc)
        except Exception as exc:
            # The end could not be written: nothing of it happened. The step is retried.
            self.adapter.error("could not write the end of the action: %s", exc)
            return self.record_failure(exc)
        self.committed(planned.entry)
        self.state = end = planned.state  # the key stays the last step's: it ended the action
        if planned.write is Write.FAILED:
            self.adapter.info("failed in %s: %s", end, error_text(failure))
            return self.result(DriveStatus.FAILED, failure, cause=planned.cause)
        if log.isEnabledFor(logging.INFO):
            self.adapter.info("done in %s after %d step(s)", end, self.steps)
        return self.result(DriveStatus.DONE, cause=planned.cause)

    async def park_broken(self, error: BaseException, started: float, t0: float) -> DriveResult:
        """The kind's code failed: keep the checkpoint, mark the row broken, wait for a fix."""
        text = broken_text(error)
        self.adapter.error("%s", text.replace("\n", " | "))
        duration = time.perf_counter() - t0
        planned = plan_broken(self, text, kind=self.codec.name, duration=duration)
        try:
            await self.write(planned, (), (), self.ex.clock())
        except LeaseLost as exc:
            return self.dropped(exc)
        except Exception as exc:
            self.adapter.error("could not mark the action broken: %s", exc)
            assert planned.bookkeeping is not None
            self.fallback(planned.bookkeeping, text, started)
        return self.result(DriveStatus.BROKEN, error)

    def record_failure(self, error: BaseException) -> DriveResult:
        """A step's write failed: count the attempt and back off, keeping the checkpoint."""
        now = self.ex.clock()
        row = self.bookkeeping
        delay = self.action.policy(self.ex.retry).delay(row.attempts + 1)
        text = error_text(f"could not write the checkpoint: {error_text(error)}")
        assert text is not None
        self.fallback(after_failed_write(row, text, delay, now), text, now)
        return self.result(DriveStatus.ERROR, error)

    def fallback(self, new: Bookkeeping, text: str, now: float) -> None:
        """Write the failure alone (attempts, error, wake-up, broken mark), releasing the lease."""
        try:
            self.ex.store.record_failure(
                self.id,
                self.epoch,
                attempts=new.attempts,
                error=text,
                wake_at=new.wake_at,
                broken=new.broken,
                now=now,
            )
        except Exception as exc:  # the database is gone: the lease runs out, then a retry
            self.adapter.warning(
                "could not record the failure either (%s); the lease runs out", exc
            )
            let_go(self.ex.store, self.id, self.epoch, self.adapter)

    def result(
        self,
        status: DriveStatus,
        error: BaseException | str | None = None,
        cause: str | None = None,
    ) -> DriveResult:
        """The drive's result: where the action stands, with its kind and step key."""
        return DriveResult(
            self.id,
            status,
            self.state,
            error,
            self.steps,
            cause,
            kind=self.kind,
            key=idempotency_key(self.id, self.incarnation, self.seq),
        )

    def context(self, now: float) -> StepContext[Any]:
        ex = self.ex
        store = ex.store
        action_id = self.id
        inbox = None
        if self.pending:
            names = (*self.action.event_names(), CANCEL)
            inbox = Inbox(self.pending, lambda: store.pending_events(action_id, names))
        return StepContext(
            ex.services,
            action_id,
            self.seq,
            self.bookkeeping.attempts,
            now,
            ex.retry,
            self._log or self.adapter,
            lambda: store.resources_of(action_id),
            store.holder_of,
            self.incarnation,
            ex.threads,
            inbox,
        )

    def committed(self, entry: LogEntry) -> None:
        """Call the ``on_commit`` hook. The step is committed; an exception from the hook
        ends the drive like a crash would (crash tests raise there on purpose): the lease is
        released and the action is due again."""
        on_commit = self.ex.on_commit
        if on_commit is not None:
            on_commit(self.id, entry)
