"""A worker: drives due actions from a shared database until told to stop.

Any number of workers, on any number of hosts, can share one PostgreSQL database (or several
processes one SQLite file). Each loop iteration claims a batch of due actions with
`Store.claim_due` (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so workers never queue behind
each other), drives each until it parks or ends, and meanwhile renews its leases so a long
step is not taken over. A worker that stalls past its lease (paused, cut off) loses the
action to another worker; its own writes are then refused by the fencing epoch.

Between batches it sleeps until the earliest wake-up, a notification (PostgreSQL
``LISTEN`` on its schema's channel, notified when an action is started or notified), or a
short poll interval.

A worker outlives its database's outages. A transient error in its own loop (a killed backend,
a server restart, an unreachable host, a locked SQLite file) is logged, one line per failure,
and the loop tries again after an exponential backoff (`BACKOFF_FIRST` doubling up to
`BACKOFF_CAP`); the store reconnects on the next call. Drives in flight keep their meaning: a
drive whose write fails lets go of its action, which becomes due again once its lease is
released or expires. The worker gives up (`DatabaseUnavailable`, exit code 1) only when the
outage lasts longer than ``max_outage``, or when its SQLite file is deleted or replaced under
it: writing on into an unlinked file would lose every step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Generic, ParamSpec, TypeVar

import attrs

from fsm.errors import DatabaseUnavailable
from fsm.executor import DriveResult, Executor
from fsm.protocol import S
from fsm.store import Claimed, is_transient
from fsm.worker.dbfile import DatabaseFile
from fsm.worker.listener import Listener
from fsm.worker.outage import MAX_OUTAGE, Outage, backoff, error_line
from fsm.worker.retention import check_retention, prune_periodically

log = logging.getLogger("fsm.worker")

MISSED_FIRST = 0.005
"""Seconds before a worker looks again after a claim that missed due work (`Worker`'s
``_idle_timeout``); doubles with each miss in a row, up to the poll interval."""

P = ParamSpec("P")
R = TypeVar("R")


@attrs.define
class WorkerStats:
    """What one worker did, by drive status."""

    claimed: int = 0
    by_status: dict[str, int] = attrs.Factory(dict)

    def count(self, result: DriveResult) -> None:
        key = result.status.value
        self.by_status[key] = self.by_status.get(key, 0) + 1


class Worker(Generic[S]):
    """Drives due actions through ``executor`` until `stop` is called.

    ``concurrency``: drives in flight at once. ``poll``: the longest sleep between two looks
    for due work (the only wake-up source on SQLite besides wake-up times).
    ``on_result``: called with every finished drive (the CLI logs one line per outcome).
    ``max_outage``: seconds of consecutive database failures in the worker's loop after which
    `run` raises `DatabaseUnavailable`; ``0`` gives up at the first failure (for a
    supervisor that restarts the process), ``math.inf`` never gives up.
    ``retention``: seconds of history (transition log, kept outcomes) to keep; older history
    is pruned at start and every hour (`fsm.worker.retention`). ``None`` keeps everything.
    It must not be shorter than the executor's redelivery window.
    """

    def __init__(
        self,
        executor: Executor[S],
        *,
        concurrency: int = 8,
        poll: float = 0.2,
        on_result: Callable[[DriveResult], None] | None = None,
        max_outage: float = MAX_OUTAGE,
        retention: float | None = None,
    ) -> None:
        check_retention(retention, executor.redelivery_window)
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if not max_outage >= 0:  # also refuses NaN
            raise ValueError(f"max_outage must be >= 0 seconds, got {max_outage}")
        self.executor = executor
        self.store = executor.store
        self.concurrency = concurrency
        self.poll = poll
        self.on_result = on_result
        self.max_outage = max_outage
        self.retention = retention
        self.stats = WorkerStats()
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._outage: Outage | None = None
        self._unreleased: dict[str, int] = {}  # action id -> epoch of a failed drive's claim
        self._file = DatabaseFile.of(self.store)
        self._drivable: dict[str, int] = {}
        self._missed = 0  # idle looks in a row that found work due but claimed none

    def stop(self) -> None:
        """Finish the steps in flight, release the leases, and return from `run`."""
        self.executor.stop()
        self._stop.set()
        self._wake.set()

    def wake(self) -> None:
        """Look for due work now (thread-safe through the loop; used by the listener)."""
        self._wake.set()

    async def run(self) -> WorkerStats:
        """Drive due actions until `stop`; raises `DatabaseUnavailable` when giving up.

        Whatever ends the loop, the drives in flight finish their current step first.
        """
        in_flight: set[asyncio.Task[DriveResult]] = set()
        self._drivable = self._kinds()  # read once: every claim and wake-up filters by it
        renewer = asyncio.create_task(self._renew_leases())
        pruner = None
        if self.retention is not None:
            prune = prune_periodically(self.store, self.retention, self.executor.clock)
            pruner = asyncio.create_task(prune)
        listener = Listener.start(self.store, self.wake)
        try:
            while not self._stop.is_set():
                if self._file is not None:
                    self._file.check()
                try:
                    await self._serve_once(in_flight)
                except Exception as exc:
                    if not is_transient(exc):
                        raise
                    await self._back_off(exc)
                else:
                    self._database_ok()
        finally:
            self.executor.stop()
            if in_flight:
                await asyncio.wait(in_flight)
            for task in (renewer, pruner):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            if listener is not None:
                listener.close()
        return self.stats

    async def _serve_once(self, in_flight: set[asyncio.Task[DriveResult]]) -> None:
        """Claim a batch, start its drives, and wait for room or for work to come due.

        The wake-up event is cleared here, before the claim is awaited, not when the wait
        begins: a notification (or `stop`) that arrives while the claim is in flight must
        cut the wait short, or a row started meanwhile waits for the poll interval.
        """
        self._wake.clear()
        await self._release_unreleased()
        free = self.concurrency - len(in_flight)
        if not free:  # full: only a drive's end makes room (a notification cannot)
            await self._wait(in_flight, timeout=None)
        elif not await self._start_drives(in_flight, free):
            await self._wait(in_flight, timeout=await self._idle_timeout())
        elif len(in_flight) >= self.concurrency:
            await self._wait(in_flight, timeout=None)

    async def _start_drives(self, in_flight: set[asyncio.Task[DriveResult]], free: int) -> int:
        """Claim up to ``free`` due actions and start a drive task for each; how many.

        The claimed rows go to the drives: none stays in the loop's frame while it waits.
        """
        batch = await self._claim(free)
        self.stats.claimed += len(batch)
        if batch:
            self._missed = 0
        for claimed in batch:
            task = asyncio.create_task(self.executor.drive_claimed(claimed))
            in_flight.add(task)
            task.add_done_callback(self._finished(in_flight, claimed.id, claimed.epoch))
        return len(batch)

    async def _back_off(self, exc: Exception) -> None:
        """Log one line for this failure and wait before trying again, or give up."""
        now = time.monotonic()
        if self._outage is None:
            self._outage = Outage(now)
        outage = self._outage
        outage.failures += 1
        down = now - outage.started
        if down >= self.max_outage:
            log.error(
                "database unavailable for %.1fs (%d failure(s)), giving up (max outage %gs): %s",
                down,
                outage.failures,
                self.max_outage,
                error_line(exc),
            )
            raise DatabaseUnavailable(
                f"database unavailable for {down:.1f}s, longer than the "
                f"{self.max_outage:g}s allowed: {error_line(exc)}"
            ) from exc
        delay = min(backoff(outage.failures), self.max_outage - down)
        log.warning(
            "database unavailable (failure %d, down %.1fs): %s; retrying in %.2fs",
            outage.failures,
            down,
            error_line(exc),
            delay,
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), delay)

    def _database_ok(self) -> None:
        if self._outage is not None:
            log.warning(
                "database back after %.1fs (%d failure(s))",
                time.monotonic() - self._outage.started,
                self._outage.failures,
            )
            self._outage = None

    def _finished(
        self, in_flight: set[asyncio.Task[DriveResult]], action_id: str, epoch: int
    ) -> Callable[[asyncio.Task[DriveResult]], None]:
        """The drive task's done callback; it keeps the claim's id and epoch, not its row (a
        parked drive would hold its payload twice)."""
        failed_before = self.store.failed_calls

        def done(task: asyncio.Task[DriveResult]) -> None:
            in_flight.discard(task)
            self._wake.set()
            exc = None if task.cancelled() else task.exception()
            if task.cancelled() or exc is not None or self.store.failed_calls != failed_before:
                self._unreleased[action_id] = epoch
            if task.cancelled():
                return
            if exc is not None:
                # The action's id only: its state and step key at the crash are the drive's,
                # and this callback keeps nothing of the claimed row.
                log.error(
                    "action %s: drive crashed: %r", action_id, exc, extra={"action": action_id}
                )
                return
            result = task.result()
            self.stats.count(result)
            if self.on_result is not None:
                self.on_result(result)

        return done

    def _kinds(self) -> dict[str, int]:
        """What this worker can drive: each kind it loads, up to the version it reads."""
        registry = self.executor.registry
        return {name: registry.get(name).version for name in registry}

    async def _claim(self, free: int) -> list[Claimed]:
        """Claim up to ``free`` due actions, only of the kinds and versions we can drive.

        Another team's kinds, or rows a newer release wrote during a rolling deploy, are left
        for the workers that load them: claiming them would quarantine live actions. The
        claim goes through the store's committer, batched with the drives' writes.
        """
        ex = self.executor
        return await self.store.claim_due_soon(ex.owner, ex.clock(), free, kinds=self._drivable)

    async def _release_unreleased(self) -> None:
        """Let go again of the actions whose drives may have failed to let go themselves.

        A drive that fails on the database tries to release its lease (or to delete its
        finished row), which fails as well during an outage; the action would then wait for
        the lease to expire. So every drive that ended while any database call of this
        store failed is released once more, as soon as the database answers. Releasing is
        fenced by the claim's epoch: it never touches a later claim, ours or another's, and
        is a no-op for a drive that did let go (or whose row is gone).
        """
        while self._unreleased:
            action_id, epoch = next(iter(self._unreleased.items()))
            await self._off_loop(self.store.unclaim, action_id, epoch)
            if self._unreleased.get(action_id) == epoch:  # not another claim's, added meanwhile
                del self._unreleased[action_id]

    async def _idle_timeout(self) -> float:
        """How long to sleep after a claim that took nothing: until the next wake-up, or
        the poll interval.

        A wake-up already passed means work is due that the claim did not get: rows other
        workers are claiming at this moment (PostgreSQL's ``SKIP LOCKED`` passes them by).
        Looking again at once would spin (a round trip each time, for as long as those
        claims last), so the look backs off, from `MISSED_FIRST` doubling up to the poll
        interval; a notification or a drive's end still wakes the worker at once.
        """
        next_wake = await self._off_loop(self.store.next_wake, self._drivable)
        if next_wake is None:
            self._missed = 0
            return self.poll
        wait = min(self.poll, next_wake - self.executor.clock())
        if wait > 0:
            self._missed = 0
            return wait
        self._missed += 1
        return min(self.poll, MISSED_FIRST * 2.0 ** min(self._missed - 1, 30))

    def _off_loop(self, call: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> Awaitable[R]:
        """``call`` (a store call) on the store's committer thread, in turn with the drives'
        writes: the event loop never waits on the database (a poll, a lease's renewal or
        release is a round trip on PostgreSQL, and queues behind a batch's commit on SQLite).
        On SQLite, with the loop and the committer both idle, it runs at once on the loop's
        thread (`Committer.run`)."""
        return self.store.committer.run(None, lambda _: call(*args, **kwargs), solo=True)

    async def _wait(self, in_flight: set[asyncio.Task[DriveResult]], timeout: float | None) -> None:
        """Sleep until a drive finishes, a notification arrives, stop, or ``timeout``
        (at once if one of them came since `_serve_once` began)."""
        waker = asyncio.create_task(self._wake.wait())
        try:
            await asyncio.wait({waker, *in_flight}, timeout=timeout, return_when="FIRST_COMPLETED")
        finally:
            waker.cancel()

    async def _renew_leases(self) -> None:
        """Keep the leases of the drives in flight alive; free those of dead drivers here.

        Only the actions the executor is driving at this moment: a lease our owner token still
        holds on an action whose drive ended (its release failed) must run out, so that some
        worker drives that action again.
        """
        ttl = self.store.lease_ttl
        while True:
            try:
                await self._off_loop(self.store.release_dead_leases)
            except Exception as exc:  # tried again on the next round
                log.warning("could not release dead drivers' leases: %s", exc)
            await asyncio.sleep(ttl / 3)
            ex = self.executor
            try:
                await self._off_loop(self.store.renew, ex.owner, ex.clock() + ttl, ex.driving)
                # events sent from elsewhere to what we drive: taken at the next step boundary
                ex.hear(await self._off_loop(self.store.inbox_counts, ex.driving))
            except Exception as exc:  # the next write will tell whether the lease survived
                log.warning("could not renew leases: %s", exc)
