"""Diagrams of a kind: one IR (`fsm.graph.KindGraph`) in, one small pure renderer per format.

The pipeline is python-statemachine's (extract -> IR -> renderer), cut down to what a kind
has: no compound or parallel states, so each renderer is a single pass over states and edges
in declaration order. That order is the only order used, which makes the output
deterministic: a committed diagram can be compared byte for byte with a fresh one.

Overlays (the current state of one action, the number of live actions per state) are plain
data beside the graph, applied the same way by every renderer, so the IR never carries
anything that depends on a database.

SVG and PNG are DOT piped through Graphviz's ``dot`` program. Graphviz is a system package,
not a Python dependency: only these two formats need it, and they say so when it is missing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal, get_args

import attrs

from fsm.errors import FsmError
from fsm.graph import Edge, KindGraph, Role, StateNode

if TYPE_CHECKING:
    from fsm.store import Store

Format = Literal["mermaid", "dot", "svg", "png"]
FORMATS: tuple[Format, ...] = get_args(Format)
BINARY_FORMATS: frozenset[Format] = frozenset({"png"})
"""Formats that cannot be written to a terminal; the CLI insists on ``--output`` for them."""

INSTALL_GRAPHVIZ = "install Graphviz (apt-get install graphviz / brew install graphviz)"


class GraphvizError(FsmError):
    """Graphviz's ``dot`` is missing or failed; SVG and PNG cannot be made without it."""


def _frozen_counts(counts: Mapping[str, int]) -> Mapping[str, int]:
    return MappingProxyType(dict(counts))


@attrs.frozen(hash=False)
class Overlay:
    """Live data drawn over a kind's diagram.

    ``current``: the state of one action, highlighted. ``counts``: live actions per state,
    shown as ``state (n)``; states absent from it show no count. Compared by value; not
    hashable, since ``counts`` is a mapping.
    """

    current: str | None = None
    counts: Mapping[str, int] = attrs.field(factory=dict, converter=_frozen_counts)

    def check(self, graph: KindGraph) -> None:
        """Raise ``ValueError`` if the overlay names a state the graph does not have.

        Drawing such an overlay would silently drop data, so the caller must decide what to
        do with it (the CLI reports states unknown to the current code on stderr).
        """
        known = {s.name for s in graph.states}
        unknown = sorted({*self.counts, *([self.current] if self.current else [])} - known)
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


def live_counts(store: Store, kind: str) -> dict[str, int]:
    """State -> number of live actions of ``kind`` in it; quarantined rows are not live."""
    counts = {state: n for (_, state), n in store.count_by_state(kind).items()}
    for row in store.quarantined():
        if row.kind == kind:
            counts[row.state] -= 1
    return {state: n for state, n in sorted(counts.items()) if n > 0}


# One palette for both text formats, so a Mermaid and an SVG of the same kind look alike.
_FILL: Mapping[Role, str] = {
    "step": "#ffffff",
    "wait": "#fff3cd",
    "done": "#d4edda",
    "failed": "#f8d7da",
}
_STROKE: Mapping[Role, str] = {
    "step": "#333333",
    "wait": "#b8860b",
    "done": "#2e7d32",
    "failed": "#c62828",
}
CURRENT_FILL = "#40e0d0"
CURRENT_STROKE = "#00607a"
REJECTION_COLOR = "#c62828"
RETRY_COLOR = "#6c757d"


def edge_label(edge: Edge) -> str:
    """``[guard] / effect``, prefixed with ``rejected`` or ``retry`` for those routes; an edge
    a rejection handler declared reads ``rejected / handler``."""
    parts: list[str] = []
    if edge.style == "rejection":
        parts.append("rejected")
    elif edge.style == "retry":
        parts.append("retry")
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


# -- Mermaid ------------------------------------------------------------------------------

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


def _fresh(base: str, taken: set[str]) -> str:
    while base in taken:
        base += "_"
    return base


def _mermaid_ids(graph: KindGraph) -> dict[str, str]:
    """State name -> Mermaid id: the name itself when it is a plain, non-keyword identifier.

    Other names get a generated id (never one of the graph's names) and are shown through
    ``state "name" as id``, so any state name survives the round trip.
    """
    taken = {s.name for s in graph.states}
    ids: dict[str, str] = {}
    for i, node in enumerate(graph.states):
        plain = _MERMAID_ID.match(node.name) and node.name.lower() not in _MERMAID_KEYWORDS
        ids[node.name] = node.name if plain else _fresh(f"state_{i}", taken)
        taken.add(ids[node.name])
    return ids


def to_mermaid(graph: KindGraph, overlay: Overlay = NO_OVERLAY) -> str:
    """A Mermaid ``stateDiagram-v2``: ``[*] -->`` the initial state, terminals ``--> [*]``.

    Roles are ``classDef`` styles (wait, done, failed); the current state gets ``current``
    instead of its role's style. Mermaid state diagrams cannot style single edges, so
    rejection and retry routes are told apart by their label.
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
        lines.append(f"    classDef {role} fill:{_FILL[role]},stroke:{_STROKE[role]}")
    lines.append(
        f"    classDef current fill:{CURRENT_FILL},stroke:{CURRENT_STROKE},stroke-width:3px"
    )
    for node in graph.states:
        if node.name == overlay.current:
            lines.append(f"    class {ids[node.name]} current")
        elif node.role != "step":
            lines.append(f"    class {ids[node.name]} {node.role}")
    return "\n".join(lines) + "\n"


# -- DOT ----------------------------------------------------------------------------------

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
        "fillcolor": _FILL[node.role],
        "color": _STROKE[node.role],
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


def _dot_edge(edge: Edge) -> dict[str, str | int | float]:
    out: dict[str, str | int | float] = {}
    label = edge_label(edge)
    if label:
        out["label"] = label
    if edge.style == "rejection":
        out.update(style="dashed", color=REJECTION_COLOR, fontcolor=REJECTION_COLOR)
    elif edge.style == "retry":
        out.update(style="dotted", color=RETRY_COLOR, fontcolor=RETRY_COLOR)
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
    initial state thick and entered from a point, rejection routes dashed red, retry routes
    dotted grey, the current state filled turquoise."""
    overlay.check(graph)
    lines = [
        f"digraph {dot_quote(graph.name)} {{",
        "    graph" + _dot_attrs({**_DOT_GRAPH, "label": f"{graph.name} v{graph.version}"}) + ";",
        "    node" + _dot_attrs(_DOT_NODE) + ";",
        "    edge" + _dot_attrs(_DOT_EDGE) + ";",
    ]
    initial = [s for s in graph.states if s.initial]
    start = dot_quote(_fresh(START_NODE, {s.name for s in graph.states}))
    if initial:
        point: dict[str, str | int | float] = {"shape": "point", "width": 0.2, "label": ""}
        lines.append(f"    {start}{_dot_attrs(point)};")
    lines.extend(
        f"    {dot_quote(node.name)}{_dot_attrs(_dot_node(node, overlay))};"
        for node in graph.states
    )
    lines.extend(f"    {start} -> {dot_quote(s.name)};" for s in initial)
    lines.extend(
        f"    {dot_quote(e.source)} -> {dot_quote(e.target)}{_dot_attrs(_dot_edge(e))};"
        for e in graph.edges
    )
    lines.append("}")
    return "\n".join(lines) + "\n"


# -- Graphviz -----------------------------------------------------------------------------


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
