"""The warnings of a kind: legal definitions that are probably not what was meant.

A data (or event) field typed ``Any`` (`UntypedDataWarning`, see `fsm.storable`), and a step
state whose every exit is guarded or taken by an event (`GuardedExitWarning`). The guards
may well be exhaustive, which no checker can prove; if they are not (or no event is pending),
the interpreter parks the action with a `DefinitionError` and no wake-up, so the mistake
shows as a stuck action with a clear message instead of a crash loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fsm.definition import Definition
from fsm.state import Transition, callable_name
from fsm.storable import storage_problems
from fsm.validate.events import describe_event


class KindWarning(UserWarning):
    """A kind definition that is legal but probably not what was meant."""


class GuardedExitWarning(KindWarning):
    """A step state whose every exit is guarded: it gets stuck if no guard holds."""


class UntypedDataWarning(KindWarning):
    """A data field typed ``Any`` (or ``object``, or a bare ``list``/``dict``): it round-trips
    only while its value is plain JSON; an attrs instance in it comes back as a dict."""


def warn_guarded_exits(d: Definition) -> list[KindWarning]:
    """A step state whose every exit is guarded or taken by an event (none may be pending)."""
    found: list[KindWarning] = []
    for s in d.states:
        exits = d.exits(s)
        if s.role == "step" and exits and all(_conditional(t) for t in exits):
            names = ", ".join(_condition(t) for t in exits)
            found.append(
                GuardedExitWarning(
                    f"{d.label()}, state {s.name!r}: every exit is guarded ({names}); if none "
                    "holds the action parks with an error and no wake-up. Fix: add a last "
                    "unguarded transition, or make it `State.wait(...)` if it waits for "
                    "something"
                )
            )
    return found


def _conditional(t: Transition[Any, Any]) -> bool:
    return t.guard is not None or t.on is not None


def _condition(t: Transition[Any, Any]) -> str:
    if t.on is None:
        return callable_name(t.guard)
    on = f"on {getattr(t.on, '__name__', t.on)}"
    return on if t.guard is None else f"{on} [{callable_name(t.guard)}]"


def warn_untyped_data(d: Definition) -> list[KindWarning]:
    """Untyped fields of the data, and of the event types the kind takes or lists."""
    found: list[KindWarning] = [
        UntypedDataWarning(f"{d.label()}: {p.describe()}. Fix: {p.fix}")
        for p in storage_problems(d.data_type)
        if p.untyped
    ]
    events = (*d.event_types(), *(d.events or ()))
    for cls in dict.fromkeys(events):
        found += [
            UntypedDataWarning(
                f"{d.label()}: event type {cls.__name__}: {describe_event(p)}. Fix: {p.fix}"
            )
            for p in storage_problems(cls)
            if p.untyped
        ]
    return found


WARNINGS: tuple[Callable[[Definition], list[KindWarning]], ...] = (
    warn_untyped_data,
    warn_guarded_exits,
)
