"""What every renderer draws the same way: the palette, state and edge labels, fresh ids.

One palette for both text formats, so a Mermaid and an SVG of the same kind look alike.
"""

from __future__ import annotations

from collections.abc import Mapping

from fsm.diagram.model import Edge, StateNode
from fsm.diagram.overlay import Overlay
from fsm.state import Role

FILL: Mapping[Role, str] = {
    "step": "#ffffff",
    "wait": "#fff3cd",
    "done": "#d4edda",
    "failed": "#f8d7da",
}
STROKE: Mapping[Role, str] = {
    "step": "#333333",
    "wait": "#b8860b",
    "done": "#2e7d32",
    "failed": "#c62828",
}
CURRENT_FILL = "#40e0d0"
CURRENT_STROKE = "#00607a"
REJECTION_COLOR = "#c62828"
RETRY_COLOR = "#6c757d"
CANCEL_COLOR = "#6f42c1"
EVENT_COLOR = "#1565c0"
TIMEOUT_COLOR = "#b8860b"
"""A deadline's edge takes the wait states' stroke: it is the wait running out."""


def edge_label(edge: Edge) -> str:
    """``[guard] / effect``, prefixed with ``on Event`` for an event row, ``rejected``,
    ``retry`` or ``cancelled`` for those routes; an edge a rejection handler declared reads
    ``rejected / handler``, a deadline ``after 3d``."""
    parts: list[str] = []
    if edge.style == "event":
        parts.append(f"on {edge.event}")
    elif edge.style == "timeout":
        parts.append(edge.deadline or "after timeout")
    elif edge.style == "rejection":
        parts.append("rejected")
    elif edge.style == "retry":
        parts.append("retry")
    elif edge.style == "cancel":
        parts.append("cancelled")
    if edge.guard:
        parts.append(f"[{edge.guard}]")
    for action in (edge.effect, edge.handler):
        if action:
            parts.append(f"/ {action}")
    return " ".join(parts)


def state_label(node: StateNode, overlay: Overlay) -> str:
    """The state's name, with ``(n)`` when the overlay counts actions in it."""
    count = overlay.counts.get(node.name)
    return node.name if count is None else f"{node.name} ({count})"


def fresh_name(base: str, taken: set[str]) -> str:
    """``base``, with underscores added until it is none of ``taken``."""
    while base in taken:
        base += "_"
    return base
