"""The PostgreSQL listener that wakes a worker as soon as an action comes due.

``LISTEN`` on the channel of the store's schema (`fsm.store.channel`: workers of another
schema of the same database are not woken) needs a connection of its own that blocks
between notifications, so it runs in a daemon thread and hands each wake-up to the worker's
event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fsm.worker.outage import backoff, error_line

if TYPE_CHECKING:
    from fsm.store import Store

log = logging.getLogger("fsm.worker")


class Listener:
    """PostgreSQL ``LISTEN`` on ``channel``, on a connection of its own, in a daemon thread.

    The thread reconnects by itself, with the worker's backoff, when the connection is lost;
    after each (re)connection it wakes the worker once, for notifications it may have missed.
    """

    def __init__(
        self, wake_worker: Callable[[], None], connect: Callable[[], Any], channel: str
    ) -> None:
        self._closed = threading.Event()
        self._channel = channel
        loop = asyncio.get_running_loop()

        def wake() -> None:
            loop.call_soon_threadsafe(wake_worker)

        self._thread = threading.Thread(
            target=self._listen, args=(connect, wake), name="fsm-listen", daemon=True
        )
        self._thread.start()

    @classmethod
    def start(cls, store: Store, wake_worker: Callable[[], None]) -> Listener | None:
        """Listen for ``store`` (``None`` on SQLite, which has no notifications); call
        ``wake_worker`` on the running loop for each notification."""
        db = store.db
        if store.due_channel is None:
            return None
        import psycopg

        def connect() -> Any:
            return psycopg.connect(dbname=db.database, autocommit=True, **db.connect_params)

        return cls(wake_worker, connect, store.due_channel)

    def _listen(self, connect: Callable[[], Any], wake: Callable[[], None]) -> None:
        from psycopg import sql

        listen = sql.SQL("LISTEN {}").format(sql.Identifier(self._channel))
        failures = 0
        while not self._closed.is_set():
            try:
                with connect() as conn:
                    conn.execute(listen)
                    if failures:
                        log.warning("listening for notifications again")
                    failures = 0
                    wake()
                    while not self._closed.is_set():
                        for _ in conn.notifies(timeout=0.5):
                            wake()
            except Exception as exc:
                if self._closed.is_set():
                    return
                failures += 1
                delay = backoff(failures)
                # The worker's loop logs every failure of the outage; this only its start.
                log.log(
                    logging.WARNING if failures == 1 else logging.DEBUG,
                    "notification connection lost (failure %d): %s; reconnecting in %.2fs",
                    failures,
                    error_line(exc),
                    delay,
                )
                self._closed.wait(delay)

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=2)
