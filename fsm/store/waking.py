"""Waking the waiters of committed writes on their event loops, a turn at a time.

A batch of 100 committed writes wakes 100 drives; run back to back, their continuations
(plan, encode, the next step: 60-100 us each here) held the loop for 6-10 ms, and a 1 ms
timer sharing it ran that late. Waking one batch in turns was not enough: several batches
(starts, claims, steps) commit while a loop works through the first, and each woke its own
drives a turn at a time, in parallel. So each loop has one queue of waiters to wake, oldest
first, and each turn of the loop wakes `TURN` of them, whichever batch they came from.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Protocol

log = logging.getLogger("fsm.store")

TURN = 4
"""Waiters woken per turn of an event loop (and starts let through: `fsm.executor.turns`).

Measured with `benchmarks/concurrency.py` (SQLite, 3 runs each): the ticker's p99 was
lowest with 4 (8 and 16 let it grow again, by a millisecond or more); the cost per step did
not differ beyond the noise of the runs."""


def others_ready(loop: asyncio.AbstractEventLoop) -> bool:
    """True when ``loop`` has callbacks ready to run besides the one running (other drives'
    steps): work done now would hold them up. A loop that does not say (not asyncio's own)
    is assumed busy."""
    ready = getattr(loop, "_ready", None)
    return ready is None or len(ready) > 0


class Waited(Protocol):
    """A committed job as the waking sees it (`fsm.store.committer.Job`): its outcome, and
    who waits for it (an event loop's future, or a synchronous caller's)."""

    loop: asyncio.AbstractEventLoop | None
    future: asyncio.Future[Any] | None
    done: concurrent.futures.Future[Any] | None
    result: Any
    error: BaseException | None


def wake(job: Waited) -> bool:
    """Give an async waiter its job's outcome, on its loop's thread; False if it was
    cancelled meanwhile (its write stands all the same)."""
    future = job.future
    if future is None or future.done():
        return False
    if job.error is not None:
        future.set_exception(job.error)
    else:
        future.set_result(job.result)
    return True


class Waking:
    """The waiters each event loop has yet to wake, oldest first (touched only on that
    loop's thread, through its callbacks)."""

    def __init__(self, drained: Callable[[asyncio.AbstractEventLoop], None]) -> None:
        self._queues: dict[asyncio.AbstractEventLoop, deque[Waited]] = {}
        self._drained = drained
        """Called (on the loop's thread) when a loop has woken every waiter it had."""

    def busy(self, loop: asyncio.AbstractEventLoop) -> bool:
        """``loop`` is taking turns: some of its waiters are not woken yet, or were in its
        last turn."""
        return loop in self._queues

    def settle(self, batch: Iterable[Waited]) -> None:
        """Tell every waiter of a committed batch how its job went (from the committer's
        thread): a synchronous waiter at once, an async one in its loop's turns."""
        loops: dict[asyncio.AbstractEventLoop, list[Waited]] = {}
        for job in batch:
            if job.done is not None:
                if job.error is not None:
                    job.done.set_exception(job.error)
                else:
                    job.done.set_result(job.result)
            elif job.loop is not None:
                loops.setdefault(job.loop, []).append(job)
        for loop, jobs in loops.items():
            try:
                loop.call_soon_threadsafe(self._arrive, loop, jobs)
            except RuntimeError:  # the loop is closed: its drives are gone, nobody waits
                log.debug("%d write(s) committed after their event loop closed", len(jobs))

    def _arrive(self, loop: asyncio.AbstractEventLoop, jobs: list[Waited]) -> None:
        queue = self._queues.get(loop)
        if queue is not None:  # the loop is taking turns: these wait for theirs
            queue.extend(jobs)
            return
        for old in [old for old in self._queues if old.is_closed()]:
            del self._queues[old]  # a loop closed mid-turns: nobody waits there any more
        self._queues[loop] = deque(jobs)
        self._turn(loop)

    def _turn(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wake the next `TURN` waiters; the next turn is a callback queued behind them.
        A turn that woke nobody ends the loop's turns (no callback queued while idle)."""
        queue = self._queues[loop]
        woken = 0
        while queue and woken < TURN:
            woken += wake(queue.popleft())
        if woken:
            loop.call_soon(self._turn, loop)
        else:
            del self._queues[loop]
            self._drained(loop)
