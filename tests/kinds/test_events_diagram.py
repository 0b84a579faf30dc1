"""Event rows and deadlines in diagrams: edges of their own kind in the IR, labelled in
Mermaid, and drawn apart from each other and from cancel routes in DOT and SVG."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import attrs
import pytest
from test_diagram import SVG, parse_dot, parse_mermaid

from fsm import Kind, State, StepContext
from fsm.diagram import Edge, to_dot, to_mermaid, to_svg
from fsm.diagram.style import CANCEL_COLOR, EVENT_COLOR, TIMEOUT_COLOR

# pydot's parser calls pyparsing names that pyparsing deprecates (as test_diagram.py says)
pytestmark = pytest.mark.filterwarnings("ignore:.*deprecated - use:DeprecationWarning")


@attrs.frozen
class Claim:
    key: str


@attrs.frozen
class Approved:
    by: str


@attrs.frozen
class Refused:
    __fsm_event__ = "claims.Refused.v1"  # diagrams show the class's name, not the stored one
    why: str


def large(ctx: StepContext[None], claim: Claim, event: Approved) -> bool:
    return event.by == "board"


def note(ctx: StepContext[None], claim: Claim, event: Approved) -> Claim:
    return claim


def key_of(claim: Claim) -> str:
    return claim.key


class ClaimKind(Kind[Claim, None]):
    name = "claim"
    events = (Approved, Refused)

    filed = State(initial=True)
    paid = State.done()
    refused = State.failed()
    expired = State.failed()
    reviewing = State.wait(timeout=3 * 86400.0, on_timeout=expired)

    transitions = (
        filed.to(reviewing),
        reviewing.to(paid, on=Approved, guard=large, effect=note),
        reviewing.to(paid, on=Approved),
        reviewing.to(refused, on=Refused),
        reviewing.cancelled(to=refused),
    )
    action_id = staticmethod(key_of)


EVENT = ("reviewing", "paid", "on Approved [large] / note")
EVENT_PLAIN = ("reviewing", "paid", "on Approved")
REFUSED = ("reviewing", "refused", "on Refused")
TIMEOUT = ("reviewing", "expired", "after 3d")
CANCEL = ("reviewing", "refused", "cancelled")


def test_the_graph_has_event_and_timeout_edges() -> None:
    assert ClaimKind.graph().edges == (
        Edge("filed", "reviewing"),
        Edge("reviewing", "paid", "large", "note", style="event", event="Approved"),
        Edge("reviewing", "paid", style="event", event="Approved"),
        Edge("reviewing", "refused", style="event", event="Refused"),
        Edge("reviewing", "expired", style="timeout", deadline="after 3d"),
        Edge("reviewing", "refused", style="cancel"),
    )


def test_mermaid_labels_events_deadlines_and_cancels_apart() -> None:
    text = to_mermaid(ClaimKind.graph())
    assert "    reviewing --> paid : on Approved [large] / note\n" in text
    assert "    reviewing --> expired : after 3d\n" in text
    assert "    reviewing --> refused : cancelled\n" in text
    assert parse_mermaid(text).triples() == [
        ("filed", "reviewing", ""),
        EVENT,
        EVENT_PLAIN,
        REFUSED,
        TIMEOUT,
        CANCEL,
    ]


def test_dot_draws_events_deadlines_and_cancels_apart() -> None:
    text = to_dot(ClaimKind.graph())
    assert (
        '"reviewing" -> "expired" [label="after 3d", style="dotted,bold", '
        f'color="{TIMEOUT_COLOR}", fontcolor="{TIMEOUT_COLOR}"];'
    ) in text
    _, edges = parse_dot(text)
    drawn = {(a, b, e.get("label", "")): e for a, b, e in edges}
    assert drawn[EVENT]["style"] == drawn[REFUSED]["style"] == "bold"
    assert drawn[EVENT]["color"] == drawn[REFUSED]["color"] == EVENT_COLOR
    assert drawn[TIMEOUT]["style"] == "dotted,bold"
    assert drawn[TIMEOUT]["color"] == TIMEOUT_COLOR
    assert drawn[CANCEL]["style"] == "dashed"
    assert drawn[CANCEL]["color"] == CANCEL_COLOR
    looks = {
        (drawn[k].get("style"), drawn[k].get("color"), drawn[k].get("arrowhead"))
        for k in (EVENT, TIMEOUT, CANCEL, ("filed", "reviewing", ""))
    }
    assert len(looks) == 4  # a plain transition, an event, a deadline, a cancel


@pytest.mark.needs_dot
def test_svg_draws_events_deadlines_and_cancels_apart() -> None:
    root = ET.fromstring(to_svg(ClaimKind.graph()))
    looks: dict[str, tuple[str | None, str | None]] = {}
    for g in root.iter(f"{SVG}g"):
        if g.get("class") != "edge":
            continue
        label = " ".join(t.text or "" for t in g.iter(f"{SVG}text"))
        path = next(g.iter(f"{SVG}path"))
        looks[label] = (path.get("stroke"), path.get("stroke-dasharray"))
    assert looks["on Approved [large] / note"][0] == EVENT_COLOR
    assert looks["on Refused"][0] == EVENT_COLOR
    assert looks["after 3d"][0] == TIMEOUT_COLOR
    assert looks["cancelled"][0] == CANCEL_COLOR
    dashes = {looks[k][1] for k in ("on Refused", "after 3d", "cancelled")}
    assert len(dashes) == 3  # solid, dotted, dashed
    assert looks["on Refused"][1] is None
