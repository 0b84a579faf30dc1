"""``state.cancelled(to=...)``: checked at import, compiled, followed by `on_cancel`, drawn."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import attrs
import pytest
from test_diagram import SVG, parse_dot, parse_mermaid

import fsm
from fsm import Cancellation, DefinitionError, Kind, State, StepContext
from fsm.diagram import to_dot, to_mermaid, to_svg
from fsm.diagram.style import CANCEL_COLOR

# pydot's parser calls pyparsing names that pyparsing deprecates (as test_diagram.py says)
pytestmark = pytest.mark.filterwarnings("ignore:.*deprecated - use:DeprecationWarning")


@attrs.frozen
class Trip:
    key: str


def book(ctx: StepContext[None], trip: Trip) -> Trip:
    return trip


def always(ctx: StepContext[None], trip: Trip) -> bool:
    return True


def key_of(trip: Trip) -> str:
    return trip.key


class TripKind(Kind[Trip, None]):
    """``refunding`` is reached only through a cancel route."""

    name = "trip"
    booking = State(initial=True)
    booked = State.wait()
    refunding = State()
    travelled = State.done()
    cancelled = State.failed()

    transitions = (
        booking.to(booked, effect=book),
        booked.to(travelled),
        refunding.to(cancelled),
        booking.cancelled(to=cancelled),
        booked.cancelled(to=refunding),
    )
    action_id = staticmethod(key_of)


def problem(err: pytest.ExceptionInfo[DefinitionError], state: str | None, *parts: str) -> None:
    message = str(err.value)
    assert message.startswith("kind 'bad' (Bad)")
    if state is not None:
        assert f"state {state!r}" in message
    assert "Fix:" in message
    for part in parts:
        assert part in message


# -- the routes an action follows ----------------------------------------------------------


def test_a_cancel_route_to_a_step_state_is_a_next_with_the_data() -> None:
    action = TripKind.create(Trip("t1"), TripKind.booked)
    outcome = action.on_cancel(Cancellation("storm", "ops"))
    assert outcome == fsm.Next(TripKind.create(Trip("t1"), TripKind.refunding))


def test_a_cancel_route_to_a_terminal_state_ends_there() -> None:
    outcome = TripKind.create(Trip("t1")).on_cancel(Cancellation("storm"))
    assert isinstance(outcome, fsm.Failed) and outcome.state == "cancelled"


def test_a_state_without_a_cancel_route_has_none() -> None:
    assert TripKind.create(Trip("t1"), TripKind.refunding).on_cancel(Cancellation("x")) is None
    assert TripKind.__fsm_compiled__.cancellable == ("booking", "booked")


def test_a_hand_written_action_refuses_by_default() -> None:
    @attrs.frozen
    class Plain(fsm.Action[None]):
        name = "plain"

    assert Plain().on_cancel(Cancellation("x")) is None


def test_the_cancellation_text_names_who_and_why() -> None:
    assert Cancellation("storm", "ops").text == "cancelled by ops: storm"
    assert Cancellation("storm").text == "cancelled: storm"


# -- checked at import ---------------------------------------------------------------------


def test_a_compensation_reached_only_by_a_cancel_is_reachable() -> None:
    """TripKind's ``refunding`` is reached only by a cancel route; without it, it is not."""
    assert "refunding" in TripKind.__fsm_compiled__.states
    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Trip, None]):
            name = "bad"
            a = State(initial=True)
            refunding = State()
            end = State.done()
            failed = State.failed()
            transitions = (a.to(end), refunding.to(failed))
            action_id = staticmethod(key_of)

    problem(err, "refunding", "unreachable", "cancel route into it")


def test_a_cancel_route_does_not_hide_a_trap() -> None:
    """A cancel is an operator's intervention: a state whose only way out is a cancel route
    still cannot finish on its own."""
    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Trip, None]):
            name = "bad"
            a = State(initial=True)
            stuck = State()
            end = State.done()
            failed = State.failed()
            transitions = (a.to(stuck, guard=always), a.to(end), stuck.cancelled(to=failed))
            action_id = staticmethod(key_of)

    problem(err, "stuck", "no outgoing transition")


def test_two_cancel_rows_for_one_state() -> None:
    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Trip, None]):
            name = "bad"
            a = State(initial=True)
            end = State.done()
            failed = State.failed()
            transitions = (a.to(end), a.cancelled(to=failed), a.cancelled(to=end))
            action_id = staticmethod(key_of)

    problem(err, "a", "two cancel rows", "keep one `cancelled(to=...)` row per state")


def test_a_cancel_row_on_a_terminal_state() -> None:
    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Trip, None]):
            name = "bad"
            a = State(initial=True)
            end = State.done()
            failed = State.failed()
            transitions = (a.to(end), end.cancelled(to=failed))
            action_id = staticmethod(key_of)

    problem(err, "end", "a terminal state has a cancel row", "remove that row")


def test_a_cancel_route_to_a_state_of_another_kind() -> None:
    stray = State.failed()
    stray.name = "stray"
    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Trip, None]):
            name = "bad"
            a = State(initial=True)
            end = State.done()
            transitions = (a.to(end), a.cancelled(to=stray))
            action_id = staticmethod(key_of)

    problem(err, "a", "not a state of this kind", "a.cancelled(to=releasing)")


def test_a_cancel_row_from_a_state_of_another_kind() -> None:
    stray = State()
    stray.name = "stray"
    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Trip, None]):
            name = "bad"
            a = State(initial=True)
            end = State.done()
            transitions = (a.to(end), stray.cancelled(to=end))
            action_id = staticmethod(key_of)

    problem(err, None, "starts from unknown state")


def test_a_cancel_route_back_to_its_own_state() -> None:
    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Trip, None]):
            name = "bad"
            a = State(initial=True)
            end = State.done()
            transitions = (a.to(end), a.cancelled(to=a))
            action_id = staticmethod(key_of)

    problem(err, "a", "leads back to the same state", "route to the state that compensates")


# -- drawn ---------------------------------------------------------------------------------


@pytest.mark.needs_dot
def test_cancel_routes_are_drawn_as_cancel_edges_in_every_format() -> None:
    graph = TripKind.graph()
    routes = [("booking", "cancelled"), ("booked", "refunding")]
    assert [(e.source, e.target, e.style) for e in graph.edges][-2:] == [
        (*r, "cancel") for r in routes
    ]
    assert parse_mermaid(to_mermaid(graph)).triples()[-2:] == [(*r, "cancelled") for r in routes]
    _, edges = parse_dot(to_dot(graph))
    drawn = {(a, b): attrs_ for a, b, attrs_ in edges}
    for route in routes:
        assert drawn[route]["style"] == "dashed"
        assert drawn[route]["color"] == CANCEL_COLOR
        assert drawn[route]["label"] == "cancelled"
    svg_labels = [t.text for t in ET.fromstring(to_svg(graph)).iter(f"{SVG}text")]
    assert svg_labels.count("cancelled") == 3  # two edges, and the state of that name
