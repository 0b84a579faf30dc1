"""The diagram IR: a kind reduced to named states and labelled edges.

Extracted once from a kind's compiled table (`fsm.kind.Kind.graph`), rendered by the
renderers of `fsm.diagram`. Keeping this small and free of callables is what lets every
renderer stay a short pure function, and lets overlays (current state, counts per state) be
plain data added beside it.
"""

from __future__ import annotations

from typing import Literal

import attrs

from fsm.state import Role

EdgeStyle = Literal["transition", "event", "timeout", "rejection", "retry", "cancel"]
"""What an edge is, and so how it is drawn: a transition, a row taken by an event
(``a.to(b, on=Approved)``), a wait state's deadline (``State.wait(timeout=...,
on_timeout=...)``), a rejection route (or a handler's declared target), a retry route, or a
cancel route (``state.cancelled(to=...)``, taken only by an operator)."""


@attrs.frozen
class StateNode:
    """A state: its name, its role, and whether it is the initial state.

    ``handler`` names the state's rejection handler when its row declares no targets
    (``rejected(handler=...)``): they are decided at run time, so they cannot be drawn.
    """

    name: str
    role: Role
    initial: bool = False
    doc: str | None = None
    handler: str | None = None


@attrs.frozen
class Edge:
    """A transition (or an event row, a deadline, a rejection or cancel route) with the
    names of its guard and effect.

    ``handler`` names the rejection handler that may take this edge (a target it declared
    in its ``rejected(handler=..., to=...)`` row); such edges have the ``rejection`` style.
    ``event`` names the event type of an ``event`` edge; ``deadline`` is how a ``timeout``
    edge's deadline reads (``after 3d``, `fsm.state.Deadline.describe`).
    """

    source: str
    target: str
    guard: str | None = None
    effect: str | None = None
    style: EdgeStyle = "transition"
    handler: str | None = None
    event: str | None = None
    deadline: str | None = None


@attrs.frozen
class KindGraph:
    """One kind as a graph: states in declaration order, edges in table order."""

    name: str
    version: int
    states: tuple[StateNode, ...]
    edges: tuple[Edge, ...]

    def state(self, name: str) -> StateNode:
        for node in self.states:
            if node.name == name:
                return node
        raise KeyError(f"kind {self.name!r} has no state {name!r}")
