"""One compiled interpreter step against python-statemachine ``send()`` and transitions.

The same machine shape in all three: a cycle ``a -> b -> c -> a`` where each transition has a
guard (true) and an effect (counts), plus a guarded exit from ``a`` to a final state (false)
ahead of it in the table, so every step evaluates one failing guard before the taken one.
Everything runs in memory, in the same process and run; no database. Also prints what
building (collecting, validating, compiling) a kind of 50 states costs, which is paid once
at import.

    python benchmarks/dispatch.py [--steps 20000] [--rounds 7]

Target: the interpreter step is at least 20x faster than python-statemachine ``send()``.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import types
import warnings
from collections.abc import Callable
from typing import Any

import attrs
from statemachine import State as SmState
from statemachine import StateMachine
from transitions import Machine

from fsm import Kind, KindWarning, Next, RetryPolicy, State, StepContext


@attrs.frozen
class Counter:
    key: str
    n: int = 0


def finished(ctx: StepContext[None], d: Counter) -> bool:
    return False


def ready(ctx: StepContext[None], d: Counter) -> bool:
    return True


def count(ctx: StepContext[None], d: Counter) -> Counter:
    return Counter(d.key, d.n + 1)


# Every exit of the cycle is guarded, as in the other two libraries' version of it.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", KindWarning)

    class Cycle(Kind[Counter, None]):
        name = "cycle"
        a = State(initial=True)
        b = State()
        c = State()
        end = State.done()
        transitions = (
            a.to(end, guard=finished),
            a.to(b, guard=ready, effect=count),
            b.to(c, guard=ready, effect=count),
            c.to(a, guard=ready, effect=count),
        )

        @staticmethod
        def action_id(d: Counter) -> str:
            return d.key


class SmCycle(StateMachine):
    a = SmState(initial=True)
    b = SmState()
    c = SmState()
    end = SmState(final=True)
    step = a.to(end, cond="finished") | a.to(b, cond="ready", on="count")
    step |= b.to(c, cond="ready", on="count") | c.to(a, cond="ready", on="count")

    def __init__(self) -> None:
        self.n = 0
        super().__init__()

    def finished(self) -> bool:
        return False

    def ready(self) -> bool:
        return True

    def count(self) -> None:
        self.n += 1


class TrModel:
    def __init__(self) -> None:
        self.n = 0

    def finished(self) -> bool:
        return False

    def ready(self) -> bool:
        return True

    def count(self) -> None:
        self.n += 1


def tr_model() -> TrModel:
    model = TrModel()
    Machine(
        model,
        states=["a", "b", "c", "end"],
        initial="a",
        transitions=[
            {"trigger": "step", "source": "a", "dest": "end", "conditions": "finished"},
            {
                "trigger": "step",
                "source": "a",
                "dest": "b",
                "conditions": "ready",
                "after": "count",
            },
            {
                "trigger": "step",
                "source": "b",
                "dest": "c",
                "conditions": "ready",
                "after": "count",
            },
            {
                "trigger": "step",
                "source": "c",
                "dest": "a",
                "conditions": "ready",
                "after": "count",
            },
        ],
        auto_transitions=False,
    )
    return model


def per_step_ns(run: Callable[[int], None], steps: int, rounds: int) -> float:
    """Median over ``rounds`` of the nanoseconds per step of ``run(steps)``."""
    run(min(steps, 1000))  # warm up caches and lazy set-up
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        run(steps)
        samples.append((time.perf_counter_ns() - t0) / steps)
    return statistics.median(samples)


def run_interpreter(steps: int) -> None:
    ctx: StepContext[None] = StepContext(
        None,
        "k",
        0,
        0,
        0.0,
        RetryPolicy(),
        logging.LoggerAdapter(logging.getLogger("bench"), {}),
        tuple,
        lambda _: None,
    )
    action: Any = Cycle.create(Counter("k"))
    for _ in range(steps):
        outcome = action.advance(ctx)
        action = outcome.state
    assert isinstance(outcome, Next) and action.data.n == steps


def run_statemachine(steps: int) -> None:
    sm = SmCycle()
    send = sm.send
    for _ in range(steps):
        send("step")
    assert sm.n == steps


def run_transitions(steps: int) -> None:
    model: Any = tr_model()
    trigger = model.trigger
    for _ in range(steps):
        trigger("step")
    assert model.n == steps


def build_kind(n_states: int) -> type:
    """A kind of ``n_states`` step states in a chain, each with a guarded exit to the end."""

    def body(ns: dict[str, Any]) -> None:
        states = [State(initial=(i == 0)) for i in range(n_states)]
        end, failed = State.done(), State.failed()
        table = []
        for i, s in enumerate(states):
            ns[f"s{i}"] = s
            nxt = states[i + 1] if i + 1 < n_states else end
            table += [s.to(failed, guard=finished), s.to(nxt, effect=count)]
        ns.update(name="chain", end=end, failed=failed, transitions=tuple(table))
        ns["action_id"] = staticmethod(Cycle.action_id)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KindWarning)

        return types.new_class("Chain", (Kind[Counter, None],), exec_body=body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    ours = per_step_ns(run_interpreter, args.steps, args.rounds)
    psm = per_step_ns(run_statemachine, args.steps // 10, args.rounds)
    trn = per_step_ns(run_transitions, args.steps // 10, args.rounds)
    print(f"one step, median of {args.rounds} rounds (guard + effect, in memory):")
    print(f"  fsm compiled interpreter   {ours / 1000:8.2f} us   (new immutable action + Next)")
    print(f"  python-statemachine send() {psm / 1000:8.2f} us   ({psm / ours:5.1f}x ours)")
    print(f"  transitions trigger()      {trn / 1000:8.2f} us   ({trn / ours:5.1f}x ours)")
    verdict = "ok" if psm / ours >= 20 else "BELOW TARGET"
    print(f"  target: >= 20x faster than python-statemachine: {verdict}")

    builds = []
    for _ in range(args.rounds):
        t0 = time.perf_counter_ns()
        build_kind(50)
        builds.append(time.perf_counter_ns() - t0)
    print(
        f"building a kind of 50 states (collect + validate + compile): "
        f"{statistics.median(builds) / 1e6:.2f} ms (median of {args.rounds})"
    )


if __name__ == "__main__":
    main()
