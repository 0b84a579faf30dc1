"""Cost of one executor step on SQLite against a raw sqlite3 commit, measured in one run.

A no-op action of 5 steps is driven through the executor on a SQLite file (WAL,
synchronous=NORMAL); the baseline is raw ``sqlite3``: BEGIN, upsert of the same payload,
COMMIT. Prints both medians, the ratio (target <= 3.0), and the longest stall the drives
caused a ticker task sharing the event loop (the store runs on the loop's thread).

    python benchmarks/step.py [--actions 400] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import tempfile
import time

import attrs
import orjson

import fsm

STEPS = 5


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


def raw_commit_us(path: str, n: int) -> list[float]:
    """Median-able samples: one BEGIN / upsert / COMMIT per sample, in microseconds."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=wal")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE IF NOT EXISTS cp (id TEXT PRIMARY KEY, payload TEXT)")
    payload = orjson.dumps(attrs.asdict(NoOp("a" * 16))).decode()
    samples = []
    for i in range(n):
        t0 = time.perf_counter_ns()
        conn.execute("BEGIN")
        conn.execute(
            "INSERT INTO cp (id, payload) VALUES (?, ?) "
            "ON CONFLICT (id) DO UPDATE SET payload = excluded.payload",
            (f"a{i % 50}", payload),
        )
        conn.execute("COMMIT")
        samples.append((time.perf_counter_ns() - t0) / 1000)
    conn.close()
    return samples


async def executor_step_us(path: str, n_actions: int, log: bool = True) -> list[float]:
    """Per-action drive time / STEPS, in microseconds, one drive at a time."""
    store = fsm.Store.sqlite(path, log_transitions=log)
    ex: fsm.Executor[None] = fsm.Executor(store, kinds=[NoOp])
    for i in range(n_actions):
        await ex.start(NoOp(f"a{i}"))
    samples = []
    for i in range(n_actions):
        t0 = time.perf_counter_ns()
        result = await ex.drive(f"a{i}")
        samples.append((time.perf_counter_ns() - t0) / 1000 / STEPS)
        assert result.status is fsm.DriveStatus.DONE, result
    store.close()
    return samples


@attrs.frozen
class Chatty(NoOp):
    """NoOp whose steps await once, as a step talking to a server would."""

    name = "chatty"

    async def advance(self, ctx: fsm.StepContext[None]) -> fsm.Outcome:  # type: ignore[override]
        await asyncio.sleep(0)
        return super().advance(ctx)


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


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--actions", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    raw: list[float] = []
    step: list[float] = []
    nolog: list[float] = []
    lags: list[float] = []
    lags32: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            raw += raw_commit_us(os.path.join(tmp, f"raw{r}.sqlite"), args.actions * STEPS)
            step += asyncio.run(executor_step_us(os.path.join(tmp, f"ex{r}.sqlite"), args.actions))
            nolog += asyncio.run(
                executor_step_us(os.path.join(tmp, f"nl{r}.sqlite"), args.actions, log=False)
            )
            lags += asyncio.run(loop_lag_us(os.path.join(tmp, f"l{r}.sqlite"), args.actions, 1))
            lags32 += asyncio.run(loop_lag_us(os.path.join(tmp, f"m{r}.sqlite"), args.actions, 32))
    raw_med = statistics.median(raw)
    step_med = statistics.median(step)
    nolog_med = statistics.median(nolog)
    print(f"raw sqlite3 BEGIN/upsert/COMMIT  median {raw_med:7.1f} us  ({len(raw)} samples)")
    print(f"executor step                    median {step_med:7.1f} us  ({len(step)} drives)")
    print(f"executor step, log off           median {nolog_med:7.1f} us")
    print(f"ratio step / raw commit                 {step_med / raw_med:7.2f}   (target <= 3.0)")
    print(f"ratio step (log off) / raw commit       {nolog_med / raw_med:7.2f}")
    for concurrency, sample in ((1, lags), (32, lags32)):
        sample.sort()
        print(
            f"1 ms ticker lateness, drives {concurrency:2d} at a time: "
            f"median {statistics.median(sample):6.0f} us, "
            f"p99 {sample[int(len(sample) * 0.99)]:6.0f} us, max {sample[-1]:6.0f} us"
        )


if __name__ == "__main__":
    main()
