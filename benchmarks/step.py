"""Cost of one executor step on SQLite against an honest raw sqlite3 commit, in one run.

A no-op action of 5 steps is driven through the executor on a SQLite file (WAL,
synchronous=NORMAL, as `fsm.Store.sqlite` opens it). The baseline (`baseline.py`) is raw
``sqlite3`` on the same settings: BEGIN IMMEDIATE, an UPDATE of one row with a *new* payload
of the size fsm stores, a log-row INSERT, COMMIT; the script checks that every baseline
commit appends to the WAL. Figures, each a median in microseconds:

- start: `Executor.start` of a new action (one INSERT transaction);
- step: one drive runs all 5 steps (a claim, then 5 checkpoint commits) / 5;
- step, log off: the same with ``log_transitions=False``;
- step, own drive: every step is a drive of its own (claim, step, park: 2 commits);
- the lateness of a 1 ms ticker sharing the loop with the drives.

Ratios are against the baseline measured in the same run; the target (issue 12) is a
sequential step <= 2.5x the raw commit.

    python benchmarks/step.py [--actions 400] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import tempfile
import time

import attrs
from baseline import SqliteBaseline, median, pct, stored_payload_size, wal_frames

import fsm

STEPS = 5
TARGET = 2.5


@attrs.frozen
class NoOp(fsm.Action[None]):
    """Five steps that do nothing but move to the next state."""

    name = "noop"
    key: str
    n: int = 0
    note: str = "x" * 64

    @property
    def id(self) -> str:
        return self.key

    @property
    def state(self) -> str:
        return f"s{self.n}"

    def advance(self, ctx: fsm.StepContext[None]) -> fsm.Outcome:
        if self.n + 1 >= STEPS:
            return fsm.Done()
        return fsm.Next(attrs.evolve(self, n=self.n + 1))


@attrs.frozen
class Parking(NoOp):
    """NoOp that parks after every step: each step is a drive of its own."""

    name = "parking"

    def advance(self, ctx: fsm.StepContext[None]) -> fsm.Outcome:
        if self.n + 1 >= STEPS:
            return fsm.Done()
        return fsm.Park(attrs.evolve(self, n=self.n + 1))


@attrs.frozen
class Chatty(NoOp):
    """NoOp whose steps await once, as a step talking to a server would."""

    name = "chatty"

    async def advance(self, ctx: fsm.StepContext[None]) -> fsm.Outcome:  # type: ignore[override]
        await asyncio.sleep(0)
        return super().advance(ctx)


async def executor_us(path: str, n_actions: int, log: bool = True) -> dict[str, list[float]]:
    """Per-call `start` time and per-step drive time (one drive at a time), microseconds.

    Also returns, under ``wal``, the WAL frames fsm appended per step (one sample).
    """
    store = fsm.Store.sqlite(path, log_transitions=log)
    ex: fsm.Executor[None] = fsm.Executor(store, kinds=[NoOp])
    starts = []
    for i in range(n_actions):
        t0 = time.perf_counter_ns()
        await ex.start(NoOp(f"a{i}"))
        starts.append((time.perf_counter_ns() - t0) / 1000)
    page = truncate_wal(path)
    before = wal_frames(path, page)
    steps, wal = [], []
    for i in range(n_actions):
        t0 = time.perf_counter_ns()
        result = await ex.drive(f"a{i}")
        steps.append((time.perf_counter_ns() - t0) / 1000 / STEPS)
        assert result.status is fsm.DriveStatus.DONE, result
        if i + 1 == min(20, n_actions):  # <= 100 steps: below the automatic checkpoint
            wal = [(wal_frames(path, page) - before) / ((i + 1) * STEPS)]
    store.close()
    return {"start": starts, "step": steps, "wal": wal}


async def own_drive_us(path: str, n_actions: int) -> list[float]:
    """Per-step time when every step is its own drive (claim, step, park), microseconds."""
    store = fsm.Store.sqlite(path)
    ex: fsm.Executor[None] = fsm.Executor(store, kinds=[Parking])
    for i in range(n_actions):
        await ex.start(Parking(f"p{i}"))
    samples = []
    for _ in range(STEPS):
        for i in range(n_actions):
            t0 = time.perf_counter_ns()
            await ex.drive(f"p{i}")
            samples.append((time.perf_counter_ns() - t0) / 1000)
    assert not store.live_ids(), "every parking action should have ended"
    store.close()
    return samples


async def loop_lag_us(path: str, n_actions: int, concurrency: int) -> list[float]:
    """Lateness of a 1 ms ticker while drives (``concurrency`` at a time) share the loop."""
    store = fsm.Store.sqlite(path)
    ex: fsm.Executor[None] = fsm.Executor(store, kinds=[Chatty])
    for i in range(n_actions):
        await ex.start(Chatty(f"c{i}"))
    lags: list[float] = []
    running = True

    async def ticker() -> None:
        while running:
            t0 = time.perf_counter()
            await asyncio.sleep(0.001)
            lags.append((time.perf_counter() - t0 - 0.001) * 1e6)

    tick = asyncio.create_task(ticker())
    report = await ex.resume_all(concurrency=concurrency)
    assert report.count(fsm.DriveStatus.DONE) == n_actions
    running = False
    await tick
    store.close()
    return lags


def truncate_wal(path: str) -> int:
    """Checkpoint and truncate a SQLite file's WAL from a connection of our own; its page size."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return int(conn.execute("PRAGMA page_size").fetchone()[0])
    finally:
        conn.close()


def payload_size(tmp: str) -> int:
    """The size of the payload fsm stores for a NoOp (read back from a store's file)."""
    path = os.path.join(tmp, "size.sqlite")
    store = fsm.Store.sqlite(path)
    asyncio.run(fsm.Executor(store, kinds=[NoOp]).start(NoOp("a" * 16)))
    store.close()
    return stored_payload_size(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--actions", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    got: dict[str, list[float]] = {}

    def add(name: str, sample: list[float]) -> None:
        got.setdefault(name, []).extend(sample)

    with tempfile.TemporaryDirectory() as tmp:
        size = payload_size(tmp)
        for r in range(args.rounds):
            raw = SqliteBaseline(os.path.join(tmp, f"raw{r}.sqlite"), "x" * size)
            add("wal raw", [raw.check_wal_grows()])
            add("raw", raw.samples_us(args.actions * STEPS))
            pragmas = raw.pragmas
            raw.close()
            n = args.actions
            ex = asyncio.run(executor_us(os.path.join(tmp, f"ex{r}.sqlite"), n))
            add("start", ex["start"])
            add("step", ex["step"])
            add("wal fsm", ex["wal"])
            add("nolog", asyncio.run(executor_us(os.path.join(tmp, f"nl{r}"), n, False))["step"])
            add("own", asyncio.run(own_drive_us(os.path.join(tmp, f"od{r}"), n)))
            add("lag1", asyncio.run(loop_lag_us(os.path.join(tmp, f"l{r}"), n, 1)))
            add("lag32", asyncio.run(loop_lag_us(os.path.join(tmp, f"m{r}"), n, 32)))
    raw_med = median(got["raw"])
    print(
        f"baseline: raw sqlite3, journal_mode={pragmas['journal_mode']}, "
        f"synchronous={pragmas['synchronous']} (1 = NORMAL), payload {size} bytes, new each commit"
    )
    print(
        f"WAL frames appended per commit: raw {median(got['wal raw']):.1f}, "
        f"fsm step {median(got['wal fsm']):.1f} (checked: every raw commit writes)"
    )
    rows = [
        ("raw sqlite3 BEGIN/UPDATE/log INSERT/COMMIT", "raw", None),
        ("Executor.start", "start", None),
        ("executor step (one drive, 5 steps)", "step", TARGET),
        ("executor step, log off", "nolog", None),
        ("executor step, own drive (claim/step/park)", "own", None),
    ]
    for label, key, target in rows:
        med = median(got[key])
        line = f"{label:44s} median {med:7.1f} us  ratio {med / raw_med:5.2f}x"
        if target is not None:
            verdict = "met" if med / raw_med <= target else "NOT met"
            line += f"  (target <= {target}x: {verdict})"
        print(line)
    for concurrency, key in ((1, "lag1"), (32, "lag32")):
        sample = got[key]
        print(
            f"1 ms ticker lateness, drives {concurrency:2d} at a time: "
            f"median {median(sample):6.0f} us, p99 {pct(sample, 0.99):6.0f} us, "
            f"max {max(sample):6.0f} us"
        )


if __name__ == "__main__":
    main()
