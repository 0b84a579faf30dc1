"""SQLite's WAL kept short: checkpoints run by the committer's thread, not inside a commit.

SQLite's own auto-checkpoint is off on the committer's connection: it runs inside the COMMIT
that crosses 1,000 WAL pages, a stall of milliseconds on whichever caller's path that is, the
event loop's included. The committer counts every write instead and, every
`CHECKPOINT_EVERY`, runs `checkpoint_wal` from its thread (or inline, on an event loop with
nothing else to do).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from fsm.store.connection import Link

log = logging.getLogger("fsm.store")

CHECKPOINT_EVERY = 400
"""Writes (on any thread) after which the committer runs a PASSIVE WAL checkpoint: about
the WAL SQLite's own auto-checkpoint would keep (`fsm.store.files` turns that one off)."""


def checkpoint_wal(link: Link, batched: bool) -> None:
    """SQLite: copy the WAL back into the database file, off the event loop's thread.

    SQLite starts the WAL over only when a write begins after a checkpoint that copied
    all of it; beside a steady stream of writes a checkpoint never catches up and the
    WAL grows for ever. So the checkpoint is a fence (`fsm.store.committer.Job.fence`):
    writers queue behind it for the milliseconds it takes (the event loop's drives wait,
    the loop does not), and an empty write transaction right after it starts the WAL over.
    ``batched``: the committer's calling convention (a checkpoint always runs alone).
    """
    row = pragma(link, "wal_checkpoint(PASSIVE)")
    if row is None or row[0] != 0 or row[1] != row[2]:
        return  # another process is writing or reading: a later checkpoint catches up
    try:
        conn = link.connection()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("COMMIT")
    except Exception as exc:
        log.debug("restarting the WAL: %s", exc)
        if not link.idle():
            with contextlib.suppress(Exception):
                link.connection().execute("ROLLBACK")


def pragma(link: Link, pragma: str) -> Any:
    """Run a PRAGMA on this thread's connection, past the test hooks (not a write); its
    first row, or ``None``."""
    try:
        return link.connection().execute(f"PRAGMA {pragma}").fetchone()
    except Exception as exc:  # a busy reader or a lost connection: the next one catches up
        log.debug("PRAGMA %s: %s", pragma, exc)
        return None
