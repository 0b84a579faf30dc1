"""Mermaid ``stateDiagram-v2``: the format that renders in GitHub, GitLab and most doc tools."""

from __future__ import annotations

import re

from fsm.diagram.model import KindGraph
from fsm.diagram.overlay import NO_OVERLAY, Overlay
from fsm.diagram.style import (
    CURRENT_FILL,
    CURRENT_STROKE,
    FILL,
    STROKE,
    edge_label,
    fresh_name,
    state_label,
)

_MERMAID_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Mermaid entity codes for the characters that end or confuse a label. ``#`` itself needs
# none: an entity ends with ``;``, which is always escaped, so no name can form one.
_MERMAID_ESCAPES = {";": "#59;", "<": "#lt;", ">": "#gt;", '"': "#quot;"}


def mermaid_escape(text: str) -> str:
    """Escape ``text`` for a Mermaid label."""
    return "".join(_MERMAID_ESCAPES.get(ch, ch) for ch in text)


# Words with a meaning in stateDiagram-v2 syntax; a state so named gets a generated id.
_MERMAID_KEYWORDS = frozenset(
    {"state", "note", "end", "direction", "class", "classdef", "style", "as", "click"}
)


def _mermaid_ids(graph: KindGraph) -> dict[str, str]:
    """State name -> Mermaid id: the name itself when it is a plain, non-keyword identifier.

    Other names get a generated id (never one of the graph's names) and are shown through
    ``state "name" as id``, so any state name survives the round trip.
    """
    taken = {s.name for s in graph.states}
    ids: dict[str, str] = {}
    for i, node in enumerate(graph.states):
        plain = _MERMAID_ID.match(node.name) and node.name.lower() not in _MERMAID_KEYWORDS
        ids[node.name] = node.name if plain else fresh_name(f"state_{i}", taken)
        taken.add(ids[node.name])
    return ids


def to_mermaid(graph: KindGraph, overlay: Overlay = NO_OVERLAY) -> str:
    """A Mermaid ``stateDiagram-v2``: ``[*] -->`` the initial state, terminals ``--> [*]``.

    Roles are ``classDef`` styles (wait, done, failed); the current state gets ``current``
    instead of its role's style. Mermaid state diagrams cannot style single edges, so
    event rows (``on Event``), deadlines (``after 3d``), rejection, retry and cancel routes
    are told apart by their label.
    """
    overlay.check(graph)
    ids = _mermaid_ids(graph)
    lines = ["stateDiagram-v2", "    direction LR", f"    %% kind {graph.name} v{graph.version}"]
    for node in graph.states:
        label = state_label(node, overlay)
        if label != ids[node.name]:
            lines.append(f'    state "{mermaid_escape(label)}" as {ids[node.name]}')
    lines.extend(f"    [*] --> {ids[s.name]}" for s in graph.states if s.initial)
    for edge in graph.edges:
        label = edge_label(edge)
        arrow = f"    {ids[edge.source]} --> {ids[edge.target]}"
        lines.append(f"{arrow} : {mermaid_escape(label)}" if label else arrow)
    lines.extend(f"    {ids[s.name]} --> [*]" for s in graph.states if s.role in ("done", "failed"))
    for role in ("wait", "done", "failed"):
        lines.append(f"    classDef {role} fill:{FILL[role]},stroke:{STROKE[role]}")
    lines.append(
        f"    classDef current fill:{CURRENT_FILL},stroke:{CURRENT_STROKE},stroke-width:3px"
    )
    for node in graph.states:
        if node.name == overlay.current:
            lines.append(f"    class {ids[node.name]} current")
        elif node.role != "step":
            lines.append(f"    class {ids[node.name]} {node.role}")
    return "\n".join(lines) + "\n"
