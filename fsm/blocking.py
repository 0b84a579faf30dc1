"""Blocking callbacks: the bounded thread pool a step's synchronous calls hop to.

A synchronous callback runs on the event loop thread, so while it waits on a blocking client
library (or burns CPU) no other drive of the process moves: four 0.5 s effects at concurrency
4 take 2 s. A kind or state that says ``blocking = True`` (a hand-written `fsm.Action` too)
has its synchronous callbacks run here instead, through `BlockingPool.run`, and the loop goes
on with the other drives meanwhile.

Why a pool of our own rather than the loop's default executor: its size is the bound on how
many blocking calls run at once, a setting of the `fsm.Executor` (``blocking_threads``), and
it is created only when a blocking callback first runs, so kinds that never block cost
nothing. What a thread cannot do is be cancelled: when a step times out, the step's awaiting
side is cancelled and the step reported as `fsm.StepTimeout`, but the thread runs on until its
call returns, and what it returns is dropped (the cancelled future ignores it). The late call
holds one thread of the pool meanwhile.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

DEFAULT_BLOCKING_THREADS = 32
"""Threads of a pool when its executor does not say (``Executor(blocking_threads=...)``)."""


class BlockingPool:
    """At most ``threads`` blocking calls at once, each on a thread of its own.

    The threads are started on demand (none before the first call) and named
    ``fsm-blocking_<n>`` so a thread dump shows which calls are a kind's.
    """

    def __init__(self, threads: int = DEFAULT_BLOCKING_THREADS) -> None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"blocking_threads must be an int >= 1, got {threads!r}")
        self.threads = threads
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on a thread of the pool, awaited; cancelling the await abandons it."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor(), functools.partial(fn, *args))

    def _executor(self) -> ThreadPoolExecutor:
        pool = self._pool
        if pool is None:
            with self._lock:  # two loops (two SyncExecutors in threads) may share one pool
                pool = self._pool
                if pool is None:
                    pool = self._pool = ThreadPoolExecutor(
                        self.threads, thread_name_prefix="fsm-blocking"
                    )
        return pool

    def shutdown(self) -> None:
        """Let the threads end once their calls return (a hung call is not interrupted)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


SHARED = BlockingPool()
"""The pool of a step context made without one (a test calling ``advance`` by hand)."""
