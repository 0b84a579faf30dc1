"""Graph checks of a kind: trap states, unreachable states, no path to a terminal state.

They are python-statemachine's own (3.x ``statemachine.graph``), run on a ``StateMachine``
class built from our table with its automatic validation switched off, so we can report each
offending state in our own words. Rejection rows count as edges here, through the targets
they name: a compensating state reached only on rejection is reachable. Event rows are
transitions and wait states' deadlines are edges too, for every check: a wait state whose
only way out is an event row is no trap (the events come from outside), nor is one whose
only way out is its deadline (it fires on its own). Cancel rows count
for reachability only (a compensation reached only by a cancel is reachable), not for the
trap and terminal-path checks: a cancel is an operator's intervention, so a state whose only
way out is a cancel route still cannot finish on its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from statemachine import State as SmState
from statemachine import StateMachine
from statemachine.graph import disconnected_states, states_without_path_to_final_states

from fsm.definition import Definition
from fsm.state import State


def statemachine_of(d: Definition, *, cancels: bool = False) -> type[StateMachine]:
    """A python-statemachine class with our states and edges (transitions and event rows,
    deadlines, rejection routes and the targets rejection handlers declare; with
    ``cancels``, the cancel routes too).

    Attribute names are synthetic (``s0``, ``t0``...) so no state name can clash with the
    library's reserved names; ``SmState.value`` holds the index back into ``d.states``. Its
    automatic graph validation is off: the checks below call the same graph functions and
    report in our words.
    """
    sm_states = {
        f"s{i}": SmState(s.name, value=i, initial=s.initial, final=s.terminal)
        for i, s in enumerate(d.states)
    }
    index = {id(s): f"s{i}" for i, s in enumerate(d.states)}
    namespace: dict[str, Any] = {
        "validate_disconnected_states": False,
        "validate_trap_states": False,
        "validate_final_reachability": False,
        **sm_states,
    }
    edges = [(t.source, t.target) for t in d.transitions]
    edges += [(src, dst) for src, dst, _ in d.deadline_edges()]
    edges += [(src, dst) for src, dst, _ in d.rejection_edges()]
    if cancels:
        edges += list(d.cancel_edges())
    for n, (src, dst) in enumerate(edges):
        namespace[f"t{n}"] = sm_states[index[id(src)]].to(sm_states[index[id(dst)]])
    return type(f"{d.qualname}Graph", (StateMachine,), namespace)


def _ours(d: Definition, sm_states: Iterable[Any]) -> list[State]:
    return sorted((d.states[s.value] for s in sm_states), key=d.states.index)


def check_trap_states(d: Definition, sm: type[StateMachine]) -> None:
    for s in _ours(d, (s for s in sm.states if not s.final and not s.transitions)):
        raise d.problem(
            s,
            "step state has no outgoing transition, so an action there can never finish",
            f"add a transition from {s.name!r}, or make it `State.done()` / `State.failed()`",
        )


def check_reachable(d: Definition, sm: type[StateMachine]) -> None:
    if d.cancels:  # a compensation reached only through a cancel route is reachable
        sm = statemachine_of(d, cancels=True)
    unreachable = _ours(d, disconnected_states(sm.initial_state, set(sm.states_map.values())))
    if not unreachable:
        return
    fix = "add a transition, deadline, rejection route or cancel route into it, or delete it"
    names = {s.name for s in unreachable}
    bare = [h for source, h in d.hidden_handlers().items() if source not in names]
    if bare:  # such a handler may well move there: validation cannot see where it goes
        fix = (
            f"if {' or '.join(bare)} moves the action there, declare the handler's targets "
            f"with `rejected(handler={bare[0]}, to=...)`; else {fix}"
        )
    raise d.problem(
        unreachable[0],
        "state is unreachable from the initial state"
        + (f" (so are {[s.name for s in unreachable[1:]]})" if len(unreachable) > 1 else ""),
        fix,
    )


def check_path_to_terminal(d: Definition, sm: type[StateMachine]) -> None:
    if not any(s.terminal for s in d.states):
        raise d.problem(
            None, "it has no terminal state", "add `State.done()` and/or `State.failed()`"
        )
    stuck = _ours(d, states_without_path_to_final_states(sm.states))
    if stuck:
        raise d.problem(
            stuck[0],
            "no path leads from this state to a done or failed state"
            + (f" (nor from {[s.name for s in stuck[1:]]})" if len(stuck) > 1 else ""),
            "add a transition that eventually reaches a terminal state",
        )
