"""One entry point for every format: ``render(graph, fmt, overlay)`` -> bytes for a file."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal, get_args

from fsm.diagram.dot import to_dot
from fsm.diagram.graphviz import to_png, to_svg
from fsm.diagram.mermaid import to_mermaid
from fsm.diagram.model import KindGraph
from fsm.diagram.overlay import NO_OVERLAY, Overlay

Format = Literal["mermaid", "dot", "svg", "png"]
FORMATS: tuple[Format, ...] = get_args(Format)
BINARY_FORMATS: frozenset[Format] = frozenset({"png"})
"""Formats that cannot be written to a terminal; the CLI insists on ``--output`` for them."""


def _encoded(render: Callable[[KindGraph, Overlay], str]) -> Callable[[KindGraph, Overlay], bytes]:
    return lambda graph, overlay: render(graph, overlay).encode()


RENDERERS: Mapping[Format, Callable[[KindGraph, Overlay], bytes]] = {
    "mermaid": _encoded(to_mermaid),
    "dot": _encoded(to_dot),
    "svg": to_svg,
    "png": to_png,
}


def render(graph: KindGraph, fmt: Format, overlay: Overlay = NO_OVERLAY) -> bytes:
    """The diagram of ``graph`` in ``fmt``, as bytes ready to write to a file."""
    return RENDERERS[fmt](graph, overlay)
