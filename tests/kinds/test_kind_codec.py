"""A declarative kind's rows: the envelope, upcasters, every reason a row cannot be read; graph."""

from __future__ import annotations

from typing import Any

import attrs
import orjson
import pytest

from fsm import DecodeError, Kind, RetryPolicy, State, StepContext
from fsm.diagram import Edge, StateNode


@attrs.frozen
class Parcel:
    parcel_id: str
    grams: int
    labels: tuple[str, ...] = ()


def weigh(c: StepContext[None], p: Parcel) -> Parcel:
    return p


def arrived(c: StepContext[None], p: Parcel) -> bool:
    return bool(p.labels)


def v1_to_v2(d: dict[str, Any]) -> dict[str, Any]:
    """v1 had ``kilos``; v2 has ``grams``."""
    out = dict(d)
    out["grams"] = int(out.pop("kilos") * 1000)
    return out


def v2_to_v3(d: dict[str, Any]) -> dict[str, Any]:
    """v3 renamed ``id`` to ``parcel_id``."""
    out = dict(d)
    out["parcel_id"] = out.pop("id")
    return out


class ParcelKind(Kind[Parcel, None]):
    name = "parcel"
    version = 3
    upcasters = {1: v1_to_v2, 2: v2_to_v3}  # noqa: RUF012

    new = State(initial=True, doc="weigh it")
    transit = State.wait(backoff=RetryPolicy(base=60))
    lost = State()
    delivered = State.done()
    returned = State.failed()

    transitions = (
        new.to(transit, effect=weigh),
        transit.to(delivered, guard=arrived),
        lost.to(returned),
        transit.rejected(to=lost),
    )

    @staticmethod
    def action_id(p: Parcel) -> str:
        return f"parcel-{p.parcel_id}"


codec = ParcelKind.__fsm_codec__


def row(data: dict[str, Any], parks: int = 0) -> bytes:
    return orjson.dumps({"data": data, "parks": parks})


def test_round_trip_keeps_state_data_and_park_count() -> None:
    action = ParcelKind.create(Parcel("p1", 1200, ("fragile",)), ParcelKind.transit)
    action.parks = 4
    state, payload = codec.dump(action)
    assert state == "transit"
    assert orjson.loads(payload) == {
        "data": {"parcel_id": "p1", "grams": 1200, "labels": ["fragile"]},
        "parks": 4,
    }
    loaded = codec.load(state, 3, payload)
    assert loaded == action
    assert loaded.id == "parcel-p1"
    assert type(loaded) is type(action)


def test_codec_identity() -> None:
    assert (codec.name, codec.version) == ("parcel", 3)
    action = ParcelKind.create(Parcel("p1", 1))
    assert action.name == "parcel"
    assert action.__fsm_kind__ is ParcelKind


def test_upcasters_run_in_order_from_the_stored_version() -> None:
    loaded = codec.load("new", 1, row({"id": "p9", "kilos": 1.5}))
    assert loaded.data == Parcel("p9", 1500)
    loaded = codec.load("new", 2, row({"id": "p9", "grams": 20}))
    assert loaded.data == Parcel("p9", 20)


def test_newer_version_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match=r"newer than the code \(v3\)"):
        codec.load("new", 4, row({"parcel_id": "p", "grams": 1}))


def test_version_older_than_the_oldest_upcaster_is_a_decode_error() -> None:
    class Later(Kind[Parcel, None]):
        name = "later"
        version = 3
        upcasters = {2: v2_to_v3}  # noqa: RUF012
        a = State(initial=True)
        end = State.done()
        transitions = (a.to(end),)
        action_id = staticmethod(ParcelKind.action_id)

    with pytest.raises(DecodeError, match=r"no upcaster from v1 to v2 .*oldest .* is v2"):
        Later.__fsm_codec__.load("a", 1, row({"id": "p", "grams": 1}))


def test_unknown_state_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match=r"state 'shipping': unknown state; .*'new', 'transit'"):
        codec.load("shipping", 3, row({"parcel_id": "p", "grams": 1}))


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{nope", "not valid JSON"),
        (b"[1, 2]", "not an envelope"),
        (orjson.dumps({"parcel_id": "p", "grams": 1}), "not an envelope"),
        (orjson.dumps({"data": {"parcel_id": "p", "grams": 1}, "parks": "x"}), "'parks'"),
        (row({"parcel_id": "p", "grams": "heavy"}), "data does not structure"),
        (row({"parcel_id": "p"}), "data does not structure"),
    ],
)
def test_unreadable_payload_is_a_decode_error(payload: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        codec.load("new", 3, payload)


def test_failing_upcaster_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match=r"upcaster v1 failed: KeyError"):
        codec.load("new", 1, row({"id": "p"}))


def test_graph_lists_states_and_edges_in_declaration_order() -> None:
    g = ParcelKind.graph()
    assert (g.name, g.version) == ("parcel", 3)
    assert g.states == (
        StateNode("new", "step", True, "weigh it"),
        StateNode("transit", "wait", False, "wakes with backoff"),
        StateNode("lost", "step", False, None),
        StateNode("delivered", "done", False, None),
        StateNode("returned", "failed", False, None),
    )
    assert g.edges == (
        Edge("new", "transit", None, "weigh"),
        Edge("transit", "delivered", "arrived", None),
        Edge("lost", "returned"),
        Edge("transit", "lost", style="rejection"),
    )
