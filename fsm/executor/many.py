"""Many drives at once, at most ``concurrency`` at a time, tallied into one `ResumeReport`.

What `Executor.resume_all` and `Executor.run_due` share. Memory does not grow with the number
of ids: a drive task is made only when a slot frees (never one per id up front), the ids come
from an iterator (`resume_all` reads them a page at a time), and a result is counted, then
dropped unless it went wrong (`fsm.results.Tally`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from fsm.protocol import DriveMode
from fsm.results import DriveResult, DriveStatus, Tally

log = logging.getLogger(__name__)


async def drive_many(
    drive: Callable[[str, DriveMode], Awaitable[DriveResult]],
    ids: Iterable[str],
    mode: DriveMode,
    concurrency: int,
    tally: Tally,
) -> None:
    """``drive`` every id of ``ids``, at most ``concurrency`` at once, into ``tally``.

    A drive that raises an ``Exception`` (a store error for one action) is counted as
    `DriveStatus.ERROR` and the others go on. If this is cancelled (or a drive raises what is
    not an ``Exception``), the running drives are cancelled and awaited before it returns.
    """
    running: set[asyncio.Task[None]] = set()

    async def one(slot: int, action_id: str) -> None:
        try:
            result = await drive(action_id, mode)
        except Exception as exc:  # a store error for one action must not stop the rest
            log.exception("action %s: drive failed", action_id, extra={"action": action_id})
            result = DriveResult(action_id, DriveStatus.ERROR, error=exc)
        tally.add(slot, result)

    async def reap() -> set[asyncio.Task[None]]:
        done, left = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()  # re-raises what one() let through (BaseException only)
        return left

    try:
        for slot, action_id in enumerate(ids):
            while len(running) >= max(1, concurrency):
                running = await reap()
            running.add(asyncio.create_task(one(slot, action_id)))
        while running:
            running = await reap()
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
