"""Naps: the drives sleeping through a park, so that a notify or a stop cuts a sleep short.

A drive in ``UNTIL_DONE`` that parks with a wake-up sleeps in its own frame, on a future that
a timer completes, or `Naps.wake` (a notify), or `Naps.wake_all` (a stop) completes first.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Awaitable, Callable
from typing import Protocol


class Naps:
    """The drives sleeping through a park, so that a notify or a stop cuts a sleep short.

    A nap is one future and one timer, and no coroutine of its own: the drive awaits the
    future in its own frame (`start`, then `end`). A parked drive holds little, which
    matters when a worker keeps thousands of them asleep."""

    def __init__(self) -> None:
        self._wakers: dict[str, asyncio.Future[None]] = {}

    def __contains__(self, action_id: object) -> bool:
        return action_id in self._wakers

    def start(
        self, action_id: str, seconds: float, sleep: Callable[[float], Awaitable[None]]
    ) -> tuple[asyncio.Future[None], Timer]:
        """Begin a nap of ``seconds`` (with ``sleep``) unless `wake` comes first: the future
        to await, and the timer to hand to `end` once it is done (or the await cancelled)."""
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()
        self._wakers[action_id] = woken
        if sleep is asyncio.sleep:
            return woken, loop.call_later(seconds, _wake, woken, context=_timers_context())
        # a test's clock: its sleep ends the nap as the timer would
        sleeper = asyncio.ensure_future(sleep(seconds))
        sleeper.add_done_callback(lambda _: _wake(woken))
        return woken, sleeper

    def end(self, action_id: str, timer: Timer) -> None:
        timer.cancel()
        del self._wakers[action_id]

    def wake(self, action_id: str) -> None:
        waker = self._wakers.get(action_id)
        if waker is not None:
            _wake(waker)

    def wake_all(self) -> None:
        for waker in self._wakers.values():
            _wake(waker)


class Timer(Protocol):
    """What ends a nap by itself: a loop's timer, or a test clock's sleep."""

    def cancel(self) -> object: ...


def _wake(woken: asyncio.Future[None]) -> None:
    if not woken.done():
        woken.set_result(None)


_local = threading.local()


def _timers_context() -> contextvars.Context:
    """The context the naps' timers run `_wake` in: one empty context per thread.

    `_wake` reads no context variable, so a timer needs no copy of its caller's context (64
    bytes a nap, the loop's default). One per thread, because a context cannot be entered
    twice at once: shared across threads, two loops' timers could collide.
    """
    context: contextvars.Context | None = getattr(_local, "context", None)
    if context is None:
        context = _local.context = contextvars.Context()
    return context
