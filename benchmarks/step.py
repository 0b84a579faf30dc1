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

    namespace = "noop"
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


async def executor_step_us(path: str, n_actions: int) -> tuple[list[float], float]:
    """Per-action drive time / STEPS, and the worst ticker lag seen while driving."""
    store = fsm.Store.sqlite(path)
    ex: fsm.Executor[None] = fsm.Executor(store, kinds=[NoOp])
    for i in range(n_actions):
        await ex.start(NoOp(f"a{i}"))
    worst_lag = 0.0
    running = True

    async def ticker() -> None:
        nonlocal worst_lag
        while running:
            t0 = time.perf_counter()
            await asyncio.sleep(0)
            worst_lag = max(worst_lag, time.perf_counter() - t0)

    tick = asyncio.create_task(ticker())
    samples = []
    for i in range(n_actions):
        t0 = time.perf_counter_ns()
        result = await ex.drive(f"a{i}")
        samples.append((time.perf_counter_ns() - t0) / 1000 / STEPS)
        assert result.status is fsm.DriveStatus.DONE, result
        await asyncio.sleep(0)
    running = False
    await tick
    store.close()
    return samples, worst_lag * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actions", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    raw: list[float] = []
    step: list[float] = []
    lag = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            raw += raw_commit_us(os.path.join(tmp, f"raw{r}.sqlite"), args.actions * STEPS)
            s, worst = asyncio.run(
                executor_step_us(os.path.join(tmp, f"ex{r}.sqlite"), args.actions)
            )
            step += s
            lag = max(lag, worst)
    raw_med = statistics.median(raw)
    step_med = statistics.median(step)
    print(f"raw sqlite3 commit      median {raw_med:8.1f} us  ({len(raw)} samples)")
    print(
        f"executor step           median {step_med:8.1f} us  ({len(step)} drives of {STEPS} steps)"
    )
    print(f"ratio step / raw commit        {step_med / raw_med:8.2f}   (target <= 3.0)")
    print(f"longest event-loop stall       {lag:8.1f} us  (one step's store calls)")


if __name__ == "__main__":
    main()
