"""Checks of a kind's events and deadlines: the ``on=`` of its event rows, the kind's
``events`` and ``unaccepted``, and the wait states' ``timeout``/``on_timeout``.

An event is stored in the action's inbox through the converter that stores the data, under
its event name (`fsm.events.event_name`), and read back by that name into the type a row
takes. So an event type is checked as the data type is (`fsm.storable`), and two types of
one kind may not share a name: the inbox could not tell which one a stored event is.

A deadline is only a wait state's (the interpreter looks at it only when no row is taken),
leads to another state of the kind (a deadline that re-enters its own state keeps the expired
deadline, so it would fire at every step), and its ``timeout`` is a positive number or a
function of the data.
"""

from __future__ import annotations

import math
from typing import Any

import attrs

from fsm.definition import Definition
from fsm.events import ChildEnded, event_name
from fsm.state import Deadline, State, Transition
from fsm.storable import FieldProblem, storage_problems
from fsm.validate.declaration import check_arity

FSM_EVENTS: tuple[type, ...] = (ChildEnded,)
"""The events fsm itself sends: a row may take them without the kind listing them in
``events`` (its senders do not send them), and only they may use an ``fsm.`` name."""

UNACCEPTED = ("queue", "reject", "drop")
"""What `fsm.Executor.send` may do with an event the current state takes no row for."""


def check_event_types(d: Definition) -> None:
    """Every ``on=`` is an attrs class the converter can store (not a state, not an
    instance); so is every type the kind lists in ``events``."""
    for t in d.transitions:
        if t.on is not None:
            _check_event_type(d, t.source, t.on, f"the row {t!r} has on=", _row_fix(t))
    if d.events is None:
        return
    if not isinstance(d.events, list | tuple):
        raise d.problem(
            None,
            f"`events` is {d.events!r}, not a tuple of event types",
            "list the event types the kind's senders may send: `events = (Approved, ...)`",
        )
    for cls in d.events:
        _check_event_type(
            d, None, cls, "`events` lists ", "list attrs classes: `events = (Approved, ...)`"
        )


def _row_fix(t: Transition[Any, Any]) -> str:
    return f"write `{t.source.name}.to({t.target.name}, on=Approved)` with an attrs class Approved"


def _check_event_type(d: Definition, state: State | None, on: Any, what: str, fix: str) -> None:
    if isinstance(on, State):
        raise d.problem(
            state,
            f"{what}state {on.name or on!r}; `on=` takes the event type (an attrs class) whose "
            "events take the row",
            fix,
        )
    if not isinstance(on, type):
        name = type(on).__name__
        if attrs.has(type(on)):
            raise d.problem(state, f"{what}an instance of {name}, not the class", f"pass {name}")
        raise d.problem(state, f"{what}{on!r}, not an event type", fix)
    if not attrs.has(on):
        raise d.problem(
            state,
            f"{what}{on.__name__}, which is not an attrs class, so it cannot be stored",
            f"decorate {on.__name__} with `@attrs.frozen` (events are stored through "
            "fsm.CONVERTER, as the data is)",
        )
    for p in storage_problems(on):
        if not p.untyped:
            raise d.problem(state, f"event type {on.__name__}: {describe_event(p)}", p.fix)


def describe_event(p: FieldProblem) -> str:
    """`FieldProblem.describe` for an event's field (it speaks of the data's)."""
    if "." not in p.path:
        return f"{p.type_name}, {p.reason}"
    return f"event field {p.path!r} has type {p.type_name}, {p.reason}"


def check_event_names(d: Definition) -> None:
    """Two event types of one kind do not share an event name, and only fsm's own events
    use an ``fsm.`` name (``fsm.Cancel``, ``fsm.ChildEnded``)."""
    seen: dict[str, type] = {}
    for cls in (*d.event_types(), *(d.events or ())):
        name = event_name(cls)
        if name.startswith("fsm.") and cls not in FSM_EVENTS:
            raise d.problem(
                None,
                f"event type {cls.__qualname__} is named {name!r}; names starting with `fsm.` "
                "are fsm's own events",
                f"give {cls.__name__} another `__fsm_event__` (or none: its class name)",
            )
        other = seen.setdefault(name, cls)
        if other is not cls:
            raise d.problem(
                None,
                f"event types {other.__module__}.{other.__qualname__} and "
                f"{cls.__module__}.{cls.__qualname__} are both named {name!r}, so a stored "
                "event could not say which one it is",
                f"give one of them another name: `__fsm_event__ = '{name}.v2'` in its class "
                "body, or rename it",
            )


def check_declared_events(d: Definition) -> None:
    """With ``events`` declared: each type listed is taken by some row, and each row takes a
    type listed (or one of fsm's own events, which its senders do not send)."""
    if d.events is None:
        return
    accepted = d.event_types()
    for cls in d.events:
        if cls not in accepted:
            raise d.problem(
                None,
                f"`events` lists {cls.__name__}, but no row takes it, so no state could ever "
                "consume one",
                f"add a row that takes it, e.g. `waiting.to(next, on={cls.__name__})`, or "
                "remove it from `events`",
            )
    for t in d.transitions:
        if t.on is not None and t.on not in d.events and t.on not in FSM_EVENTS:
            raise d.problem(
                t.source,
                f"the row {t!r} takes {t.on.__name__}, which `events` does not list",
                f"add {t.on.__name__} to `events`, or remove the row",
            )


def check_unaccepted(d: Definition) -> None:
    """``unaccepted`` is one of `UNACCEPTED`."""
    if d.unaccepted not in UNACCEPTED:
        raise d.problem(
            None,
            f"unaccepted is {d.unaccepted!r}",
            "use 'queue' (keep the event for a later state, the default), 'reject' (refuse "
            "the send) or 'drop'",
        )


def check_event_rows_live(d: Definition) -> None:
    """No event row leaves a terminal state (no action ever waits there for one)."""
    for t in d.transitions:
        if t.on is not None and t.source.terminal:
            raise d.problem(
                t.source,
                f"a terminal ({t.source.role}) state has the event row {t!r}, but an action "
                "that got here has ended and never takes an event",
                "remove the row, or take the event in the live state before it",
            )


def check_deadlines(d: Definition) -> None:
    """A deadline is a wait state's, leads to another state of the kind, and its timeout is
    seconds > 0 or a function of the data."""
    known = set(map(id, d.states))
    for s in d.states:
        deadline = s.deadline
        if deadline is None:
            continue
        if not isinstance(deadline, Deadline):
            raise d.problem(
                s,
                f"deadline is {deadline!r}",
                "declare it with `State.wait(timeout=..., on_timeout=...)`",
            )
        if s.role != "wait":
            raise d.problem(
                s,
                f"a {s.role} state has a deadline ({deadline.describe()}), but only a wait "
                "state waits for one",
                f"declare it as `State.wait(timeout=..., on_timeout={_name(deadline.to)})`",
            )
        to = deadline.to
        if not isinstance(to, State) or id(to) not in known:
            raise d.problem(
                s,
                f"the deadline leads to {to!r}, which is not a state of this kind",
                "pass a State declared as an attribute of this kind as `on_timeout`",
            )
        if to is s:
            raise d.problem(
                s,
                "the deadline leads back to the same state, which keeps the expired deadline, "
                "so it would fire at every step",
                "lead `on_timeout` to another state (one that comes back here starts a new "
                "deadline)",
            )
        _check_seconds(d, s, deadline.seconds)


def _name(state: Any) -> str:
    return state.name if isinstance(state, State) and state.name else "target"


def _check_seconds(d: Definition, s: State, seconds: Any) -> None:
    if callable(seconds) and not isinstance(seconds, type):
        check_arity(d, s, "the deadline's timeout", seconds, 1, "(data) -> float")
        return
    number = isinstance(seconds, int | float) and not isinstance(seconds, bool)
    if not number or not 0 < seconds < math.inf:
        raise d.problem(
            s,
            f"the deadline's timeout is {seconds!r}",
            "give seconds > 0, or a function of the data returning them",
        )
