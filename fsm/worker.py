"""A worker: drives due actions from a shared database until told to stop.

Any number of workers, on any number of hosts, can share one PostgreSQL database (or several
processes one SQLite file). Each loop iteration claims a batch of due actions with
`Store.claim_due` (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so workers never queue behind
each other), drives each until it parks or ends, and meanwhile renews its leases so a long
step is not taken over. A worker that stalls past its lease (paused, cut off) loses the
action to another worker; its own writes are then refused by the fencing epoch.

Between batches it sleeps until the earliest wake-up, a notification (PostgreSQL
``LISTEN fsm_due``, sent when an action is started or notified), or a short poll interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any, Generic

import attrs
import orjson

from fsm.executor import DriveResult, DriveStatus, Executor
from fsm.protocol import S
from fsm.store import Claimed, Store

log = logging.getLogger(__name__)


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
    """

    def __init__(
        self,
        executor: Executor[S],
        *,
        concurrency: int = 8,
        poll: float = 0.2,
        on_result: Callable[[DriveResult], None] | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.executor = executor
        self.store = executor.store
        self.concurrency = concurrency
        self.poll = poll
        self.on_result = on_result
        self.stats = WorkerStats()
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()

    def stop(self) -> None:
        """Finish the steps in flight, release the leases, and return from `run`."""
        self.executor.stop_after_current_steps()
        self._stop.set()
        self._wake.set()

    def wake(self) -> None:
        """Look for due work now (thread-safe through the loop; used by the listener)."""
        self._wake.set()

    async def run(self) -> WorkerStats:
        in_flight: set[asyncio.Task[DriveResult]] = set()
        renewer = asyncio.create_task(self._renew_leases())
        listener = _Listener.start(self)
        try:
            while not self._stop.is_set():
                free = self.concurrency - len(in_flight)
                batch = self._claim(free) if free else []
                self.stats.claimed += len(batch)
                for claimed in batch:
                    task = asyncio.create_task(self.executor.drive_claimed(claimed))
                    in_flight.add(task)
                    task.add_done_callback(self._finished(in_flight))
                if not batch:
                    await self._wait(in_flight, timeout=self._idle_timeout())
                elif len(in_flight) >= self.concurrency:
                    await self._wait(in_flight, timeout=None)
            if in_flight:
                await asyncio.wait(in_flight)
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            if listener is not None:
                listener.close()
        return self.stats

    def _finished(
        self, in_flight: set[asyncio.Task[DriveResult]]
    ) -> Callable[[asyncio.Task[DriveResult]], None]:
        def done(task: asyncio.Task[DriveResult]) -> None:
            in_flight.discard(task)
            self._wake.set()
            if task.cancelled():
                return
            exc = task.exception()
            if exc is not None:
                log.error("drive crashed: %r", exc)
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

    def _claim(self, free: int) -> list[Claimed]:
        """Claim up to ``free`` due actions, only of the kinds and versions we can drive.

        Another team's kinds, or rows a newer release wrote during a rolling deploy, are left
        for the workers that load them: claiming them would quarantine live actions.
        """
        ex = self.executor
        return self.store.claim_due(ex.owner, ex.clock(), free, kinds=self._kinds())

    def _idle_timeout(self) -> float:
        next_wake = self.store.next_wake(kinds=self._kinds())
        if next_wake is None:
            return self.poll
        return max(0.0, min(self.poll, next_wake - self.executor.clock()))

    async def _wait(self, in_flight: set[asyncio.Task[DriveResult]], timeout: float | None) -> None:
        """Sleep until a drive finishes, a notification arrives, stop, or ``timeout``."""
        self._wake.clear()
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
                self.store.release_dead_leases()
            except Exception as exc:  # tried again on the next round
                log.warning("could not release dead drivers' leases: %s", exc)
            await asyncio.sleep(ttl / 3)
            ex = self.executor
            try:
                self.store.renew(ex.owner, ex.clock() + ttl, ex.driving)
            except Exception as exc:  # the next write will tell whether the lease survived
                log.warning("could not renew leases: %s", exc)


def run_worker(
    store: Store,
    services: Any,
    kinds: Iterable[Any],
    *,
    concurrency: int = 8,
    poll: float = 0.2,
    json_logs: bool = False,
) -> int:
    """The ``fsm worker`` process: log one line per outcome, stop cleanly on SIGTERM/SIGINT.

    Returns the exit code: 0 after a clean stop (steps in flight finished, leases released).
    """
    _configure_logging(json_logs)
    executor: Executor[Any] = Executor(store, services, kinds=kinds)
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
                "status": result.status.value,
                "state": result.state,
                "steps": result.steps,
                "error": error,
            },
        )

    async def main() -> None:
        worker = Worker(executor, concurrency=concurrency, poll=poll, on_result=report)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop)
        log.info("worker %s started (concurrency %d)", executor.owner, concurrency)
        stats = await worker.run()
        log.info("worker %s stopped: %s", executor.owner, stats.by_status)

    asyncio.run(main())
    store.close()
    return 0


class _JsonFormatter(logging.Formatter):
    FIELDS = ("action", "status", "state", "steps", "error")

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": record.created,
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in self.FIELDS:
            if name in record.__dict__:
                entry[name] = record.__dict__[name]
        return orjson.dumps(entry).decode()


def _configure_logging(json_logs: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        _JsonFormatter() if json_logs else logging.Formatter("%(asctime)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging.getLogger("fsm.executor").setLevel(logging.WARNING)


class _Listener:
    """PostgreSQL ``LISTEN fsm_due`` on a connection of its own, in a daemon thread."""

    def __init__(self, worker: Worker[Any], conn: Any) -> None:
        self._conn = conn
        self._closed = threading.Event()
        loop = asyncio.get_running_loop()

        def listen() -> None:
            while not self._closed.is_set():
                try:
                    for _ in conn.notifies(timeout=0.5):
                        loop.call_soon_threadsafe(worker.wake)
                except Exception:  # connection closed on shutdown
                    return

        self._thread = threading.Thread(target=listen, name="fsm-listen", daemon=True)
        self._thread.start()

    @classmethod
    def start(cls, worker: Worker[Any]) -> _Listener | None:
        db = worker.store.db
        if worker.store.is_sqlite:
            return None
        import psycopg

        conn = psycopg.connect(dbname=db.database, autocommit=True, **db.connect_params)
        conn.execute("LISTEN fsm_due")
        return cls(worker, conn)

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=2)
        self._conn.close()


__all__ = ["DriveStatus", "Worker", "WorkerStats"]
