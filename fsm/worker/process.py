"""The ``fsm worker`` process: a `Worker` with logging, signal handling and an exit code."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Iterable
from typing import Any

from fsm.errors import DatabaseUnavailable
from fsm.executor import DriveResult, Executor
from fsm.observer import Observer
from fsm.store import Store
from fsm.worker.logs import configure_logging
from fsm.worker.loop import Worker
from fsm.worker.outage import MAX_OUTAGE
from fsm.worker.retention import check_retention

log = logging.getLogger("fsm.worker")


def run_worker(
    store: Store,
    services: Any,
    kinds: Iterable[Any],
    *,
    concurrency: int = 8,
    poll: float = 0.2,
    json_logs: bool = False,
    max_outage: float = MAX_OUTAGE,
    retention: float | None = None,
    observer: Observer | None = None,
    serving: str | None = None,
) -> int:
    """The ``fsm worker`` process: log one line per outcome, stop cleanly on SIGTERM/SIGINT.

    ``observer``: the executor's (metrics and tracing, see `fsm.observer`); ``serving``: where
    its metrics are served, said in the start line. Returns the exit code: 0 after a clean
    stop (steps in flight finished, leases released), 1 after giving up on the database
    (`Worker` ``max_outage``, a lost SQLite file).
    """
    configure_logging(json_logs)
    executor: Executor[Any] = Executor(store, services, kinds=kinds, observer=observer)
    check_retention(retention, executor.redelivery_window)  # refused before the loop starts
    outcome_log = logging.getLogger("fsm.worker.outcome")

    def report(result: DriveResult) -> None:
        error = None if result.error is None else str(result.error)
        outcome_log.info(
            "action %s: %s in %s after %d step(s)%s",
            result.id,
            result.status.value,
            result.state,
            result.steps,
            f" ({error})" if error else "",
            extra={
                "action": result.id,
                "kind": result.kind,
                "state": result.state,
                "key": result.key,
                "status": result.status.value,
                "steps": result.steps,
                "error": error,
            },
        )

    async def main() -> None:
        worker = Worker(
            executor,
            concurrency=concurrency,
            poll=poll,
            on_result=report,
            max_outage=max_outage,
            retention=retention,
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop)
        metrics = f", metrics on {serving}" if serving else ""
        log.info("worker %s started (concurrency %d%s)", executor.owner, concurrency, metrics)
        stats = await worker.run()
        log.info("worker %s stopped: %s", executor.owner, stats.by_status)

    # Start-up is over (kinds imported, store open): a full collection would walk every
    # object it made, a pause of tens of milliseconds on the loop (docs/performance.md).
    gc.freeze()
    try:
        asyncio.run(main())
    except DatabaseUnavailable:
        return 1  # the worker logged why, in one line
    finally:
        with contextlib.suppress(Exception):  # the connection may be long gone
            store.close()
    return 0
