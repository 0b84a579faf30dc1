"""Graphviz DOT: the source of the SVG and PNG drawings, readable and diffable on its own."""

from __future__ import annotations

from collections.abc import Mapping

from fsm.diagram.model import Edge, KindGraph, StateNode
from fsm.diagram.overlay import NO_OVERLAY, Overlay
from fsm.diagram.style import (
    CANCEL_COLOR,
    CURRENT_FILL,
    CURRENT_STROKE,
    EVENT_COLOR,
    FILL,
    REJECTION_COLOR,
    RETRY_COLOR,
    STROKE,
    TIMEOUT_COLOR,
    edge_label,
    fresh_name,
    state_label,
)

START_NODE = "__start__"
"""The point the initial arrow comes from (underscores are added if a state has this name)."""


def dot_quote(text: str) -> str:
    """A DOT double-quoted string."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _dot_attrs(pairs: Mapping[str, str | int | float]) -> str:
    body = ", ".join(
        f"{key}={dot_quote(value) if isinstance(value, str) else value}"
        for key, value in pairs.items()
    )
    return f" [{body}]" if body else ""


def _dot_node(node: StateNode, overlay: Overlay) -> dict[str, str | int | float]:
    out: dict[str, str | int | float] = {
        "label": state_label(node, overlay),
        "fillcolor": FILL[node.role],
        "color": STROKE[node.role],
    }
    if node.role == "wait":
        out["shape"] = "box"
        out["style"] = "rounded,filled,dashed"
    elif node.role in ("done", "failed"):
        out["shape"] = "box"
        out["style"] = "rounded,filled"
        out["peripheries"] = 2
    if node.initial:
        out["penwidth"] = 2
    if node.doc:
        out["tooltip"] = node.doc
    if node.name == overlay.current:
        out["fillcolor"] = CURRENT_FILL
        out["color"] = CURRENT_STROKE
        out["penwidth"] = 3
    return out


def _dot_edge(edge: Edge, overlay: Overlay) -> dict[str, str | int | float]:
    out: dict[str, str | int | float] = {}
    label = edge_label(edge)
    if label:
        out["label"] = label
    if edge.style == "event":
        out.update(style="bold", color=EVENT_COLOR, fontcolor=EVENT_COLOR)
    elif edge.style == "timeout":
        out.update(style="dotted,bold", color=TIMEOUT_COLOR, fontcolor=TIMEOUT_COLOR)
    elif edge.style == "rejection":
        out.update(style="dashed", color=REJECTION_COLOR, fontcolor=REJECTION_COLOR)
    elif edge.style == "retry":
        out.update(style="dotted", color=RETRY_COLOR, fontcolor=RETRY_COLOR)
    elif edge.style == "cancel":
        out.update(style="dashed", color=CANCEL_COLOR, fontcolor=CANCEL_COLOR, arrowhead="empty")
    if (edge.source, edge.target) in overlay.path:
        out.update(color=CURRENT_STROKE, penwidth=3)
    return out


_DOT_GRAPH: Mapping[str, str | int | float] = {
    "rankdir": "LR",
    "labelloc": "t",
    "fontname": "Helvetica",
}
_DOT_NODE: Mapping[str, str | int | float] = {
    "shape": "box",
    "style": "rounded,filled",
    "fontname": "Helvetica",
    "fontsize": 12,
}
_DOT_EDGE: Mapping[str, str | int | float] = {"fontname": "Helvetica", "fontsize": 10}


def to_dot(graph: KindGraph, overlay: Overlay = NO_OVERLAY) -> str:
    """Graphviz DOT: roles as fill colours (terminals doubled, wait states dashed), the
    initial state thick and entered from a point, event rows bold blue, deadlines bold
    dotted dark yellow, rejection routes dashed red, retry routes dotted grey, cancel routes
    dashed purple with a hollow head, the current state filled turquoise and the edges of
    the overlay's path thick in the current state's stroke."""
    overlay.check(graph)
    lines = [
        f"digraph {dot_quote(graph.name)} {{",
        "    graph" + _dot_attrs({**_DOT_GRAPH, "label": f"{graph.name} v{graph.version}"}) + ";",
        "    node" + _dot_attrs(_DOT_NODE) + ";",
        "    edge" + _dot_attrs(_DOT_EDGE) + ";",
    ]
    initial = [s for s in graph.states if s.initial]
    start = dot_quote(fresh_name(START_NODE, {s.name for s in graph.states}))
    if initial:
        point: dict[str, str | int | float] = {"shape": "point", "width": 0.2, "label": ""}
        lines.append(f"    {start}{_dot_attrs(point)};")
    lines.extend(
        f"    {dot_quote(node.name)}{_dot_attrs(_dot_node(node, overlay))};"
        for node in graph.states
    )
    lines.extend(f"    {start} -> {dot_quote(s.name)};" for s in initial)
    lines.extend(
        f"    {dot_quote(e.source)} -> {dot_quote(e.target)}{_dot_attrs(_dot_edge(e, overlay))};"
        for e in graph.edges
    )
    lines.append("}")
    return "\n".join(lines) + "\n"
