"""The drive an executor with an observer runs: the same loop, telling each step's story.

`ObservedDrive` is a `Drive` whose step, write and end also time the step and report it to
the executor's `fsm.observer.Observer`. The executor picks the class once per drive, so a
drive without an observer runs the plain `Drive`, with nothing added per step.

Commit latency is measured where the drive hands its write to the store's committer
(`Drive.write`, `Drive.finish`) until the drive learns that it is durable: the commit, the
wait for a batch, and the hand-back to the event loop, which is what a step waits for.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from fsm.codec import KindCodec
from fsm.executor.drive import Drive, Driver
from fsm.executor.plan import Plan
from fsm.failures import error_text
from fsm.ids import idempotency_key
from fsm.observer import Observer, StepEnd, StepStart
from fsm.protocol import Action, DriveMode
from fsm.results import DriveResult, DriveStatus
from fsm.store import Claimed, LogEntry
from fsm.store.inbox import StepInbox


class ObservedDrive(Drive):
    """A `Drive` that tells ``ex.observer`` when each step begins and how it ended."""

    def __init__(self, ex: Driver, claimed: Claimed, codec: KindCodec, action: Action[Any]) -> None:
        super().__init__(ex, claimed, codec, action)
        observer = ex.observer
        assert observer is not None
        self.observer: Observer = observer
        self._planned: Plan | None = None
        """The write this step handed to the store, if it got that far."""
        self._handed = 0.0
        self._commit: float | None = None

    async def step(self, mode: DriveMode) -> DriveResult | float | None:
        seq = self.seq
        start = StepStart(
            self.id,
            self.kind,
            self.state,
            self.incarnation,
            seq,
            self.bookkeeping.attempts + 1,
            idempotency_key(self.id, self.incarnation, seq),
        )
        watch = self.observer.step(start)
        self._planned = self._commit = None
        try:
            then = await super().step(mode)
        except BaseException as exc:
            watch.ended(self._ended(None, exc))
            raise
        watch.ended(self._ended(then, None))
        return then

    def _ended(self, then: DriveResult | float | None, exc: BaseException | None) -> StepEnd:
        """How the step ended, from what it wrote (or tried to) and what it returned."""
        planned = self._planned
        if planned is None:  # nothing was handed to the store: the step was cut short
            return StepEnd("cancelled", None, self.state, None, None, error_text(exc))
        entry = planned.entry
        if self._commit is not None:
            outcome = entry.outcome
        elif isinstance(then, DriveResult) and then.status is DriveStatus.LEASE_LOST:
            outcome = "lease_lost"
        else:
            outcome = "error"
        error = entry.error
        if outcome in ("lease_lost", "error") and isinstance(then, DriveResult):
            error = error_text(then.error)
        stands = planned.state if self._commit is not None else self.state
        return StepEnd(outcome, entry.via, stands, entry.duration, self._commit, error)

    async def write(
        self,
        planned: Plan,
        acquired: Sequence[str],
        released: Sequence[str],
        now: float,
        inbox: StepInbox | None = None,
    ) -> None:
        self._planned = planned
        self._handed = time.perf_counter()
        await super().write(planned, acquired, released, now, inbox)
        if self._commit is None:
            self._commit = time.perf_counter() - self._handed

    async def finish(
        self, planned: Plan, now: float, inbox: StepInbox | None = None
    ) -> DriveResult:
        self._planned = planned
        self._handed = time.perf_counter()
        return await super().finish(planned, now, inbox)

    def committed(self, entry: LogEntry) -> None:
        if self._commit is None:  # an end (`finish`); a checkpoint was timed by `write`
            self._commit = time.perf_counter() - self._handed
        super().committed(entry)
