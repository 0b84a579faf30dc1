"""Group commit: one thread per store commits the ready writes of every drive together.

Why a thread: a step's commit (and SQLite's WAL checkpoints, and PostgreSQL's round trips)
must not run on the event loop's thread, where a 1 ms timer would run late behind 32 drives'
commits. Why batches: a commit costs far more than a row (an fsync or a WAL frame header, a
round trip), so the writes that became ready while the previous batch was committing go
into one transaction. Nothing waits for a batch to fill: a write that finds the committer
idle is committed at once, alone, so a single drive pays only the hand-off.

What a caller can rely on (the promises of the hot path):

* a write's waiter is woken only after its batch committed: a crash at any moment leaves no
  drive believing a step is durable that is not. The store's write points pass
  ``<point>.before`` before the job's statements and ``<point>.after`` once the batch
  committed, in the committer's thread, before any waiter is woken;
* fencing stays per row: a job whose row was taken over raises `LeaseLost` alone (its
  statement changed nothing), the others commit;
* one bad job cannot fail its neighbours: any other error of a job's statements (a
  constraint, a resource conflict, a lock or a lost connection) rolls the batch back and
  every other job is run again alone, each getting its own result (the failing job gets
  its transient error, or its own error again); an error of the batch's own BEGIN or
  COMMIT (whose outcome is then unknown: it is never repeated) fails every waiter of the
  batch with that error, which each drive handles as today (back off, claim again,
  re-read the row);
* every waiter is woken, in the order the writes were made, a few per turn of its event
  loop (`fsm.store.waking`; a cancelled waiter is skipped, its write stands).

The thread owns its own connection (peewee keeps one per thread); it stops after a second
without work, closing it, and is started again by the next write.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import queue
import threading
from collections.abc import Callable
from functools import partial
from typing import Any, Generic, TypeVar

from fsm.errors import LeaseLost
from fsm.store.connection import Link, is_transient
from fsm.store.pipeline import pipelined, refused
from fsm.store.waking import Waking, others_ready, wake
from fsm.store.walcheck import CHECKPOINT_EVERY, checkpoint_wal, pragma

log = logging.getLogger("fsm.store")

R = TypeVar("R")

Body = Callable[[bool], R]
"""A job's statements; called with ``True`` inside a batch's transaction (open none of its
own), ``False`` alone (own autocommit statement or transaction, as the sync API runs it)."""

MAX_BATCH = 256
"""Jobs committed in one transaction at most (bounds the work a failed batch redoes)."""

IDLE_EXIT = 1.0
"""Seconds without work after which the thread closes its connection and ends."""


class Job(Generic[R]):
    """One write: its write point, its statements, and who waits for it.

    An async waiter has ``loop`` and ``future``; a synchronous one ``done``.
    """

    __slots__ = ("body", "done", "error", "fence", "future", "loop", "point", "result", "solo")

    def __init__(self, point: str | None, body: Body[R], solo: bool = False) -> None:
        self.point = point
        self.body = body
        self.solo = solo
        self.loop: asyncio.AbstractEventLoop | None = None
        self.future: asyncio.Future[R] | None = None
        self.done: concurrent.futures.Future[R] | None = None
        self.result: Any = None
        self.error: BaseException | None = None
        self.fence = False
        """A checkpoint that holds writers back (see `fsm.store.walcheck`)."""

    @property
    def waited(self) -> bool:
        """Someone waits for this job (every write; not a background checkpoint)."""
        return self.loop is not None or self.done is not None

    @property
    def holds(self) -> bool:
        """While queued or running, the committer is `busy`: writers queue behind it."""
        return self.fence or self.waited


class Committer:
    """The store's commit thread and its queue of jobs (see the module's docstring)."""

    def __init__(self, link: Link) -> None:
        self._link = link
        self._queue: queue.SimpleQueue[Job[Any] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._pending: dict[asyncio.AbstractEventLoop, list[Job[Any]]] = {}
        self._waking = Waking(self._drained)
        self._in_flight = 0
        self._since_checkpoint = 0
        self.batches = 0
        """Transactions committed holding more than one job (tests and benchmarks read it)."""
        self.commits = 0
        """Transactions (or autocommit writes) committed, batched or not."""

    @property
    def running(self) -> bool:
        return self._thread is not None and self._pid == os.getpid()

    @property
    def busy(self) -> bool:
        """True while jobs are queued or committing on the thread."""
        return self._in_flight > 0 and self.running

    def on_thread(self) -> bool:
        return self._thread is threading.current_thread()

    def run(self, point: str | None, body: Body[R], *, solo: bool = False) -> asyncio.Future[R]:
        """Commit ``body`` (in a batch with whatever else is ready); a future of its result,
        done once the write is durable.

        The job waits in this loop's list until the loop has run every task that was ready
        with it (`_flush`, one ``call_soon`` later): those are the writes ready "at the same
        time". On SQLite a write alone, with the thread idle and no other task ready, is
        committed right here on the loop's thread (tens of microseconds), and the future is
        done at once: a single drive pays no hand-off, not even a turn of the loop. Anything
        else goes to the thread; on PostgreSQL everything does (a round trip is long enough
        for other drives' timers to run late behind it).
        """
        loop = asyncio.get_running_loop()
        if self._link.sqlite and loop not in self._pending and self._alone_here(loop):
            return self._now(loop, point, body)
        job: Job[R] = Job(point, body, solo)
        job.loop = loop
        job.future = future = loop.create_future()
        pending = self._pending.get(loop)
        if pending is None:
            pending = self._pending[loop] = []
            loop.call_soon(self._flush, loop)
        pending.append(job)
        if len(pending) == MAX_BATCH:  # a full batch goes, even while the loop is waking
            loop.call_soon(self._flush, loop, True)
        return future

    def _now(
        self, loop: asyncio.AbstractEventLoop, point: str | None, body: Body[R]
    ) -> asyncio.Future[R]:
        """Commit ``body`` on this thread; a done future of how it went."""
        future: asyncio.Future[R] = loop.create_future()
        try:
            if point is None or self._link.hooks.point is None:  # no write point armed
                future.set_result(body(False))
            else:
                with self._link.write_point(point):
                    future.set_result(body(False))
        except Exception as exc:  # the waiter gets it, as from the thread
            future.set_exception(exc)
        self.commits += 1
        self.wrote(1, idle_loop=True)
        return future

    def _flush(self, loop: asyncio.AbstractEventLoop, now: bool = False) -> None:
        """Hand the loop's pending writes over, unless ``loop`` is still waking the drives
        of committed writes (`Waking`): their next writes join these, in one batch handed
        over once the last of them was woken (`_drained`). Woken a few per turn, drives
        write a few per turn; handed over at once, each turn's few made a batch of their
        own, five times the commits of the same work."""
        if not now and self._waking.busy(loop):
            return
        jobs = self._pending.pop(loop, [])
        if len(jobs) == 1 and self._link.sqlite and self._alone_here(loop):
            job = jobs[0]
            self._alone(job)
            wake(job)
            self.wrote(1)
            return
        if jobs:
            self._put(jobs)

    def _drained(self, loop: asyncio.AbstractEventLoop) -> None:
        """``loop`` woke the last waiter it had: its pending writes go one turn later, with
        those of the tasks made ready meanwhile (as `run` hands a write over)."""
        if loop in self._pending:
            loop.call_soon(self._flush, loop)

    def _alone_here(self, loop: asyncio.AbstractEventLoop) -> bool:
        """True when a write may commit on the loop's thread: the committer's thread has no
        work (so no lock is contended) and the loop has no other task ready to run."""
        return not (self._in_flight and self.running) and not others_ready(loop)  # not `busy`

    def call(self, point: str | None, body: Body[R], *, solo: bool = False) -> R:
        """`run` for a synchronous caller: blocks until the job is committed.

        ``solo``: the job runs alone, never in a batch (a claim: its own write point and
        statements, which a batch's transaction must not hold up)."""
        job: Job[R] = Job(point, body, solo)
        done: concurrent.futures.Future[R] = concurrent.futures.Future()
        job.done = done
        self._put([job])
        return done.result()

    def wrote(self, n: int, *, idle_loop: bool = False) -> None:
        """Count ``n`` writes committed; queue a WAL checkpoint when due (`fsm.store.walcheck`).

        Called by the thread that wrote, right after its write: the fence queued here comes
        before that thread's next write, which then waits behind it. ``idle_loop``: the
        write was committed on an event loop with nothing else ready (a single drive);
        the checkpoint then runs right there, as SQLite's own would, since no task waits
        behind it and a hand-off to the thread would only add to the drive's time.
        """
        if not self._link.sqlite:
            return
        self._since_checkpoint += n
        if self._since_checkpoint >= CHECKPOINT_EVERY:
            self._since_checkpoint = 0
            if idle_loop:
                checkpoint_wal(self._link, False)
                return
            job: Job[None] = Job(None, partial(checkpoint_wal, self._link), solo=True)
            job.fence = True
            self._put([job])

    def _put(self, jobs: list[Job[Any]]) -> None:
        """Queue ``jobs``; those `waited` for make the committer `busy` (a checkpoint does
        not: writers go on beside it)."""
        with self._lock:
            for job in jobs:
                self._in_flight += job.holds
                self._queue.put(job)
            if not self.running:
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._serve, name="fsm-committer")
                self._thread.daemon = True
                self._thread.start()

    def close(self) -> None:
        """Commit what is queued, then end the thread (a later write starts a new one)."""
        with self._lock:
            thread = self._thread if self.running else None
            if thread is not None:
                self._queue.put(None)
        for loop in list(self._pending):  # a loop's writes not yet handed over go first
            self._flush(loop, True)
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    # -- the thread -----------------------------------------------------------------------

    def _serve(self) -> None:
        link = self._link
        if link.sqlite:  # this thread's connection checkpoints in the background, not inline
            pragma(link, "wal_autocheckpoint = 0")
        try:
            while True:
                job = self._next()
                if job is None:
                    return
                batch = [job]
                while len(batch) < MAX_BATCH:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:  # close(): commit what came before, then end
                        self._queue.put(None)
                        break
                    batch.append(more)
                self._commit(batch)
        finally:
            try:
                link.db.close()
            except Exception as exc:  # a broken connection: gone either way
                log.debug("closing the committer's connection: %s", exc)

    def _next(self) -> Job[Any] | None:
        """The next job, or ``None`` once idle long enough with nothing queued (or closing)."""
        while True:
            try:
                job = self._queue.get(timeout=IDLE_EXIT)
            except queue.Empty:
                job = None
                if not self._queue.empty():
                    continue
            if job is not None:
                return job
            with self._lock:
                if self._queue.empty():
                    self._thread = None
                    return None

    def _commit(self, batch: list[Job[Any]]) -> None:
        try:
            together = [job for job in batch if not job.solo]
            if len(together) == 1:
                self._alone(together[0])
            elif together:
                self._together(together)
            for job in batch:
                if job.solo:
                    self._alone(job)
        except BaseException as exc:  # pragma: no cover - never leave a waiter hanging
            for job in batch:
                job.error = job.error or exc
        with self._lock:
            self._in_flight -= sum(job.holds for job in batch)
        self._waking.settle(batch)
        self.wrote(sum(job.waited for job in batch))

    def _alone(self, job: Job[Any]) -> None:
        try:
            if job.point is None:
                job.result = job.body(False)
            else:
                with self._link.write_point(job.point):
                    job.result = job.body(False)
            self.commits += 1
        except BaseException as exc:
            job.error = exc

    def _together(self, batch: list[Job[Any]]) -> None:
        """Commit ``batch`` in one transaction; on PostgreSQL, when every job is one
        `Statement`, in one round trip (`fsm.store.pipeline`), its results read after."""
        link = self._link
        point = link.hooks.point
        failed: Job[Any] | None = None
        piped = pipelined(link, [job.body for job in batch])
        sent: list[Any] = []  # piped: the cursors of the statements sent
        try:
            with link.transaction() if piped is None else link.pipeline():
                for index, job in enumerate(batch):
                    failed = job
                    if point is not None:
                        point(f"{job.point}.before")
                    if piped is not None:
                        sent.append(link.exec(piped[index].sql, piped[index].params))
                        continue
                    try:
                        job.result = job.body(True)
                    except LeaseLost as exc:  # its fenced statement changed nothing
                        job.error = exc
                failed = None  # from here on, the COMMIT
        except Exception as exc:
            refusal = None if piped is None else refused(link, sent)
            if refusal is not None:  # the server refused this job's statement
                failed = batch[refusal]
            if is_transient(exc) and failed is None:  # BEGIN or COMMIT: the batch as a whole
                for job in batch:
                    job.error = exc
                return
            log.debug("a batch of %d failed (%s); its writes go one by one", len(batch), exc)
            for job in batch:
                job.error = None
                if job is failed and is_transient(exc):  # rolled back: nothing is written
                    job.error = exc
                else:
                    self._alone(job)
            return
        self.batches += 1
        self.commits += 1
        for job, statement, cursor in zip(batch, piped or (), sent, strict=False):
            try:  # piped: each statement's result is read once the batch committed
                job.result = statement.judge(cursor)
            except Exception as exc:  # its fence matched no row: it changed nothing
                job.error = exc
        for job in batch:
            if point is not None and job.error is None:
                try:
                    point(f"{job.point}.after")
                except BaseException as exc:
                    job.error = exc
