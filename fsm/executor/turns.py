"""Turns: how many starts an executor lets run per turn of the event loop.

A program that starts 100 actions at once (``gather`` of 100 `Executor.drive` calls) makes
100 tasks ready in one turn of the loop; each encodes its action and queues its insert
before it first waits, tens of microseconds, so the turn lasts milliseconds and every timer
sharing the loop runs that late. `Turns` lets `size` of them through per turn and the rest
in the turns that follow, in order, as the committer wakes a batch's drives
(`fsm.store.waking`).
"""

from __future__ import annotations

import asyncio
from collections import deque

from fsm.store.waking import others_ready


class Turns:
    """At most ``size`` callers of `take` go on per turn of their event loop; the others
    wait, first come first served. A turn ends with the callback `take` queues behind the
    callers it let through, which lets the next ``size`` waiters through (and, if it did,
    queues itself once more to close their turn: no callback is queued while nobody waits).
    A caller alone on the loop (nothing else ready) goes on uncounted: a single start pays
    no turn, and its write may still commit at once (`fsm.store.committer.Committer.run`)."""

    __slots__ = ("_let", "_loop", "_size", "_waiting")

    def __init__(self, size: int) -> None:
        self._size = size
        self._let = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: deque[asyncio.Future[None]] = deque()

    async def take(self) -> None:
        """Return at once while this turn has room, else once a later turn lets us through."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new loop: whatever the old one left is gone with it
            self._loop, self._let, self._waiting = loop, 0, deque()
        if self._let < self._size and not self._waiting:
            if self._let == 0:
                if not others_ready(loop):  # alone on the loop: no burst to bound
                    return
                loop.call_soon(self._next)
            self._let += 1
            return
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiting.append(waiter)
        await waiter

    def _next(self) -> None:
        """A new turn: let the next waiters through (a cancelled one is skipped)."""
        self._let = 0
        while self._waiting and self._let < self._size:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._let += 1
        if self._let and self._loop is not None:
            self._loop.call_soon(self._next)
