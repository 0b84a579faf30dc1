"""Per-step cost of fsm against DBOS Transact, with the same durability settings, in one run.

The same work on both: a durable 5-step workflow whose steps do nothing, started and run to
its end (fsm: ``Executor.drive(action)``; DBOS: calling an ``@DBOS.workflow()`` that awaits
five ``@DBOS.step()`` calls), first one at a time, then 100 at once (``asyncio.gather``). The
per-step cost is the wall time / (workflows x 5), the start and the end included on both.

Same durability: both on a SQLite file in WAL mode with synchronous=NORMAL. DBOS opens its
SQLite system database with the defaults (a rollback journal, synchronous=FULL), so it is
given an engine of ours (the documented ``system_database_engine`` setting) that sets WAL and
NORMAL on every connection, with what DBOS's own engine sets (IMMEDIATE transactions, busy
timeout, foreign keys). The script then reads ``journal_mode`` and ``synchronous`` back from
a connection of DBOS's own pool, and fsm's from its store, and refuses to report if they
differ. Then the same on PostgreSQL (``--postgres``, '' to skip): DBOS's system schema and
fsm's tables each in a fresh schema, both with the server's ``synchronous_commit``. Target
(issue 12): fsm at least 50x cheaper per step, sequential and concurrent.
The honest raw commit of `baseline.py` is printed too, for scale. Needs ``pip install dbos``
(in the ``bench`` extra).

    python benchmarks/vs_dbos.py [--workflows 200] [--batches 3] [--width 100] [--postgres URL]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import attrs
import sqlalchemy as sa
from baseline import SqliteBaseline, median
from dbos import DBOS, DBOSConfig

import fsm

STEPS = 5
TARGET = 50.0
SYNCHRONOUS = "NORMAL"
_SYNC_NAMES = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


@attrs.frozen
class NoOp(fsm.Action[None]):
    """Five steps that do nothing but move to the next state."""

    name = "noop"
    key: str
    n: int = 0

    @property
    def id(self) -> str:
        return self.key

    @property
    def state(self) -> str:
        return f"s{self.n}"

    async def advance(self, ctx: fsm.StepContext[None]) -> fsm.Outcome:
        if self.n + 1 >= STEPS:
            return fsm.Done()
        return fsm.Next(attrs.evolve(self, n=self.n + 1))


@DBOS.step()
async def dbos_step(i: int) -> int:
    return i + 1


@DBOS.workflow()
async def dbos_workflow(key: str) -> int:
    n = 0
    for _ in range(STEPS):
        n = await dbos_step(n)
    return n


# -- fsm --------------------------------------------------------------------------------------


async def fsm_run(
    store: fsm.Store, args: argparse.Namespace
) -> tuple[float, float, dict[str, str]]:
    """fsm's per-step microseconds: sequential, then ``width`` at once; and its PRAGMAs."""
    pragmas = {}
    if store.is_sqlite:
        pragmas = {
            "journal_mode": str(store.db.execute_sql("PRAGMA journal_mode").fetchone()[0]),
            "synchronous": _SYNC_NAMES[store.db.execute_sql("PRAGMA synchronous").fetchone()[0]],
        }
    ex: fsm.Executor[None] = fsm.Executor(store, kinds=[NoOp])
    t0 = time.perf_counter_ns()
    for i in range(args.workflows):
        result = await ex.drive(NoOp(f"s{i}"))
        assert result.status is fsm.DriveStatus.DONE, result
    sequential = (time.perf_counter_ns() - t0) / 1000 / (args.workflows * STEPS)
    concurrent = []
    for b in range(args.batches):
        t0 = time.perf_counter_ns()
        results = await asyncio.gather(*(ex.drive(NoOp(f"c{b}-{i}")) for i in range(args.width)))
        concurrent.append((time.perf_counter_ns() - t0) / 1000 / (args.width * STEPS))
        assert all(r.status is fsm.DriveStatus.DONE for r in results)
    store.close()
    return sequential, median(concurrent), pragmas


# -- DBOS -------------------------------------------------------------------------------------


def dbos_engine(path: str) -> sa.Engine:
    """A SQLite engine set up as DBOS's own (`_sys_db_sqlite`), plus WAL and ``SYNCHRONOUS``."""
    engine = sa.create_engine(f"sqlite:///{path}")

    @sa.event.listens_for(engine, "connect")
    def setup(dbapi_conn: Any, record: Any) -> None:
        dbapi_conn.isolation_level = "IMMEDIATE"
        dbapi_conn.execute("PRAGMA busy_timeout=30000")
        dbapi_conn.execute("PRAGMA foreign_keys=ON")
        dbapi_conn.execute("PRAGMA journal_mode=WAL")
        dbapi_conn.execute(f"PRAGMA synchronous={SYNCHRONOUS}")

    return engine


def dbos_pragmas(dbos: DBOS) -> dict[str, str]:
    """``journal_mode`` and ``synchronous`` on a connection from DBOS's own pool."""
    engine = dbos._sys_db.engine  # DBOS's system database engine (no public accessor)
    with engine.connect() as conn:
        mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
        sync = conn.exec_driver_sql("PRAGMA synchronous").scalar()
    return {"journal_mode": str(mode), "synchronous": _SYNC_NAMES.get(int(sync or 0), str(sync))}


async def dbos_run(args: argparse.Namespace) -> tuple[float, float]:
    """DBOS's per-step microseconds: sequential, then ``width`` workflows at once."""
    tag = uuid.uuid4().hex[:6]
    t0 = time.perf_counter_ns()
    for i in range(args.workflows):
        assert await dbos_workflow(f"{tag}-s{i}") == STEPS
    sequential = (time.perf_counter_ns() - t0) / 1000 / (args.workflows * STEPS)
    concurrent = []
    for b in range(args.batches):
        t0 = time.perf_counter_ns()
        got = await asyncio.gather(*(dbos_workflow(f"{tag}-c{b}-{i}") for i in range(args.width)))
        concurrent.append((time.perf_counter_ns() - t0) / 1000 / (args.width * STEPS))
        assert got == [STEPS] * args.width
    return sequential, median(concurrent)


def with_dbos(
    path: str, args: argparse.Namespace, schema: str | None = None
) -> tuple[float, float, dict[str, str]]:
    """Launch DBOS on ``path`` (SQLite), or on ``args.postgres`` in ``schema``; run its
    workflows; destroy it."""
    config: DBOSConfig = {"name": "fsm-bench", "run_admin_server": False, "log_level": "WARNING"}
    if schema is None:
        config["system_database_url"] = f"sqlite:///{path}"
        config["system_database_engine"] = dbos_engine(path)
    else:
        config["system_database_url"] = args.postgres
        config["dbos_system_schema"] = schema
    dbos = DBOS(config=config)
    DBOS.launch()
    try:
        pragmas = dbos_pragmas(dbos) if schema is None else {}
        sequential, concurrent = asyncio.run(dbos_run(args))
    finally:
        DBOS.destroy()
    return sequential, concurrent, pragmas


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--workflows", type=int, default=200, help="run one at a time")
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--width", type=int, default=100, help="workflows run at once")
    parser.add_argument(
        "--postgres",
        default=os.environ.get("FSM_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"),
        help="also compare on this PostgreSQL server (fresh schemas); '' to skip",
    )
    args = parser.parse_args()
    logging.getLogger("dbos").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        raw = SqliteBaseline(os.path.join(tmp, "raw.sqlite"), "x" * 100, SYNCHRONOUS)
        raw.check_wal_grows()
        raw_us = median([raw.batch_us(500) for _ in range(5)])
        raw.close()
        d_seq, d_con, d_pragmas = with_dbos(os.path.join(tmp, "dbos.sqlite"), args)
        store = fsm.Store.sqlite(os.path.join(tmp, "fsm.sqlite"), synchronous=SYNCHRONOUS)
        f_seq, f_con, f_pragmas = asyncio.run(fsm_run(store, args))
    print(f"DBOS SQLite system database: {d_pragmas} (read from a connection of DBOS's pool)")
    print(f"fsm SQLite store:            {f_pragmas}")
    if d_pragmas != f_pragmas:
        raise SystemExit("durability settings differ: the comparison would not be fair")
    print(f"raw sqlite3 commit (baseline.py, same settings, 100-byte payload): {raw_us:7.1f} us")
    report("SQLite", args, (d_seq, d_con), (f_seq, f_con))
    if args.postgres:
        with pg_schema(args.postgres) as (fsm_url, _), pg_schema(args.postgres) as (_, dbos_schema):
            d_seq, d_con, _ = with_dbos("", args, dbos_schema)
            store = fsm.open_store(fsm_url)
            f_seq, f_con, _ = asyncio.run(fsm_run(store, args))
        print("PostgreSQL: both with the server's synchronous_commit, each in a fresh schema")
        report("PostgreSQL", args, (d_seq, d_con), (f_seq, f_con))


def report(
    label: str, args: argparse.Namespace, dbos: tuple[float, float], ours: tuple[float, float]
) -> None:
    print(f"{label + ', per step':28s} {'DBOS':>10s} {'fsm':>10s} {'DBOS/fsm':>9s}  target >= 50x")
    for name, d, f in (
        (f"sequential ({args.workflows} workflows)", dbos[0], ours[0]),
        (f"{args.width} concurrent x {args.batches}", dbos[1], ours[1]),
    ):
        verdict = "met" if d / f >= TARGET else "NOT met"
        print(f"{name:28s} {d:8.1f}us {f:8.1f}us {d / f:8.1f}x  {verdict}")


@contextmanager
def pg_schema(server: str) -> Iterator[tuple[str, str]]:
    """A fresh schema on ``server``: a URL whose search_path names it, and its name;
    dropped afterwards."""
    import psycopg

    schema = "fsm_bd_" + uuid.uuid4().hex[:10]
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{server}?options=-c%20search_path%3D{schema}", schema
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


if __name__ == "__main__":
    main()
