"""The honest raw commit every fsm benchmark is measured against, in the same run.

What a step must make durable, written by hand through the bare driver: one transaction that
UPDATEs one row (a *new* payload of the same size as fsm's, plus the step columns) and
INSERTs one log row. The tables mirror fsm's ``fsm_action`` and ``fsm_transition`` (schema
v2, primary keys only: the step's UPDATE touches no indexed column). The payload changes on
every commit: rewriting identical bytes lets SQLite skip the write entirely (the WAL stays
empty), which made the old baseline about 1.7x too cheap. `SqliteBaseline.check_wal_grows`
proves, in the run, that every commit appends frames to the WAL.

Used by step.py, concurrent.py and vs_dbos.py (run as scripts: this directory is on
``sys.path``).
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import time
from collections.abc import Sequence
from typing import Any

ACTION_DDL = (
    "CREATE TABLE IF NOT EXISTS bench_action (id VARCHAR(200) NOT NULL PRIMARY KEY, "
    "kind VARCHAR(200) NOT NULL, state VARCHAR(200) NOT NULL, version INTEGER NOT NULL, "
    "payload TEXT NOT NULL, seq INTEGER NOT NULL, attempts INTEGER NOT NULL, last_error TEXT, "
    "wake_at REAL, lease_owner VARCHAR(255), lease_expires REAL, epoch INTEGER NOT NULL, "
    "quarantine TEXT, step_outcome VARCHAR(16), step_via VARCHAR(16), step_duration REAL, "
    "created_at REAL NOT NULL, updated_at REAL NOT NULL, incarnation VARCHAR(32) NOT NULL, "
    "cause TEXT, broken BOOLEAN NOT NULL DEFAULT FALSE, notified BOOLEAN NOT NULL DEFAULT FALSE)"
)
LOG_DDL = (
    "CREATE TABLE IF NOT EXISTS bench_log (id {serial} PRIMARY KEY, "
    "action_id VARCHAR(200) NOT NULL, kind VARCHAR(200) NOT NULL, seq INTEGER NOT NULL, "
    "from_state VARCHAR(200) NOT NULL, to_state VARCHAR(200), outcome VARCHAR(16) NOT NULL, "
    "via VARCHAR(16) NOT NULL, attempt INTEGER NOT NULL, error TEXT, duration REAL NOT NULL, "
    "at REAL NOT NULL)"
)
_INSERT_ROW = (
    "INSERT INTO bench_action (id, kind, state, version, payload, seq, attempts, epoch, "
    "created_at, updated_at, incarnation, lease_owner, lease_expires) "
    "VALUES ({p}, 'noop', 's0', 1, {p}, 0, 0, 1, 0, 0, 'inc', 'me', 1e18)"
)
_UPDATE = (
    "UPDATE bench_action SET state = {p}, payload = {p}, seq = {p}, updated_at = {p}, "
    "step_outcome = 'next', step_via = 'step', step_duration = {p} "
    "WHERE id = {p} AND epoch = 1"
)
_LOG = (
    "INSERT INTO bench_log (action_id, kind, seq, from_state, to_state, outcome, via, attempt, "
    "error, duration, at) VALUES ({p}, 'noop', {p}, {p}, {p}, 'next', 'step', 0, NULL, {p}, {p})"
)
ROWS = 100


def new_payload(template: str, i: int) -> str:
    """``template`` with its last 12 characters replaced by a counter: the same size, never
    the same bytes twice in a row."""
    return template[:-12] + f"{i:012d}"


def commit_args(payload: str, i: int) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """Parameters of commit ``i``'s UPDATE and log INSERT (row ``i % ROWS``)."""
    row, now = f"a{i % ROWS}", time.time()
    update = (f"s{i % 5}", new_payload(payload, i), i, now, 1e-5, row)
    log = (row, i, f"s{i % 5}", f"s{(i + 1) % 5}", 1e-5, now)
    return update, log


class SqliteBaseline:
    """A raw ``sqlite3`` connection on its own file, set up as fsm's SQLite store sets up its
    own (WAL, ``synchronous``, foreign keys on, ``BEGIN IMMEDIATE``)."""

    def __init__(self, path: str, payload: str, synchronous: str = "NORMAL") -> None:
        self.path = path
        self.payload = payload
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=wal")
        self.conn.execute(f"PRAGMA synchronous={synchronous}")
        self.conn.execute("PRAGMA foreign_keys=1")
        self.conn.execute(ACTION_DDL)
        self.conn.execute(LOG_DDL.format(serial="INTEGER"))
        p = "?"
        self.update, self.log = _UPDATE.format(p=p), _LOG.format(p=p)
        for i in range(ROWS):
            self.conn.execute(_INSERT_ROW.format(p=p), (f"a{i}", payload))
        self.i = 0
        self.page_size = self.conn.execute("PRAGMA page_size").fetchone()[0]
        self.pragmas = {
            name: self.conn.execute(f"PRAGMA {name}").fetchone()[0]
            for name in ("journal_mode", "synchronous")
        }

    def commit(self) -> None:
        """One durable step's worth of writes: BEGIN IMMEDIATE, UPDATE, log INSERT, COMMIT."""
        update, log = commit_args(self.payload, self.i)
        self.i += 1
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.execute(self.update, update)
        self.conn.execute(self.log, log)
        self.conn.execute("COMMIT")

    def samples_us(self, n: int) -> list[float]:
        """``n`` commits, each timed alone, in microseconds."""
        out = []
        for _ in range(n):
            t0 = time.perf_counter_ns()
            self.commit()
            out.append((time.perf_counter_ns() - t0) / 1000)
        return out

    def batch_us(self, n: int) -> float:
        """Microseconds per commit over ``n`` back-to-back commits."""
        t0 = time.perf_counter_ns()
        for _ in range(n):
            self.commit()
        return (time.perf_counter_ns() - t0) / 1000 / n

    def check_wal_grows(self, n: int = 100) -> float:
        """WAL frames appended per commit over ``n`` commits; raises if a commit wrote none.

        The WAL is truncated first, and ``n`` stays far below the 1,000-page automatic
        checkpoint, so the file only grows: its size counts the frames written.
        """
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        before = wal_frames(self.path, self.page_size)
        for _ in range(n):
            self.commit()
        frames = wal_frames(self.path, self.page_size) - before
        if frames < n:
            raise SystemExit(f"baseline is not honest: {n} commits appended {frames} WAL frames")
        return frames / n

    def close(self) -> None:
        self.conn.close()


def wal_frames(path: str, page_size: int) -> int:
    """Frames in a SQLite WAL file (32-byte header, then 24-byte header + page per frame)."""
    try:
        size = os.path.getsize(path + "-wal")
    except FileNotFoundError:
        return 0
    return max(0, size - 32) // (page_size + 24)


class PostgresBaseline:
    """The same commit through a bare psycopg connection (autocommit off: one transaction
    per commit), in the schema ``url``'s search_path names."""

    def __init__(self, url: str, payload: str) -> None:
        import psycopg

        self.payload = payload
        self.conn = psycopg.connect(url)
        p = "%s"
        self.update, self.log = _UPDATE.format(p=p), _LOG.format(p=p)
        with self.conn.transaction():
            self.conn.execute(ACTION_DDL)
            self.conn.execute(LOG_DDL.format(serial="BIGSERIAL"))
            for i in range(ROWS):
                self.conn.execute(_INSERT_ROW.format(p=p), (f"a{i}", payload))
        row = self.conn.execute("SHOW synchronous_commit").fetchone()
        self.conn.rollback()
        self.synchronous_commit = row[0] if row else "?"
        self.i = 0

    def commit(self) -> None:
        update, log = commit_args(self.payload, self.i)
        self.i += 1
        with self.conn.transaction():
            self.conn.execute(self.update, update)
            self.conn.execute(self.log, log)

    def batch_us(self, n: int) -> float:
        t0 = time.perf_counter_ns()
        for _ in range(n):
            self.commit()
        return (time.perf_counter_ns() - t0) / 1000 / n

    def close(self) -> None:
        self.conn.close()


def stored_payload_size(path: str) -> int:
    """The size of a payload fsm stored in a SQLite file (any live row)."""
    conn = sqlite3.connect(path)
    try:
        row = conn.execute("SELECT length(payload) FROM fsm_action LIMIT 1").fetchone()
    finally:
        conn.close()
    if row is None:
        raise SystemExit(f"no live action in {path} to read the payload size from")
    return int(row[0])


def pct(sample: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``sample`` (nearest rank)."""
    ordered = sorted(sample)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def median(sample: Sequence[float]) -> float:
    return statistics.median(sample)
