"""Diagrams of a kind: extract -> IR -> overlay -> one small pure renderer per format.

The pipeline is python-statemachine's ``contrib/diagram``, cut down to what a kind has: no
compound or parallel states, so each renderer is a single pass over states and edges in
declaration order. That order is the only order used, which makes the output deterministic:
a committed diagram can be compared byte for byte with a fresh one.

* extract: ``Kind.graph()`` reduces a kind's table to the IR of `fsm.diagram.model`;
* overlay: `fsm.diagram.overlay` reads a store into plain data (current state, counts);
* renderers: `fsm.diagram.mermaid`, `fsm.diagram.dot`, `fsm.diagram.graphviz` (SVG, PNG);
  `render` picks one by format name.
"""

from fsm.diagram.dot import to_dot
from fsm.diagram.graphviz import GraphvizError, to_png, to_svg
from fsm.diagram.mermaid import to_mermaid
from fsm.diagram.model import Edge, EdgeStyle, KindGraph, StateNode
from fsm.diagram.overlay import (
    NO_OVERLAY,
    Overlay,
    OverlayError,
    action_overlay,
    history_path,
    live_counts,
    read_overlay,
)
from fsm.diagram.render import BINARY_FORMATS, FORMATS, Format, render

__all__ = [
    "BINARY_FORMATS",
    "FORMATS",
    "NO_OVERLAY",
    "Edge",
    "EdgeStyle",
    "Format",
    "GraphvizError",
    "KindGraph",
    "Overlay",
    "OverlayError",
    "StateNode",
    "action_overlay",
    "history_path",
    "live_counts",
    "read_overlay",
    "render",
    "to_dot",
    "to_mermaid",
    "to_png",
    "to_svg",
]
