"""A worker's retention: old history is pruned as the worker runs, so it never grows for ever.

With ``Worker(retention=SECONDS)`` (``fsm worker --retention 30d``) the worker prunes the
transition-log rows and kept outcomes older than that (`Store.prune_soon`) when it starts,
then every `PRUNE_EVERY` seconds. Each batch of the prune is one write through the store's
committer, in turn with the drives' writes. A prune that fails is logged (one line) and
tried again after `RETRY_AFTER`; it never stops the worker.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable

from fsm.failures import one_line
from fsm.store import Store

log = logging.getLogger("fsm.worker")

PRUNE_EVERY = 3600.0
"""Seconds between two prunes of a worker with a retention."""

RETRY_AFTER = 60.0
"""Seconds before a failed prune is tried again."""


def check_retention(retention: float | None, redelivery_window: float) -> None:
    """Refuse a retention that is not a duration, or shorter than the redelivery window.

    A kept outcome is what recognises a start delivered again after its action ended
    (`Executor.redelivery_window`); pruning it sooner would let that start run again.
    """
    if retention is None:
        return
    if not (isinstance(retention, int | float) and 0 < retention < math.inf):
        raise ValueError(f"retention must be seconds > 0, got {retention!r}")
    if retention < redelivery_window:
        raise ValueError(
            f"retention ({retention:g} s) is shorter than the redelivery window "
            f"({redelivery_window:g} s): a start delivered again after its outcome was "
            "pruned would run again; keep history at least that long"
        )


async def prune_periodically(
    store: Store,
    retention: float,
    clock: Callable[[], float],
    every: float = PRUNE_EVERY,
    retry_after: float = RETRY_AFTER,
) -> None:
    """Prune what is older than ``retention`` now, then every ``every`` seconds, for ever
    (the worker cancels it when it stops)."""
    while True:
        try:
            pruned = await store.prune_soon(clock() - retention)
        except Exception as exc:
            log.warning(
                "could not prune old history (retried in %gs): %s", retry_after, one_line(str(exc))
            )
            await asyncio.sleep(retry_after)
            continue
        if pruned.log_rows or pruned.outcomes or pruned.events:
            log.info(
                "pruned history older than %g s: %d log rows, %d outcomes, %d taken events",
                retention,
                pruned.log_rows,
                pruned.outcomes,
                pruned.events,
            )
        await asyncio.sleep(every)
