"""The warnings of a kind: legal definitions that are probably not what was meant.

A data field typed ``Any`` (`UntypedDataWarning`, see `fsm.storable`), and a step state whose
every exit is guarded (`GuardedExitWarning`). The guards may well be exhaustive, which no
checker can prove; if they are not, the interpreter parks the action with a `DefinitionError`
and no wake-up, so the mistake shows as a stuck action with a clear message instead of a
crash loop.
"""

from __future__ import annotations

from collections.abc import Callable

from fsm.definition import Definition
from fsm.state import callable_name
from fsm.storable import storage_problems


class KindWarning(UserWarning):
    """A kind definition that is legal but probably not what was meant."""


class GuardedExitWarning(KindWarning):
    """A step state whose every exit is guarded: it gets stuck if no guard holds."""


class UntypedDataWarning(KindWarning):
    """A data field typed ``Any`` (or ``object``, or a bare ``list``/``dict``): it round-trips
    only while its value is plain JSON; an attrs instance in it comes back as a dict."""


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
