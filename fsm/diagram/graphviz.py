"""SVG and PNG: DOT piped through Graphviz's ``dot`` program.

Graphviz is a system package, not a Python dependency: only these two formats need it, and
they say so when it is missing.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Literal

from fsm.diagram.dot import to_dot
from fsm.diagram.model import KindGraph
from fsm.diagram.overlay import NO_OVERLAY, Overlay
from fsm.errors import FsmError

INSTALL_GRAPHVIZ = "install Graphviz (apt-get install graphviz / brew install graphviz)"


class GraphvizError(FsmError):
    """Graphviz's ``dot`` is missing or failed; SVG and PNG cannot be made without it."""


def run_dot(dot_source: str, output_format: Literal["svg", "png"]) -> bytes:
    """Pipe DOT through Graphviz's ``dot -T<format>`` and return what it printed."""
    program = shutil.which("dot")
    if program is None:
        raise GraphvizError(
            f"cannot render {output_format}: Graphviz's `dot` program is not on PATH; "
            f"{INSTALL_GRAPHVIZ}"
        )
    proc = subprocess.run(
        [program, f"-T{output_format}"],
        input=dot_source.encode(),
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        detail = proc.stderr.decode(errors="replace").strip() or f"exit code {proc.returncode}"
        raise GraphvizError(f"Graphviz's dot failed to render {output_format}: {detail}")
    return proc.stdout


def to_svg(graph: KindGraph, overlay: Overlay = NO_OVERLAY) -> bytes:
    """SVG from `to_dot` through Graphviz."""
    return run_dot(to_dot(graph, overlay), "svg")


def to_png(graph: KindGraph, overlay: Overlay = NO_OVERLAY) -> bytes:
    """PNG from `to_dot` through Graphviz."""
    return run_dot(to_dot(graph, overlay), "png")
