"""Four 0.5 s synchronous effects at concurrency 4: on the event loop, then on the thread pool.

The same kind twice, once as written (``blocking`` left out: each effect holds the event
loop, so the four drives run one after the other) and once with ``blocking = True`` (each
effect runs on a thread of the executor's pool, so the four overlap). Each run starts four
new actions in one executor on a fresh SQLite file and drives them at once with
``asyncio.gather``; the time is from the first drive to the last end. ``time.sleep`` stands
for a blocking client library.

    python benchmarks/blocking.py [--effect 0.5] [--actions 4] [--runs 3]

Expected: about actions x effect seconds on the loop, about one effect with ``blocking``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import attrs

import fsm
from fsm import Kind, State, StepContext


@attrs.frozen
class Call:
    call_id: str


def remote(ctx: StepContext[float], c: Call) -> Call:
    time.sleep(ctx.services)  # a blocking client library's call
    return c


class OnLoop(Kind[Call, float]):
    name = "on_loop"
    a = State(initial=True)
    end = State.done()
    transitions = (a.to(end, effect=remote),)

    @staticmethod
    def action_id(c: Call) -> str:
        return c.call_id


class OnThreads(OnLoop):
    name = "on_threads"
    blocking = True


async def once(kind: type[OnLoop], effect: float, actions: int, path: Path) -> float:
    store = fsm.open_store(f"sqlite:///{path}")
    try:
        ex: fsm.Executor[float] = fsm.Executor(store, effect, kinds=[kind])
        calls = [kind.create(Call(f"c{i}")) for i in range(actions)]
        t0 = time.perf_counter()
        results = await asyncio.gather(*(ex.drive(c) for c in calls))
        elapsed = time.perf_counter() - t0
        assert all(r.status is fsm.DriveStatus.DONE for r in results), results
        return elapsed
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--effect", type=float, default=0.5, help="seconds each effect blocks")
    parser.add_argument("--actions", type=int, default=4, help="actions driven at once")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"{args.actions} sync effects of {args.effect:g}s at concurrency {args.actions}")
    with tempfile.TemporaryDirectory() as tmp:
        figures = {}
        for kind in (OnLoop, OnThreads):
            times = [
                asyncio.run(once(kind, args.effect, args.actions, Path(tmp) / f"{kind.name}{n}"))
                for n in range(args.runs)
            ]
            figures[kind.name] = times
            label = "blocking = True" if kind is OnThreads else "on the event loop"
            print(
                f"  {label:18} min {min(times):.3f}s  median {statistics.median(times):.3f}s"
                f"  ({args.runs} runs)"
            )
        ratio = statistics.median(figures["on_loop"]) / statistics.median(figures["on_threads"])
        print(f"  speed-up (median): {ratio:.1f}x")


if __name__ == "__main__":
    main()
