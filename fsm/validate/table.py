"""Checks of a kind's table: its rows, their states, their callbacks, the rejection rows and
the cancel rows.

They run before the graph checks (`fsm.validate.reachability`) and make sure the table is
well-formed enough to build a graph at all.
"""

from __future__ import annotations

from typing import Any

from fsm.definition import Definition
from fsm.state import Rejection, State, Transition, callable_name
from fsm.validate.declaration import check_arity


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
                None,
                f"the table holds {t!r}",
                "list only `a.to(b, ...)`, `a.rejected(...)` and `a.cancelled(to=...)` rows "
                "in `transitions`",
            )
        for end, label in ((t.source, "source"), (t.target, "target")):
            if not isinstance(end, State) or id(end) not in known:
                raise d.problem(
                    t.source.name if isinstance(t.source, State) else None,
                    f"transition {t!r} has an unknown {label} {end!r}",
                    "use a State declared as an attribute of this kind",
                )


def check_terminal_exits(d: Definition) -> None:
    """No plain row leaves a terminal state (event rows: `fsm.validate.events`)."""
    for t in d.transitions:
        if t.source.terminal and t.on is None:
            raise d.problem(
                t.source,
                f"terminal ({t.source.role}) state has an outgoing transition to {t.target.name!r}",
                "remove the transition, or make the source a step state",
            )


def check_callbacks(d: Definition) -> None:
    """A plain row's guard and effect take (ctx, data); an event row's (ctx, data, event)."""
    for t in d.transitions:
        n, shape = (2, "(ctx, data)") if t.on is None else (3, "(ctx, data, event)")
        for what, fn in (("guard", t.guard), ("effect", t.effect)):
            if fn is not None:
                check_arity(d, t.source, f"{what} of {t!r}", fn, n, shape)


def check_shadowed(d: Definition) -> None:
    """No row (nor deadline) can never be taken because an earlier one always is.

    A step offers the pending events to the event rows first, then runs the plain rows, then
    looks at the deadline: an unguarded plain row shadows the later plain rows and the
    deadline, an unguarded event row the later rows taking its type (or a subclass of it).
    """
    for s in d.states:
        plain = [t for t in d.exits(s) if t.on is None]
        for i, t in enumerate(plain[:-1]):
            if t.guard is None:
                later = ", ".join(repr(x) for x in plain[i + 1 :])
                raise d.problem(
                    s,
                    f"unguarded {t!r} always wins, so {later} can never run",
                    "give the earlier transition a guard, or move it last",
                )
        rows = [(t, t.on) for t in d.exits(s) if isinstance(t.on, type)]
        for i, (t, on) in enumerate(rows):
            hidden = [x for x, sub in rows[i + 1 :] if issubclass(sub, on)]
            if t.guard is None and hidden:
                raise d.problem(
                    s,
                    f"unguarded {t!r} takes every {on.__name__} event, so "
                    f"{', '.join(map(repr, hidden))} can never run",
                    "give the earlier row a guard, or move it after the rows it hides",
                )
        if s.deadline is not None and plain and plain[-1].guard is None:
            after = getattr(s.deadline, "describe", lambda: "the deadline")()
            raise d.problem(
                s,
                f"unguarded {plain[-1]!r} is taken before the deadline is looked at, so the "
                f"deadline ({after}) can never fire",
                "give that row a guard, or remove the deadline",
            )


def check_wait_exits(d: Definition) -> None:
    """A wait state has a row (plain or taken by an event) or a deadline to leave by."""
    for s in d.states:
        if s.role == "wait" and not d.exits(s) and s.deadline is None:
            raise d.problem(
                s,
                "wait state has no way out: no transition leaves it and it has no deadline",
                "add a guarded transition, e.g. `waiting.to(next, guard=event_arrived)`, a "
                "row taken by an event, `waiting.to(next, on=Approved)`, or a deadline, "
                "`State.wait(timeout=..., on_timeout=...)`",
            )


def check_rejection_rows(d: Definition) -> None:
    known = set(map(id, d.states))
    seen: set[int] = set()
    for r in d.rejections:
        _one_per_state(d, r.source, known, seen, "rejection", "rejected(...)")
        if r.source.terminal:
            raise d.problem(r.source, "a terminal state has a rejection row", "remove that row")
        if r.park:
            if r.handler is not None or r.to is not None:
                raise d.problem(
                    r.source,
                    "`rejected(park=True)` is the stock handler: it takes no handler or target",
                    "give `park=True` alone, or a handler and its targets",
                )
        elif r.handler is not None:
            _check_handler(d, r, known)
        else:
            _check_route(d, r, known)


def _one_per_state(
    d: Definition, source: object, known: set[int], seen: set[int], row: str, call: str
) -> None:
    """A route row (``row``: rejection or cancel) starts from a state of this kind, and no
    state has two; ``seen`` collects the states met so far, ``call`` is how the row is
    written (for the fix)."""
    if not isinstance(source, State) or id(source) not in known:
        raise d.problem(
            None,
            f"a {row} row starts from unknown state {source!r}",
            f"write `state.{call}` on states of this kind",
        )
    if id(source) in seen:
        raise d.problem(
            source,
            f"the table has two {row} rows for this state",
            f"keep one `{call}` row per state",
        )
    seen.add(id(source))


def _check_route(d: Definition, r: Rejection[Any, Any], known: set[int]) -> None:
    if r.to is None or len(r.to) != 1:
        raise d.problem(
            r.source,
            f"the rejection row {r!r} has no handler, so it must lead to exactly one state",
            "write `state.rejected(to=target)`, or add a handler that picks among several",
        )
    target = r.to[0]
    if not isinstance(target, State) or id(target) not in known:
        raise d.problem(
            r.source,
            f"the rejection route leads to unknown state {target!r}",
            "route to a State declared as an attribute of this kind",
        )


def _check_handler(d: Definition, r: Rejection[Any, Any], known: set[int]) -> None:
    name = callable_name(r.handler)
    check_arity(d, r.source, f"rejection handler {name}", r.handler, 3, "(ctx, data, error)")
    for target in r.to or ():
        if not isinstance(target, State) or id(target) not in known:
            raise d.problem(
                r.source,
                f"rejection handler {name} declares unknown target {target!r}",
                "list States declared as attributes of this kind in `rejected(..., to=...)`",
            )


def check_cancel_rows(d: Definition) -> None:
    """A cancel row starts from a live state of this kind, leads to another state of this
    kind, and a state has at most one (which compensation a cancel runs must be plain)."""
    known = set(map(id, d.states))
    seen: set[int] = set()
    for c in d.cancels:
        _one_per_state(d, c.source, known, seen, "cancel", "cancelled(to=...)")
        if c.source.terminal:
            raise d.problem(
                c.source,
                "a terminal state has a cancel row, but no action ever waits in it",
                "remove that row",
            )
        if not isinstance(c.to, State) or id(c.to) not in known:
            raise d.problem(
                c.source,
                f"the cancel route leads to {c.to!r}, which is not a state of this kind",
                "route to a State declared as an attribute of this kind, e.g. "
                f"`{c.source.name}.cancelled(to=releasing)`",
            )
        if c.to is c.source:
            raise d.problem(
                c.source,
                "the cancel route leads back to the same state, so a cancel would undo nothing",
                "route to the state that compensates (or to a failed state), or remove the row",
            )
