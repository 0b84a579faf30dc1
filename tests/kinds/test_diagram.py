"""Diagrams: each format parsed back and compared with the graph it was drawn from."""

from __future__ import annotations

import re
import struct
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import ClassVar

import attrs
import pydot
import pytest

import fsm
from fsm.diagram import (
    Edge,
    GraphvizError,
    KindGraph,
    Overlay,
    OverlayError,
    StateNode,
    action_overlay,
    history_path,
    live_counts,
    render,
    to_dot,
    to_mermaid,
    to_png,
    to_svg,
)
from fsm.diagram.graphviz import run_dot
from fsm.diagram.style import CURRENT_FILL, CURRENT_STROKE, REJECTION_COLOR
from fsm.store import LoggedStep

# pydot's parser still calls pyparsing's old camelCase names.
pytestmark = pytest.mark.filterwarnings("ignore:.*deprecated - use:DeprecationWarning")


ORDER = KindGraph(
    name="order",
    version=2,
    states=(
        StateNode("created", "step", initial=True, doc="the order exists"),
        StateNode("charging", "step"),
        StateNode("awaiting_shipment", "wait"),
        StateNode("refunding", "step"),
        StateNode("shipped", "done"),
        StateNode("cancelled", "failed"),
    ),
    edges=(
        Edge("created", "charging", guard="in_stock", effect="reserve"),
        Edge("created", "cancelled"),
        Edge("charging", "awaiting_shipment", effect="charge"),
        Edge("charging", "refunding", style="rejection"),
        Edge("awaiting_shipment", "shipped", guard="parcel_left"),
        Edge("awaiting_shipment", "awaiting_shipment", style="retry"),
        Edge("refunding", "cancelled", effect="refund"),
    ),
)

# The labels written out by hand: the test must not reuse the code that makes them.
ORDER_EDGES = [
    ("created", "charging", "[in_stock] / reserve"),
    ("created", "cancelled", ""),
    ("charging", "awaiting_shipment", "/ charge"),
    ("charging", "refunding", "rejected"),
    ("awaiting_shipment", "shipped", "[parcel_left]"),
    ("awaiting_shipment", "awaiting_shipment", "retry"),
    ("refunding", "cancelled", "/ refund"),
]


# -- Mermaid ------------------------------------------------------------------------------

_MERMAID_CODES = {"#59;": ";", "#lt;": "<", "#gt;": ">", "#quot;": '"'}


def _unescape(text: str) -> str:
    """Decode Mermaid entities in one left-to-right pass, as Mermaid does."""
    return re.sub(r"#\w+;", lambda m: _MERMAID_CODES.get(m.group(0), m.group(0)), text)


@attrs.define
class ParsedMermaid:
    labels: dict[str, str] = attrs.field(factory=dict)  # id -> shown label
    initial: list[str] = attrs.field(factory=list)
    terminal: list[str] = attrs.field(factory=list)
    edges: list[tuple[str, str, str]] = attrs.field(factory=list)
    class_of: dict[str, str] = attrs.field(factory=dict)
    class_defs: dict[str, str] = attrs.field(factory=dict)

    def name(self, state_id: str) -> str:
        """The state name behind an id: its label without an overlay count."""
        label = self.labels.get(state_id, state_id)
        return re.sub(r" \(\d+\)\Z", "", label)

    def triples(self) -> list[tuple[str, str, str]]:
        return [(self.name(a), self.name(b), label) for a, b, label in self.edges]


def parse_mermaid(text: str) -> ParsedMermaid:
    lines = text.splitlines()
    assert lines[0] == "stateDiagram-v2"
    out = ParsedMermaid()
    for line in (raw.strip() for raw in lines[1:]):
        if not line or line.startswith("%%") or line.startswith("direction "):
            continue
        if m := re.fullmatch(r'state "([^"]*)" as (\w+)', line):
            out.labels[m[2]] = _unescape(m[1])
        elif m := re.fullmatch(r"\[\*\] --> (\w+)", line):
            out.initial.append(m[1])
        elif m := re.fullmatch(r"(\w+) --> \[\*\]", line):
            out.terminal.append(m[1])
        elif m := re.fullmatch(r"(\w+) --> (\w+)(?: : (.*))?", line):
            out.edges.append((m[1], m[2], _unescape(m[3] or "")))
        elif m := re.fullmatch(r"classDef (\w+) (.+)", line):
            out.class_defs[m[1]] = m[2]
        elif m := re.fullmatch(r"class (\w+) (\w+)", line):
            out.class_of[m[1]] = m[2]
        else:
            pytest.fail(f"unexpected Mermaid line: {line!r}")
    return out


def test_mermaid_edges_roles_initial_and_terminals() -> None:
    parsed = parse_mermaid(to_mermaid(ORDER))
    assert parsed.triples() == ORDER_EDGES
    assert parsed.initial == ["created"]
    assert parsed.terminal == ["shipped", "cancelled"]
    assert parsed.class_of == {
        "awaiting_shipment": "wait",
        "shipped": "done",
        "cancelled": "failed",
    }
    assert set(parsed.class_defs) == {"wait", "done", "failed", "current"}
    assert parsed.labels == {}  # plain names need no `state "..." as` line


def test_mermaid_overlay_highlights_current_state_and_shows_counts() -> None:
    overlay = Overlay(current="awaiting_shipment", counts={"charging": 3, "created": 1})
    parsed = parse_mermaid(to_mermaid(ORDER, overlay))
    assert parsed.labels == {"charging": "charging (3)", "created": "created (1)"}
    assert parsed.class_of["awaiting_shipment"] == "current"
    assert "fill:#40e0d0" in parsed.class_defs["current"]
    assert parsed.triples() == ORDER_EDGES  # the overlay changes labels, not the graph


def test_mermaid_awkward_state_names_round_trip() -> None:
    graph = KindGraph(
        "odd",
        1,
        (
            StateNode("end", "step", initial=True),  # a Mermaid keyword
            StateNode("state_0", "step"),  # the id the generator would pick first
            StateNode("two words", "wait"),
            StateNode("a;b#lt;c", "done"),
        ),
        (
            Edge("end", "state_0"),
            Edge("state_0", "two words", guard="<lambda>"),
            Edge("two words", "a;b#lt;c", effect='say "hi"'),
        ),
    )
    parsed = parse_mermaid(to_mermaid(graph, Overlay(counts={"two words": 2})))
    assert parsed.triples() == [
        ("end", "state_0", ""),
        ("state_0", "two words", "[<lambda>]"),
        ("two words", "a;b#lt;c", '/ say "hi"'),
    ]
    ids = [*parsed.labels, "state_0"]
    assert len(set(ids)) == 4, "every state needs its own id"
    assert parsed.labels[parsed.initial[0]] == "end"


# -- DOT ----------------------------------------------------------------------------------


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return text


def parse_dot(text: str) -> tuple[dict[str, dict[str, str]], list[tuple[str, str, dict[str, str]]]]:
    graphs = pydot.graph_from_dot_data(text)
    assert graphs is not None and len(graphs) == 1
    graph = graphs[0]
    nodes = {
        _unquote(n.get_name()): {k: _unquote(str(v)) for k, v in n.get_attributes().items()}
        for n in graph.get_nodes()
        if _unquote(n.get_name()) not in ("node", "edge", "graph")
    }
    edges = [
        (
            _unquote(e.get_source()),
            _unquote(e.get_destination()),
            {k: _unquote(str(v)) for k, v in e.get_attributes().items()},
        )
        for e in graph.get_edges()
    ]
    return nodes, edges


def test_dot_structure() -> None:
    nodes, edges = parse_dot(to_dot(ORDER))
    assert list(nodes) == ["__start__", *(s.name for s in ORDER.states)]
    assert nodes["__start__"]["shape"] == "point"
    assert edges[0][:2] == ("__start__", "created")
    triples = [(a, b, attrs_.get("label", "")) for a, b, attrs_ in edges[1:]]
    assert triples == ORDER_EDGES
    # roles drawn distinctly
    assert nodes["created"]["penwidth"] == "2"
    assert "dashed" in nodes["awaiting_shipment"]["style"]
    assert nodes["shipped"]["peripheries"] == "2"
    assert nodes["cancelled"]["peripheries"] == "2"
    assert nodes["shipped"]["fillcolor"] != nodes["cancelled"]["fillcolor"]
    assert "peripheries" not in nodes["charging"]
    assert nodes["created"]["tooltip"] == "the order exists"
    # rejection and retry routes have their own style
    rejection = edges[1 + ORDER_EDGES.index(("charging", "refunding", "rejected"))][2]
    assert rejection["style"] == "dashed"
    assert rejection["color"] == REJECTION_COLOR
    retry = edges[1 + ORDER_EDGES.index(("awaiting_shipment", "awaiting_shipment", "retry"))][2]
    assert retry["style"] == "dotted"
    assert "style" not in edges[1][2]


def test_dot_overlay() -> None:
    nodes, _ = parse_dot(to_dot(ORDER, Overlay(current="charging", counts={"charging": 3})))
    assert nodes["charging"]["label"] == "charging (3)"
    assert nodes["charging"]["fillcolor"] == CURRENT_FILL
    assert all(n.get("fillcolor") != CURRENT_FILL for k, n in nodes.items() if k != "charging")


def _step(n: int, source: str, target: str | None, via: str = "step") -> LoggedStep:
    return LoggedStep("order", n, source, target, "next", via, 0, None, 0.0, "o1", n, float(n))


def test_dot_draws_the_path_an_action_took_from_its_history() -> None:
    steps = [
        _step(1, "created", "charging"),
        _step(2, "charging", "awaiting_shipment"),
        _step(3, "awaiting_shipment", "awaiting_shipment", "retry"),
        _step(4, "awaiting_shipment", "legacy"),  # an edge the graph does not have
        _step(5, "awaiting_shipment", None, "stop"),
    ]
    path = history_path(ORDER, steps)
    assert path == {
        ("created", "charging"),
        ("charging", "awaiting_shipment"),
        ("awaiting_shipment", "awaiting_shipment"),
    }
    _, edges = parse_dot(to_dot(ORDER, Overlay(current="awaiting_shipment", path=path)))
    taken = {(a, b) for a, b, attrs_ in edges if attrs_.get("color") == CURRENT_STROKE}
    assert taken == path
    thick = [attrs_ for a, b, attrs_ in edges if (a, b) in path]
    assert all(str(a["penwidth"]) == "3" for a in thick) and len(thick) == 3
    assert to_dot(ORDER, Overlay(path=())) == to_dot(ORDER)  # no path: the same drawing
    with pytest.raises(ValueError, match="nowhere"):
        to_dot(ORDER, Overlay(path=[("created", "nowhere")]))


def test_dot_quotes_names_and_avoids_the_start_node_name() -> None:
    graph = KindGraph(
        "q",
        1,
        (StateNode("__start__", "step", initial=True), StateNode('say "x"', "done")),
        (Edge("__start__", 'say "x"', guard="a\\b"),),
    )
    nodes, edges = parse_dot(to_dot(graph))
    assert set(nodes) == {"__start___", "__start__", 'say "x"'}
    assert edges[0][:2] == ("__start___", "__start__")
    assert edges[1] == ("__start__", 'say "x"', {"label": "[a\\b]"})


def test_overlay_naming_unknown_states_is_refused() -> None:
    with pytest.raises(ValueError, match="nowhere"):
        to_mermaid(ORDER, Overlay(current="nowhere"))
    with pytest.raises(ValueError, match="ghost"):
        to_dot(ORDER, Overlay(counts={"ghost": 1}))


def test_output_is_deterministic() -> None:
    twin = KindGraph(ORDER.name, ORDER.version, tuple(ORDER.states), tuple(ORDER.edges))
    overlay = Overlay(counts={"charging": 1, "created": 2})
    same_counts_other_order = Overlay(counts={"created": 2, "charging": 1})
    for fmt in ("mermaid", "dot"):
        assert render(ORDER, fmt, overlay) == render(twin, fmt, same_counts_other_order)


# -- SVG / PNG ----------------------------------------------------------------------------

SVG = "{http://www.w3.org/2000/svg}"


def _svg_nodes(svg: bytes) -> dict[str, ET.Element]:
    root = ET.fromstring(svg)
    out = {}
    for group in root.iter(f"{SVG}g"):
        if group.get("class") == "node":
            title = group.find(f"{SVG}title")
            assert title is not None and title.text is not None
            out[title.text] = group
    return out


@pytest.mark.needs_dot
def test_svg_has_every_state_and_highlights_the_current_one() -> None:
    svg = to_svg(ORDER, Overlay(current="awaiting_shipment", counts={"charging": 2}))
    nodes = _svg_nodes(svg)
    assert set(nodes) == {"__start__", *(s.name for s in ORDER.states)}
    fills = {
        name: {shape.get("fill") for shape in group if shape.tag in (f"{SVG}path", f"{SVG}polygon")}
        for name, group in nodes.items()
    }
    assert CURRENT_FILL in fills["awaiting_shipment"]
    assert all(CURRENT_FILL not in f for name, f in fills.items() if name != "awaiting_shipment")
    texts = {t.text for t in nodes["charging"].iter(f"{SVG}text")}
    assert texts == {"charging (2)"}
    edge_labels = {t.text for t in ET.fromstring(svg).iter(f"{SVG}text")}
    assert {"rejected", "[in_stock] / reserve"} <= edge_labels


@pytest.mark.needs_dot
def test_png_signature_and_size() -> None:
    png = to_png(ORDER)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    assert 200 < width < 5000
    assert 50 < height < 2000
    assert width > height  # drawn left to right


def test_missing_graphviz_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("fsm.diagram.graphviz.shutil.which", lambda _name: None)
    with pytest.raises(GraphvizError, match=r"apt-get install graphviz / brew install graphviz"):
        to_svg(ORDER)
    assert render(ORDER, "mermaid").startswith(b"stateDiagram-v2")  # text formats still work


@pytest.mark.needs_dot
def test_graphviz_failure_is_reported() -> None:
    with pytest.raises(GraphvizError, match="dot failed"):
        run_dot("digraph {", "svg")


# -- overlays from a real database --------------------------------------------------------


@attrs.define
class OrderAction(fsm.Action[None]):
    """A hand-written action whose rows carry ORDER's state names."""

    name: ClassVar[str] = "order"
    order_id: str
    phase: str

    @property
    def id(self) -> str:
        return self.order_id

    @property
    def state(self) -> str:
        return self.phase

    def advance(self, ctx: fsm.StepContext[None]) -> fsm.Outcome:
        return fsm.Park(self)


@attrs.define
class OtherAction(OrderAction):
    name: ClassVar[str] = "other"


def _populate(path: Path) -> fsm.Store:
    store = fsm.Store.sqlite(path)
    with fsm.SyncExecutor(store, kinds=[OrderAction, OtherAction]) as ex:
        for i, phase in enumerate(["charging", "charging", "charging", "created", "refunding"]):
            ex.start(OrderAction(f"o{i}", phase))
        ex.start(OtherAction("x1", "charging"))
    store.quarantine("o4", "unreadable payload")
    return store


def test_overlays_from_sqlite(tmp_path: Path) -> None:
    store = _populate(tmp_path / "x.sqlite")
    assert live_counts(store, "order") == {"charging": 3, "created": 1}
    overlay = action_overlay(store, ORDER, "o3")
    assert overlay == Overlay(current="created")
    parsed = parse_mermaid(to_mermaid(ORDER, Overlay(counts=live_counts(store, "order"))))
    assert parsed.labels == {"charging": "charging (3)", "created": "created (1)"}
    with pytest.raises(OverlayError, match="no action with id 'nope'"):
        action_overlay(store, ORDER, "nope")
    with pytest.raises(OverlayError, match="'other' action, not 'order'"):
        action_overlay(store, ORDER, "x1")


def test_action_in_a_state_the_graph_lacks(tmp_path: Path) -> None:
    store = fsm.Store.sqlite(tmp_path / "x.sqlite")
    with fsm.SyncExecutor(store, kinds=[OrderAction]) as ex:
        ex.start(OrderAction("old", "legacy_state"))
    with pytest.raises(OverlayError, match=r"'legacy_state'.*v2 does not have"):
        action_overlay(store, ORDER, "old")


# -- a real declarative kind --------------------------------------------------------------


@attrs.frozen
class Parcel:
    parcel_id: str
    weighed: bool = False


def is_weighed(ctx: fsm.StepContext[None], parcel: Parcel) -> bool:
    return parcel.weighed


def print_label(ctx: fsm.StepContext[None], parcel: Parcel) -> Parcel:
    return parcel


class ParcelKind(fsm.Kind[Parcel, None]):
    name = "parcel"

    received = fsm.State(initial=True)
    weighing = fsm.State.wait(after=10.0)
    labelled = fsm.State.done()
    lost = fsm.State.failed()

    transitions = (
        received.to(weighing),
        weighing.to(labelled, guard=is_weighed, effect=print_label),
        received.rejected(to=lost),
    )

    @staticmethod
    def action_id(parcel: Parcel) -> str:
        return parcel.parcel_id


def test_declarative_kind_is_drawn_from_its_table() -> None:
    graph = ParcelKind.graph()
    parsed = parse_mermaid(to_mermaid(graph, Overlay(current="weighing")))
    assert parsed.triples() == [
        ("received", "weighing", ""),
        ("weighing", "labelled", "[is_weighed] / print_label"),
        ("received", "lost", "rejected"),
    ]
    assert parsed.initial == ["received"]
    assert parsed.terminal == ["labelled", "lost"]
    assert parsed.class_of == {"weighing": "current", "labelled": "done", "lost": "failed"}
    nodes, _ = parse_dot(to_dot(graph))
    assert nodes["weighing"]["tooltip"] == "wakes every 10s"  # the wake policy, as a tooltip


def test_overlays_from_a_declarative_kinds_rows(tmp_path: Path) -> None:
    store = fsm.Store.sqlite(tmp_path / "x.sqlite")
    with fsm.SyncExecutor(store, kinds=[ParcelKind]) as ex:
        for i in range(3):
            ex.start(ParcelKind.create(Parcel(f"p{i}")))
        ex.drive("p0")  # received -> weighing, then parks
    assert live_counts(store, "parcel") == {"received": 2, "weighing": 1}
    assert action_overlay(store, ParcelKind.graph(), "p0") == Overlay(current="weighing")


def weigh_failed(ctx: fsm.StepContext[None], parcel: Parcel, error: BaseException) -> fsm.Outcome:
    return HandledParcelKind.goto(parcel, HandledParcelKind.reweighing)


class HandledParcelKind(fsm.Kind[Parcel, None]):
    """A state reached only through a rejection handler that declares it."""

    name = "handled_parcel"

    received = fsm.State(initial=True)
    reweighing = fsm.State()
    labelled = fsm.State.done()
    lost = fsm.State.failed()

    transitions = (
        received.to(labelled),
        reweighing.to(labelled),
        received.rejected(handler=weigh_failed, to=(reweighing, lost)),
    )

    @staticmethod
    def action_id(parcel: Parcel) -> str:
        return parcel.parcel_id


@pytest.mark.needs_dot
def test_declared_handler_targets_are_drawn_as_rejection_edges_in_every_format() -> None:
    graph = HandledParcelKind.graph()
    handler_edges = [("received", "reweighing"), ("received", "lost")]
    label = "rejected / weigh_failed"
    assert parse_mermaid(to_mermaid(graph)).triples()[-2:] == [(*e, label) for e in handler_edges]
    _, edges = parse_dot(to_dot(graph))
    drawn = {(a, b): attrs_ for a, b, attrs_ in edges}
    for edge in handler_edges:
        assert drawn[edge]["style"] == "dashed"
        assert drawn[edge]["color"] == REJECTION_COLOR
        assert drawn[edge]["label"] == label
    svg_labels = [t.text for t in ET.fromstring(to_svg(graph)).iter(f"{SVG}text")]
    assert svg_labels.count(label) == 2
