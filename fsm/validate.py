"""Definition-time checks of a kind: every mistake found at import, not in production.

Each check is a tiny function over a `Definition` (and, for the graph checks, the
python-statemachine class built once from the table) that raises `fsm.DefinitionError` whose
message names the kind, the state and the fix. They run in the order of `STRUCTURE_CHECKS`
then `GRAPH_CHECKS`: the structural ones make sure the table is well-formed enough to build
a graph at all.

The graph checks are python-statemachine's own (3.x ``statemachine.graph``: unreachable
states, trap states, no path to a final state), run on a ``StateMachine`` class built from our
table with its automatic validation switched off, so we can report each offending state in our
own words. Rejection routes count as edges there, and so do the targets a rejection handler
declares with `fsm.handled`: a compensating state reached only on rejection is reachable.

Two checks are warnings, not errors: a data field typed ``Any`` (`UntypedDataWarning`, see
`fsm.storable`), and a step state whose every exit is guarded (`GuardedExitWarning`). The
guards may well be exhaustive, which no checker can prove; if they are not, the interpreter
parks the action with a `DefinitionError` and no wake-up, so the mistake shows as a stuck
action with a clear message instead of a crash loop.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import attrs
from statemachine import State as SmState
from statemachine import StateMachine
from statemachine.graph import disconnected_states, states_without_path_to_final_states

from fsm.definition import Definition
from fsm.retry import RetryPolicy
from fsm.state import Handled, State, Transition, callable_name
from fsm.storable import storage_problems


class KindWarning(UserWarning):
    """A kind definition that is legal but probably not what was meant."""


class GuardedExitWarning(KindWarning):
    """A step state whose every exit is guarded: it gets stuck if no guard holds."""


class UntypedDataWarning(KindWarning):
    """A data field typed ``Any`` (or ``object``, or a bare ``list``/``dict``): it round-trips
    only while its value is plain JSON; an attrs instance in it comes back as a dict."""


# -- structure --------------------------------------------------------------------------------


RESERVED = frozenset(
    {"name", "version", "retry", "timeout", "upcasters", "transitions", "rejections"}
    | {"action_id"}
    | {"create", "goto", "graph"}
)
"""Class attributes a kind already uses: a state with one of these names would replace it."""


def check_reserved_names(d: Definition) -> None:
    for s in d.states:
        if s.name in RESERVED or s.name.startswith("_"):
            raise d.problem(
                s,
                "this name is taken by the kind itself (or private)",
                f"rename the state, e.g. `{s.name.strip('_')}_state`",
            )


def check_name(d: Definition) -> None:
    if not d.name:
        raise d.problem(None, "the kind has no name", "set `name = 'my_kind'` in the class body")


def check_data_type(d: Definition) -> None:
    if not (isinstance(d.data_type, type) and attrs.has(d.data_type)):
        raise d.problem(
            None,
            f"its data type is {d.data_type!r}, not an attrs class",
            f"declare it as `class {d.qualname}(Kind[MyData, MyServices])` with an attrs "
            "class MyData",
        )


def check_data_storable(d: Definition) -> None:
    for p in storage_problems(d.data_type):
        if not p.untyped:
            raise d.problem(None, p.describe(), p.fix)


def check_version(d: Definition) -> None:
    if not isinstance(d.version, int) or isinstance(d.version, bool) or d.version < 1:
        raise d.problem(None, f"version is {d.version!r}", "use an integer version >= 1")


def check_upcasters(d: Definition) -> None:
    keys = sorted(d.upcasters, key=repr)
    bad = [k for k in keys if not isinstance(k, int) or not 1 <= k < d.version]
    if bad:
        raise d.problem(
            None,
            f"upcasters {bad!r} do not upgrade an older version to v{d.version}",
            f"key each upcaster by the version it reads, from 1 to {d.version - 1}",
        )
    if keys and keys != list(range(keys[0], d.version)):
        missing = sorted(set(range(keys[0], d.version)) - set(keys))
        raise d.problem(
            None,
            f"upcasters have a gap: nothing turns v{missing[0]} into v{missing[0] + 1}",
            f"add upcasters[{missing[0]}] = fn(payload) -> payload",
        )
    for version, fn in d.upcasters.items():
        _check_arity(d, None, f"upcasters[{version}]", fn, 1, "(payload: dict) -> dict")


def check_action_id(d: Definition) -> None:
    if d.action_id is None:
        raise d.problem(
            None,
            "it has no action id function",
            "add `@staticmethod def action_id(data: MyData) -> str` returning a stable id",
        )
    _check_arity(d, None, "action_id", d.action_id, 1, "@staticmethod (data) -> str")


def check_retry(d: Definition) -> None:
    if d.retry is not None and not isinstance(d.retry, RetryPolicy):
        raise d.problem(None, f"retry is {d.retry!r}", "use an fsm.RetryPolicy or None")
    for s in d.states:
        if s.retry is not None and not isinstance(s.retry, RetryPolicy):
            raise d.problem(s, f"retry is {s.retry!r}", "use an fsm.RetryPolicy or None")


def check_timeout(d: Definition) -> None:
    t = d.timeout
    finite = isinstance(t, int | float) and not isinstance(t, bool) and 0 < t < float("inf")
    if t is not None and not finite:
        raise d.problem(
            None, f"timeout is {t!r}", "give the seconds an async step may run (> 0), or None"
        )


def check_initial(d: Definition) -> None:
    initials = [s.name for s in d.states if s.initial]
    if len(initials) == 1:
        return
    what = "there is no initial state" if not initials else f"several initial states {initials}"
    raise d.problem(None, what, "mark exactly one state with `State(initial=True)`")


def check_initial_not_terminal(d: Definition) -> None:
    for s in d.states:
        if s.initial and s.terminal:
            raise d.problem(s, f"the initial state is {s.role}", "start in a step or wait state")


def check_table_ordered(d: Definition) -> None:
    """The first transition whose guard holds wins, so the table's order is its meaning."""
    if not issubclass(d.table_type, list | tuple):
        raise d.problem(
            None,
            f"`transitions` is a {d.table_type.__name__}, not an ordered sequence, so which "
            "transition wins could change from run to run",
            "write the table as a tuple or a list: `transitions = (a.to(b), b.to(c))`",
        )


def check_known_states(d: Definition) -> None:
    known = set(map(id, d.states))
    for t in d.transitions:
        if not isinstance(t, Transition):
            raise d.problem(
                None, f"the table holds {t!r}", "list only `a.to(b, ...)` in `transitions`"
            )
        for end, label in ((t.source, "source"), (t.target, "target")):
            if not isinstance(end, State) or id(end) not in known:
                raise d.problem(
                    t.source.name if isinstance(t.source, State) else None,
                    f"transition {t!r} has an unknown {label} {end!r}",
                    "use a State declared as an attribute of this kind",
                )


def check_terminal_exits(d: Definition) -> None:
    for t in d.transitions:
        if t.source.terminal:
            raise d.problem(
                t.source,
                f"terminal ({t.source.role}) state has an outgoing transition to {t.target.name!r}",
                "remove the transition, or make the source a step state",
            )


def check_callbacks(d: Definition) -> None:
    for t in d.transitions:
        for what, fn in (("guard", t.guard), ("effect", t.effect)):
            if fn is not None:
                _check_arity(d, t.source, f"{what} of {t!r}", fn, 2, "(ctx, data)")


def check_shadowed(d: Definition) -> None:
    for s in d.states:
        exits = d.exits(s)
        for i, t in enumerate(exits[:-1]):
            if t.guard is None:
                later = ", ".join(repr(x) for x in exits[i + 1 :])
                raise d.problem(
                    s,
                    f"unguarded {t!r} always wins, so {later} can never run",
                    "give the earlier transition a guard, or move it last",
                )


def check_wait_exits(d: Definition) -> None:
    for s in d.states:
        if s.role == "wait" and not d.exits(s):
            raise d.problem(
                s,
                "wait state has no way out: no transition leaves it",
                "add a guarded transition, e.g. `waiting.to(next, guard=event_arrived)`",
            )


def check_rejection_routes(d: Definition) -> None:
    known = set(map(id, d.states))
    for source, route in d.rejections:
        if not isinstance(source, State) or id(source) not in known:
            raise d.problem(
                None,
                f"a rejection route starts from unknown state {source!r}",
                "key `rejections` by states of this kind",
            )
        if source.terminal:
            raise d.problem(source, "a terminal state has a rejection route", "remove that route")
        if isinstance(route, State):
            if id(route) not in known:
                raise d.problem(
                    source,
                    f"the rejection route leads to unknown state {route!r}",
                    "route to a State declared as an attribute of this kind",
                )
        elif isinstance(route, Handled):
            _check_handled(d, source, route, known)
        elif callable(route):
            _check_arity(d, source, "rejection handler", route, 3, "(ctx, data, error)")
        else:
            raise d.problem(
                source,
                f"the rejection route is {route!r}",
                "route to a State or to a handler (ctx, data, error) -> Outcome",
            )


def _check_handled(d: Definition, source: State, route: Handled[Any, Any], known: set[int]) -> None:
    name = callable_name(route.handler)
    _check_arity(d, source, f"rejection handler {name}", route.handler, 3, "(ctx, data, error)")
    for target in route.to:
        if not isinstance(target, State) or id(target) not in known:
            raise d.problem(
                source,
                f"rejection handler {name} declares unknown target {target!r}",
                "list States declared as attributes of this kind in `handled(..., to=...)`",
            )


STRUCTURE_CHECKS: tuple[Callable[[Definition], None], ...] = (
    check_reserved_names,
    check_name,
    check_data_type,
    check_data_storable,
    check_version,
    check_upcasters,
    check_action_id,
    check_retry,
    check_timeout,
    check_initial,
    check_initial_not_terminal,
    check_table_ordered,
    check_known_states,
    check_terminal_exits,
    check_callbacks,
    check_shadowed,
    check_wait_exits,
    check_rejection_routes,
)


# -- graph (python-statemachine) --------------------------------------------------------------


def statemachine_of(d: Definition) -> type[StateMachine]:
    """A python-statemachine class with our states and edges (transitions, rejection routes
    and the targets rejection handlers declare).

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
    edges += [(src, dst) for src, dst, _ in d.rejection_edges()]
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
    unreachable = _ours(d, disconnected_states(sm.initial_state, set(sm.states_map.values())))
    if not unreachable:
        return
    fix = "add a transition or rejection route into it, or delete it"
    bare = [
        callable_name(route)
        for source, route in d.rejections
        if source not in unreachable and not isinstance(route, State | Handled)
    ]
    if bare:  # such a handler may well move there: validation cannot see where it goes
        fix = (
            f"if {' or '.join(bare)} moves the action there, declare the handler's targets "
            f"with handled({bare[0]}, to=...); else {fix}"
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


GRAPH_CHECKS: tuple[Callable[[Definition, type[StateMachine]], None], ...] = (
    check_trap_states,
    check_reachable,
    check_path_to_terminal,
)


# -- warnings ---------------------------------------------------------------------------------


def warn_guarded_exits(d: Definition) -> list[KindWarning]:
    found: list[KindWarning] = []
    for s in d.states:
        exits = d.exits(s)
        if s.role == "step" and exits and all(t.guard is not None for t in exits):
            names = ", ".join(callable_name(t.guard) for t in exits)
            found.append(
                GuardedExitWarning(
                    f"{d.label()}, state {s.name!r}: every exit is guarded ({names}); if none "
                    "holds the action parks with an error and no wake-up. Fix: add a last "
                    "unguarded transition, or make it `State.wait(...)` if it waits for "
                    "something"
                )
            )
    return found


def warn_untyped_data(d: Definition) -> list[KindWarning]:
    return [
        UntypedDataWarning(f"{d.label()}: {p.describe()}. Fix: {p.fix}")
        for p in storage_problems(d.data_type)
        if p.untyped
    ]


WARNINGS: tuple[Callable[[Definition], list[KindWarning]], ...] = (
    warn_untyped_data,
    warn_guarded_exits,
)


# -- entry points -----------------------------------------------------------------------------


def check_definition(d: Definition) -> list[KindWarning]:
    """Run every check; raise the first `DefinitionError`, return the warnings."""
    for check in STRUCTURE_CHECKS:
        check(d)
    sm = statemachine_of(d)
    for graph_check in GRAPH_CHECKS:
        graph_check(d, sm)
    return [w for warn in WARNINGS for w in warn(d)]


def validate_kind(kind_cls: type) -> list[KindWarning]:
    """Check a kind class again (for ``fsm validate``): raise on errors, return the warnings.

    A class that got past its own creation already passed the errors; calling this is how a
    tool collects the warnings without catching them from `warnings`.
    """
    definition = getattr(kind_cls, "__fsm_definition__", None)
    if not isinstance(definition, Definition):
        raise TypeError(f"{kind_cls!r} is not a declarative kind (no __fsm_definition__)")
    return check_definition(definition)


def emit(found: Iterable[KindWarning], stacklevel: int) -> None:
    """Issue ``found`` through `warnings` (what class creation does)."""
    for w in found:
        warnings.warn(w, stacklevel=stacklevel + 1)


def _check_arity(
    d: Definition, state: State | None, what: str, fn: Any, n: int, shape: str
) -> None:
    if isinstance(fn, str) or not callable(fn):
        raise d.problem(state, f"{what} is {fn!r}, not a callable", f"pass a function {shape}")
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins have no signature: trust them
        return
    try:
        signature.bind(*([None] * n))
    except TypeError:
        raise d.problem(
            state,
            f"{what} {callable_name(fn)}{signature} cannot be called with {n} argument(s)",
            f"give it the signature {shape}",
        ) from None
