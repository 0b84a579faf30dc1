"""A kind's table compiled once into plain tuples: what the interpreter's hot path reads.

`Compiled` turns a checked `Definition` into a dict from state name to a `CompiledState`
whose ``edges`` are `CompiledEdge` tuples ``(guard, guard_is_async, effect, effect_is_async,
target_name, target_outcome)``, and makes the kind's action class (a subclass of
`fsm.interpreter.Instance` carrying the table). Nothing here runs per step: every decision
that can be taken at import (is a callback async, which outcome does a terminal target give,
what does the "stuck" message say) is taken here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs
import orjson

from fsm.converter import CONVERTER
from fsm.definition import Definition
from fsm.events import Delivered, event_name
from fsm.interpreter import Instance
from fsm.protocol import Done, Failed, Outcome, Upcaster
from fsm.retry import RetryPolicy
from fsm.state import Rejection, RejectionHandler, State, is_async

CompiledEdge = tuple[Any, bool, Any, bool, str, Outcome | None]
"""(guard, guard is async, effect, effect is async, target name, terminal outcome or None)."""
EventEdge = tuple[type, Any, bool, Any, bool, str, Outcome | None]
"""(event type, then as `CompiledEdge`): a row taken by an event (``on=``)."""


@attrs.frozen(slots=True)
class CompiledState:
    """One state as the interpreter needs it; every field is plain data or a callable."""

    name: str
    role: str
    edges: tuple[CompiledEdge, ...]
    """The plain rows (no ``on=``), in table order."""
    events: tuple[EventEdge, ...]
    """The rows taken by an event, in table order."""
    deadline: tuple[Any, str, Outcome | None] | None
    """``State.wait(timeout=..., on_timeout=...)``: (seconds or a function of the data, the
    target's name, its terminal outcome or None)."""
    event_names: tuple[str, ...]
    """The names of the event types the event rows take (what a step reads of the inbox)."""
    slow: bool
    """A step here reads the inbox or a deadline (`Instance.advance`'s slow path)."""
    has_async: bool
    """True when a step here goes through a coroutine: an async callback, or a blocking one."""
    blocking: bool
    """The state's synchronous callbacks run on the thread pool (``ctx.threads``)."""
    wake_after: float | None
    wake_backoff: RetryPolicy | None
    retry: RetryPolicy | None
    timeout: float | None
    route: tuple[str, Outcome | None] | None
    """A rejection row without a handler: the target's name and its terminal outcome."""
    handler: RejectionHandler[Any, Any] | None
    handler_blocks: bool
    """``handler`` is synchronous and the state blocking: it runs on the thread pool."""
    targets: frozenset[str] | None
    """The states ``handler`` declared (``rejected(handler=..., to=...)``); None: undeclared."""
    park: bool
    """``rejected(park=True)``: a rejection parks here with the error, no wake-up."""
    cancel: tuple[str, Outcome | None] | None
    """The cancel row's target name and its terminal outcome; None: no cancel route here."""
    data_type: type
    where: str
    """``kind 'order' (OrderKind), state 'start'``: how errors name this state."""
    stuck: str


class Compiled:
    """A kind compiled for the interpreter; built once when the kind class is created."""

    def __init__(self, d: Definition, kind: type) -> None:
        self.name = d.name
        self.version: int = d.version
        self.kind = kind
        self.data_type: type = d.data_type
        assert d.action_id is not None  # checked by fsm.validate
        self.action_id: Callable[[Any], str] = d.action_id
        self.retry = d.retry
        self.initial = next(s.name for s in d.states if s.initial)
        self.upcasters: Mapping[int, Upcaster] = dict(d.upcasters)
        rows = {r.source.name: r for r in d.rejections}
        cancels = {c.source.name: c.to for c in d.cancels}
        self.states: dict[str, CompiledState] = {
            s.name: _compile_state(d, s, rows.get(s.name), cancels.get(s.name)) for s in d.states
        }
        self.event_types: dict[str, type] = {}
        """Event name -> type, of every type some row accepts (`fsm.events.event_name`)."""
        for t in d.transitions:
            if t.on is not None:
                self.event_types.setdefault(event_name(t.on), t.on)
        self.accepts: dict[str, tuple[type, ...]] = {
            name: tuple(dict.fromkeys(e[0] for e in st.events)) for name, st in self.states.items()
        }
        """State name -> the event types its rows accept."""
        self.unaccepted: str = d.unaccepted
        """What `fsm.Executor.send` does with an event the action's current state takes no
        row for: ``"queue"`` (keep it for a later state), ``"reject"`` or ``"drop"``."""
        self.cancellable: tuple[str, ...] = tuple(cancels)
        """The states with a cancel route, in table order (for a refusal's message)."""
        self.instance_type: type[Instance[Any, Any]] = type(
            f"{kind.__name__}Action",
            (Instance,),
            {
                "__slots__": (),
                "__module__": kind.__module__,
                "__qualname__": f"{kind.__qualname__}Action",
                "name": d.name,
                "version": d.version,
                "__fsm_kind__": kind,
                "_kind": self,
            },
        )

    def decode_event(self, delivered: Delivered) -> Any:
        """A pending event as its type, or the text saying why it cannot be read (the step
        then sets it aside, `StepContext.drop_event`)."""
        cls = self.event_types.get(delivered.name)
        if cls is None:
            return f"kind {self.name!r} v{self.version} has no row taking event {delivered.name!r}"
        try:
            return CONVERTER.structure(orjson.loads(delivered.payload), cls)
        except Exception as exc:  # cattrs raises many types; each means "unreadable"
            return f"event {delivered.name!r} does not load: {type(exc).__name__}: {exc}"


def _terminal_outcome(d: Definition, target: State) -> Outcome | None:
    if target.role == "done":
        return Done(target.name)
    if target.role == "failed":
        return Failed(f"{d.label()} ended in failed state {target.name!r}", target.name)
    return None


def _compile_state(
    d: Definition, s: State, row: Rejection[Any, Any] | None, cancel_to: State | None
) -> CompiledState:
    exits = d.exits(s)
    edges = tuple(
        (
            t.guard,
            is_async(t.guard),
            t.effect,
            is_async(t.effect),
            t.target.name,
            _terminal_outcome(d, t.target),
        )
        for t in exits
        if t.on is None
    )
    events = tuple(
        (
            t.on,
            t.guard,
            is_async(t.guard),
            t.effect,
            is_async(t.effect),
            t.target.name,
            _terminal_outcome(d, t.target),
        )
        for t in exits
        if t.on is not None
    )
    deadline = None
    if s.deadline is not None:
        to = s.deadline.to
        deadline = (s.deadline.seconds, to.name, _terminal_outcome(d, to))
    handler = row.handler if row is not None else None
    targets = None
    if handler is not None and row is not None and row.to is not None:
        targets = frozenset(t.name for t in row.to)
    route = None
    if row is not None and handler is None and not row.park and row.to:
        route = (row.to[0].name, _terminal_outcome(d, row.to[0]))
    callbacks = [(e[0], e[1]) for e in edges] + [(e[2], e[3]) for e in edges]
    callbacks += [(e[1], e[2]) for e in events] + [(e[3], e[4]) for e in events]
    callbacks.append((handler, is_async(handler)))
    blocking = d.blocking_of(s) and any(fn is not None and not a for fn, a in callbacks)
    return CompiledState(
        name=s.name,
        role=s.role,
        edges=edges,
        events=events,
        deadline=deadline,
        event_names=tuple(dict.fromkeys(event_name(e[0]) for e in events)),
        slow=bool(events) or deadline is not None,
        has_async=blocking or any(a for _, a in callbacks),
        blocking=blocking,
        wake_after=s.wake.after if s.wake else None,
        wake_backoff=s.wake.backoff if s.wake else None,
        retry=s.retry,
        timeout=s.step_timeout if s.step_timeout is not None else d.timeout,
        route=route,
        handler=handler,
        handler_blocks=blocking and handler is not None and not is_async(handler),
        targets=targets,
        park=row is not None and row.park,
        cancel=None if cancel_to is None else (cancel_to.name, _terminal_outcome(d, cancel_to)),
        data_type=d.data_type,
        where=f"{d.label()}, state {s.name!r}",
        stuck=(
            f"{d.label()}, state {s.name!r}: no guard holds "
            f"({', '.join(getattr(e[0], '__name__', repr(e[0])) for e in edges)}), so the "
            "action cannot move. Fix: make the guards exhaustive or add a last unguarded "
            "transition (or make the state a wait state); then notify the action"
        ),
    )
