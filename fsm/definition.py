"""A kind's declaration, collected from its class into one plain, inspectable record.

`fsm.validate` checks a `Definition` and `fsm.compiled` compiles it; neither looks at the
class itself, so both can also be exercised on a definition built by hand, and the rules for
*where* things are declared (class attributes, generic arguments, inheritance) live only here.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from fsm.errors import DefinitionError
from fsm.protocol import Upcaster
from fsm.retry import RetryPolicy
from fsm.state import CancelRoute, Deadline, Rejection, State, Transition, callable_name


@attrs.frozen
class Definition:
    """Everything a kind declares, in declaration order."""

    name: str
    qualname: str
    data_type: Any
    services_type: Any
    states: tuple[State, ...]
    transitions: tuple[Transition[Any, Any], ...]
    """The rows of the table that are neither `Rejection` nor `CancelRoute` rows (anything
    but a `Transition` is an error)."""
    rejections: tuple[Rejection[Any, Any], ...]
    """The table's ``state.rejected(...)`` rows, in table order."""
    retry: RetryPolicy | None
    timeout: Any
    blocking: Any = False
    """The kind's ``blocking``: whether its states' synchronous callbacks block (a state's own
    ``blocking`` wins); `blocking_of` resolves it."""
    version: Any = 1
    upcasters: Mapping[Any, Upcaster] = attrs.field(factory=dict)
    action_id: Callable[[Any], str] | None = None
    table_type: type = tuple
    """The type of what the class body gave as ``transitions`` (it must be ordered)."""
    cancels: tuple[CancelRoute, ...] = ()
    """The table's ``state.cancelled(to=...)`` rows, in table order."""
    events: Any = None
    """The kind's ``events``: the event types its senders may send (a tuple once checked);
    None when the kind does not declare them (then any type a row takes may be sent)."""
    unaccepted: Any = "queue"
    """The kind's ``unaccepted``: what `fsm.Executor.send` does with an event the action's
    current state takes no row for (``"queue"``, ``"reject"`` or ``"drop"``)."""

    def label(self) -> str:
        """How messages name the kind: ``kind 'order' (OrderKind)``."""
        if not self.name:
            return f"kind class {self.qualname}"
        return f"kind {self.name!r} ({self.qualname})"

    def problem(self, state: State | str | None, what: str, fix: str) -> DefinitionError:
        """The one shape of every definition error: the kind, the state, the problem, the fix."""
        where = self.label()
        if state is not None:
            where += f", state {state if isinstance(state, str) else state.name!r}"
        return DefinitionError(f"{where}: {what}. Fix: {fix}")

    def rejection_edges(self) -> tuple[tuple[State, State, str | None], ...]:
        """(source, target, handler name or None) of every target a rejection row names, in
        table order: the edges rejections add to validation's graph and to diagrams."""
        edges: list[tuple[State, State, str | None]] = []
        for r in self.rejections:
            name = None if r.handler is None else callable_name(r.handler)
            edges.extend((r.source, target, name) for target in r.to or ())
        return tuple(edges)

    def hidden_handlers(self) -> dict[str, str]:
        """{state name: handler name} of handlers that did not declare their targets: where
        they lead is decided at run time, so diagrams can only name them on the state."""
        return {
            r.source.name: callable_name(r.handler)
            for r in self.rejections
            if r.handler is not None and r.to is None
        }

    def cancel_edges(self) -> tuple[tuple[State, State], ...]:
        """(source, target) of every cancel row, in table order: edges for reachability and
        diagrams (not for the trap and terminal-path checks: a cancel is an operator's
        intervention, not a way an action finishes on its own)."""
        return tuple((c.source, c.to) for c in self.cancels)

    def deadline_edges(self) -> tuple[tuple[State, State, str], ...]:
        """(source, target, ``after 3d``) of every wait state's deadline, in state order:
        edges for every graph check (a deadline is a way out an action takes on its own)
        and for diagrams."""
        return tuple(
            (s, s.deadline.to, s.deadline.describe())
            for s in self.states
            if isinstance(s.deadline, Deadline)
        )

    def event_types(self) -> tuple[Any, ...]:
        """The distinct ``on=`` values of the table's event rows, in table order (compared by
        identity: before validation one may be anything, even an unhashable instance)."""
        found: list[Any] = []
        for t in self.transitions:
            if t.on is not None and not any(t.on is f for f in found):
                found.append(t.on)
        return tuple(found)

    def blocking_of(self, state: State) -> bool:
        """Whether ``state``'s synchronous callbacks run on the thread pool: its own say, else
        the kind's."""
        return bool(self.blocking if state.blocking is None else state.blocking)

    def exits(self, state: State) -> tuple[Transition[Any, Any], ...]:
        """The transitions leaving ``state``, in table order."""
        return tuple(t for t in self.transitions if t.source is state)


def collect(cls: type, base: type) -> Definition:
    """Read the declaration of kind class ``cls`` (a subclass of ``base``, `fsm.kind.Kind`).

    States are the `State` attributes of the class and its kind bases, in declaration order
    (a subclass may add states or replace a table). ``D`` and ``S`` come from the generic base,
    ``class OrderKind(Kind[Order, Shop])``.
    """
    states: dict[str, State] = {}
    for klass in reversed(cls.__mro__):
        if klass is base or not issubclass(klass, base):
            continue
        for attr, value in vars(klass).items():
            if isinstance(value, State):
                states[attr] = value
    data_type, services_type = _type_arguments(cls, base)
    table = getattr(cls, "transitions", ())
    rows = tuple(table) if isinstance(table, list | tuple) else ()
    if not isinstance(getattr(cls, "rejections", None), State | None):
        raise DefinitionError(
            f"kind {getattr(cls, 'name', cls.__name__)!r} ({cls.__qualname__}): it declares "
            "`rejections`, which fsm does not read. Fix: write each route as a row of the "
            "table, `state.rejected(to=target)` or `state.rejected(handler=fn, to=(...))`"
        )
    action_id = getattr(cls, "action_id", None)
    if action_id is getattr(base, "action_id", None):  # the base's placeholder: not defined
        action_id = None
    name = getattr(cls, "name", None)
    return Definition(
        name=name if isinstance(name, str) else "",
        qualname=cls.__qualname__.rsplit("<locals>.", 1)[-1],
        data_type=data_type,
        services_type=services_type,
        states=tuple(states.values()),
        transitions=tuple(r for r in rows if not isinstance(r, Rejection | CancelRoute)),
        rejections=tuple(r for r in rows if isinstance(r, Rejection)),
        cancels=tuple(r for r in rows if isinstance(r, CancelRoute)),
        retry=getattr(cls, "retry", None),
        timeout=getattr(cls, "timeout", None),
        blocking=getattr(cls, "blocking", False),
        version=getattr(cls, "version", 1),
        upcasters=dict(getattr(cls, "upcasters", {})),
        action_id=action_id,
        table_type=type(table),
        events=getattr(cls, "events", None),
        unaccepted=getattr(cls, "unaccepted", "queue"),
    )


def _type_arguments(cls: type, base: type) -> tuple[Any, Any]:
    """(D, S) from the nearest ``Kind[D, S]`` in the class's generic bases, or (None, None)."""
    for klass in cls.__mro__:
        for orig in getattr(klass, "__orig_bases__", ()):
            origin = typing.get_origin(orig)
            if isinstance(origin, type) and issubclass(origin, base):
                args = typing.get_args(orig)
                if len(args) == 2:
                    return args[0], args[1]
    return None, None
