"""Flat as the table grows: the polls and the listing at N live actions against 1,000.

For each database (SQLite file, WAL; PostgreSQL at ``--pg``), two tables are built with
`fsm.testing.bulk.fill` (one set-based INSERT of well-formed rows through the store's own
schema): ``--small`` rows and ``--rows`` rows. On each it times, as medians of ``--repeat``
calls:

- the idle poll, ``Store.next_wake()``;
- a claim of 16 due rows, ``Store.claim_due(limit=16)`` (the leases are let go, untimed,
  after each claim, so every claim finds the same front of the queue);
- the first page of ``fsm actions list`` (50 rows, ``--json``, in-process, opening the
  store included), unfiltered and with the filters an operator uses most (``--status
  failed``, ``--status quarantined``, ``--status ended --since 2d``); the tables also hold
  as many kept outcomes as live rows (`fsm.testing.bulk.fill_ended`).

and prints the ratio large / small (target <= 2x). Then, in a child process so its peak RSS
is its own: ``Executor.resume_all(concurrency=16)`` over ``--resume-rows`` live actions
(default: ``--rows`` up to 100,000, since a resume drives every row: about 10 minutes per
million on SQLite here), run twice: once for its peak traced Python memory while it runs,
once without tracemalloc (whose own bookkeeping would swell the RSS) for the child's
ru_maxrss (target < 200 MiB at a million; the bytes per action are printed, and what they
make at a million, so a smaller run extrapolates). Last, the memory
a drive holds while it sleeps through a park: ``--parked`` drives, each ``executor.drive(id,
UNTIL_DONE)`` in a task of its own (the task counted), parked with a wake-up an hour away,
measured with tracemalloc (target <= 2 KiB each; ``FSM_SCALE_TOP=1`` prints what holds it).

    python benchmarks/scale.py [--rows 1000000] [--small 1000] [--db sqlite,postgres]
                               [--pg URL] [--repeat 200] [--resume-rows N] [--parked 2000]

The machine may be shared: run it three times and read the min and median.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import fsm
from fsm.cli.app import main as fsm_main
from fsm.testing import bulk

PG_URL = os.environ.get("FSM_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
MIB = 1024 * 1024


@contextmanager
def database(kind: str, pg: str, tmp: str, name: str) -> Iterator[str]:
    """A fresh empty database: a SQLite file in ``tmp``, or a PostgreSQL schema (dropped)."""
    if kind == "sqlite":
        yield os.path.join(tmp, f"{name}.sqlite")
        return
    import psycopg

    schema, url = bulk.pg_schema_url(pg)
    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield url
    finally:
        with psycopg.connect(pg, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def median_us(call: Callable[[], object], repeat: int, after: Callable[[], object]) -> float:
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        call()
        samples.append((time.perf_counter() - t0) * 1e6)
        after()
    return statistics.median(samples)


def polls(url: str, repeat: int) -> dict[str, float]:
    """Median microseconds of the idle poll, a claim of 16 and the first page of the listing."""
    store = fsm.open_store(url)
    db = store.db
    release = (
        "UPDATE fsm_action SET lease_owner = NULL, lease_expires = NULL "
        f"WHERE lease_owner = {db.param}"
    )
    try:
        figures = {
            "idle poll (next_wake)": median_us(store.next_wake, repeat, lambda: None),
            "claim 16 due (claim_due)": median_us(
                lambda: store.claim_due("bench", bulk.NOW, 16),
                repeat,
                lambda: db.execute_sql(release, ("bench",)),
            ),
        }
    finally:
        store.close()
    out = io.StringIO()

    def first_page(*filters: str) -> Callable[[], None]:
        def run() -> None:
            out.seek(0)
            out.truncate()
            argv = ["actions", "list", "--db", url, "--json", "--limit", "50", *filters]
            if fsm_main(argv, stdout=out) != 0:
                raise SystemExit(f"fsm actions list failed on {url}")

        return run

    pages = {
        "first page (fsm actions list)": (),
        "first page, --status failed": ("--status", "failed"),
        "first page, --status quarantined": ("--status", "quarantined"),
        "first page, --since (ended)": ("--status", "ended", "--since", "2d"),
    }
    for name, filters in pages.items():
        figures[name] = median_us(first_page(*filters), max(5, repeat // 10), lambda: None)
    assert len(json.loads(out.getvalue())) > 0, "the listing's first page holds rows"
    return figures


def resume_child(url: str, traced: bool) -> None:
    """In the child: resume every live action; print its peak traced memory (``traced``: the
    Python allocations, with tracemalloc's own cost in the RSS) or its ru_maxrss (not traced:
    the process as the OS sees it)."""
    store = fsm.open_store(url)
    executor = fsm.Executor(store, kinds=[bulk.ScaleAction])

    async def run() -> tuple[fsm.ResumeReport, int]:
        report = await executor.resume_all(concurrency=16)
        return report, tracemalloc.get_traced_memory()[1] if traced else 0

    if traced:
        tracemalloc.start()
    t0 = time.perf_counter()
    report, peak = asyncio.run(run())
    seconds = time.perf_counter() - t0
    tracemalloc.stop()
    store.close()
    print(
        json.dumps(
            {
                "actions": report.total,
                "parked": report.count(fsm.DriveStatus.PARKED),
                "seconds": seconds,
                "traced_peak": peak,
                "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            }
        )
    )


def resume(url: str, traced: bool) -> dict[str, float]:
    """Resume the live actions at ``url`` in a child process; what it printed."""
    flag = "--child-resume-traced" if traced else "--child-resume"
    proc = subprocess.run(
        [sys.executable, __file__, flag, url], check=True, capture_output=True, text=True
    )
    result: dict[str, float] = json.loads(proc.stdout.splitlines()[-1])
    return result


def parked_bytes(url: str, drives: int) -> float:
    """Traced bytes per drive sleeping through a park (UNTIL_DONE, wake-up an hour away)."""
    bulk.fill(url, drives)
    store = fsm.open_store(url)
    executor = fsm.Executor(store, kinds=[bulk.ScaleAction])
    ids = [f"a{i:09d}" for i in range(32, drives) if i % 1000 != 7]

    async def run() -> float:
        # warm every cache (statements, codecs, loggers) with one drive to its first park
        await executor.drive(ids[0])
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        # a task per drive, as a worker makes: the task's own cost is counted
        until_done = fsm.DriveMode.UNTIL_DONE
        tasks = [asyncio.create_task(executor.drive(i, until_done)) for i in ids]
        while not all(i in executor.naps for i in ids):
            await asyncio.sleep(0.01)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
        if os.environ.get("FSM_SCALE_TOP"):
            for stat in tracemalloc.take_snapshot().statistics("traceback")[:8]:
                print(f"  {stat.size / len(ids):8.0f} B/drive", *stat.traceback.format()[-4:])
        tracemalloc.stop()
        executor.stop()
        await asyncio.gather(*tasks)
        return held / len(ids)

    try:
        return asyncio.run(run())
    finally:
        store.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--small", type=int, default=1_000)
    p.add_argument("--db", default="sqlite,postgres")
    p.add_argument("--pg", default=PG_URL)
    p.add_argument("--repeat", type=int, default=200)
    p.add_argument("--resume-rows", type=int, default=None)
    p.add_argument("--parked", type=int, default=2_000)
    p.add_argument("--child-resume", metavar="URL", help=argparse.SUPPRESS)
    p.add_argument("--child-resume-traced", metavar="URL", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child_resume or args.child_resume_traced:
        resume_child(args.child_resume or args.child_resume_traced, bool(args.child_resume_traced))
        return
    resume_rows = min(args.rows, 100_000) if args.resume_rows is None else args.resume_rows
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.db.split(","):
            print(f"== {kind}: {args.small:,} vs {args.rows:,} live actions")
            figures = {}
            for rows in (args.small, args.rows):
                with database(kind, args.pg, tmp, f"t{rows}") as url:
                    t0 = time.perf_counter()
                    bulk.fill(url, rows)
                    bulk.fill_ended(url, rows)
                    print(
                        f"  built {rows:,} live rows and {rows:,} kept outcomes in "
                        f"{time.perf_counter() - t0:.1f} s"
                    )
                    figures[rows] = polls(url, args.repeat)
            for name, small in figures[args.small].items():
                large = figures[args.rows][name]
                print(
                    f"  {name:28} {small:10.1f} us  {large:10.1f} us  "
                    f"ratio {large / small:5.2f}x (target <= 2x)"
                )
            runs = {}
            for traced in (True, False):
                with database(kind, args.pg, tmp, f"resume{traced}") as url:
                    bulk.fill(url, resume_rows)
                    runs[traced] = resume(url, traced)
            r, rss = runs[True], runs[False]["maxrss"]
            per = r["traced_peak"] / r["actions"]
            print(
                f"  resume_all {r['actions']:,} actions ({r['parked']:,} parked) in "
                f"{runs[False]['seconds']:.1f} s: traced peak {r['traced_peak'] / MIB:.1f} MiB "
                f"({per:.0f} B/action; x1,000,000 = {per * 1e6 / MIB:.0f} MiB); untraced "
                f"child's ru_maxrss {rss / MIB:.0f} MiB (target < 200 MiB at 1,000,000)"
            )
            with database(kind, args.pg, tmp, "parked") as url:
                per_drive = parked_bytes(url, args.parked)
            print(f"  a parked drive holds {per_drive:,.0f} B (target <= 2,048 B)")


if __name__ == "__main__":
    main()
