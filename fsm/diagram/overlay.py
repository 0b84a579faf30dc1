"""Overlays: live data from a database, drawn over a kind's diagram as plain values.

This is the only part of the diagram package that reads a store. It turns rows into an
`Overlay` (the current state of one action, or live actions per state), which every renderer
applies the same way; renderers never see a database, and the IR never carries live data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

import attrs

from fsm.diagram.model import KindGraph
from fsm.errors import FsmError

if TYPE_CHECKING:
    from fsm.store import LoggedStep, Store


def _frozen_counts(counts: Mapping[str, int]) -> Mapping[str, int]:
    return MappingProxyType(dict(counts))


def _frozen_path(path: Iterable[tuple[str, str]]) -> frozenset[tuple[str, str]]:
    return frozenset((str(a), str(b)) for a, b in path)


@attrs.frozen(hash=False)
class Overlay:
    """Live data drawn over a kind's diagram.

    ``current``: the state of one action, highlighted. ``counts``: live actions per state,
    shown as ``state (n)``; states absent from it show no count. ``path``: the (source,
    target) pairs of the edges one action took (`history_path`), drawn bold by the DOT
    renderer (and so in SVG and PNG; a Mermaid state diagram cannot style one edge). Compared
    by value; not hashable, since ``counts`` is a mapping.
    """

    current: str | None = None
    counts: Mapping[str, int] = attrs.field(factory=dict, converter=_frozen_counts)
    path: frozenset[tuple[str, str]] = attrs.field(factory=frozenset, converter=_frozen_path)

    def check(self, graph: KindGraph) -> None:
        """Raise ``ValueError`` if the overlay names a state the graph does not have.

        Drawing such an overlay would silently drop data, so the caller must decide what to
        do with it (the CLI reports states unknown to the current code on stderr).
        """
        known = {s.name for s in graph.states}
        named = {*self.counts, *([self.current] if self.current else [])}
        named |= {state for edge in self.path for state in edge}
        unknown = sorted(named - known)
        if unknown:
            raise ValueError(
                f"overlay names states that kind {graph.name!r} v{graph.version} does not "
                f"have: {', '.join(unknown)}"
            )


NO_OVERLAY = Overlay()


class OverlayError(FsmError, LookupError):
    """The database does not hold what an overlay was asked to show."""


def action_overlay(store: Store, graph: KindGraph, action_id: str) -> Overlay:
    """Highlight the state of action ``action_id``, read from ``store``.

    Raises `OverlayError` if there is no such action, if it belongs to another kind, or if
    its state is not one of the graph's (a row written by another version of the kind).
    """
    row = store.row(action_id)
    if row is None:
        raise OverlayError(f"no action with id {action_id!r} in the database")
    if row.kind != graph.name:
        raise OverlayError(f"action {action_id!r} is a {row.kind!r} action, not {graph.name!r}")
    if row.state not in {s.name for s in graph.states}:
        raise OverlayError(
            f"action {action_id!r} is in state {row.state!r} (row v{row.version}), which "
            f"kind {graph.name!r} v{graph.version} does not have"
        )
    return Overlay(current=row.state)


def history_path(graph: KindGraph, steps: Iterable[LoggedStep]) -> frozenset[tuple[str, str]]:
    """The edges of ``graph`` an action's history went along: each step that moved it (or
    stayed, on a retry's loop) from one state to another the graph joins by an edge.

    A step between states the graph does not join (an older version's, an operator's stop)
    is left out: the drawing shows only what it can draw.
    """
    edges = {(e.source, e.target) for e in graph.edges}
    return frozenset(
        (step.from_state, step.to_state)
        for step in steps
        if step.to_state is not None and (step.from_state, step.to_state) in edges
    )


def live_counts(store: Store, kind: str) -> dict[str, int]:
    """State -> number of live actions of ``kind`` in it; quarantined rows are not live."""
    counts = {state: n for (_, state), n in store.count_by_state(kind).items()}
    for row in store.quarantined():
        if row.kind == kind:
            counts[row.state] -= 1
    return {state: n for state, n in sorted(counts.items()) if n > 0}


def read_overlay(
    store: Store, graph: KindGraph, action_id: str | None = None
) -> tuple[Overlay, list[str]]:
    """What ``fsm diagram --db`` draws: the state of ``action_id``, or else the live actions
    per state of the kind; with the problems to report beside the drawing.

    Counts in states the code does not know (rows of an older version) cannot be drawn; they
    come back as a problem rather than being dropped silently.
    """
    if action_id is not None:
        return action_overlay(store, graph, action_id), []
    known = {s.name for s in graph.states}
    counts = live_counts(store, graph.name)
    unknown = [f"{s} ({n})" for s, n in counts.items() if s not in known]
    problems = []
    if unknown:
        problems.append(
            f"live {graph.name!r} actions in states this code does not have: " + ", ".join(unknown)
        )
    return Overlay(counts={s: n for s, n in counts.items() if s in known}), problems
