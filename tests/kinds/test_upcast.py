"""Old rows are read through one upcast, whether the kind is declarative or hand-written.

A declarative kind keeps its checkpoint in an envelope (``{"data": ..., "parks": n}``) and its
upcasters see the data; a hand-written action's upcasters see its whole payload. Everything
else is the same path: a missing upcaster, one that raises and one that returns something
other than a dict all make the row unreadable, and the executor sets it aside (quarantine)
instead of retrying it forever.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import attrs
import pytest

import fsm
from fsm import Kind, State, StepContext


def boom(payload: dict[str, Any]) -> dict[str, Any]:
    raise ValueError("boom")


def not_a_dict(payload: dict[str, Any]) -> Any:
    return ["not", "a", "dict"]


def rename(payload: dict[str, Any]) -> dict[str, Any]:
    return {"label": payload["who"]}


UPCASTERS: dict[str, Mapping[int, fsm.Upcaster]] = {
    "raises": {1: boom},
    "returns a list": {1: not_a_dict},
    "renames": {1: rename},
}
EXPECTED = {
    "raises": "upcaster v1 failed: ValueError: boom",
    "returns a list": "upcaster v1 returned list, not a dict",
}


@attrs.frozen
class Crate:
    label: str


def declarative(ups: Mapping[int, fsm.Upcaster]) -> type[Kind[Crate, None]]:
    class CrateKind(Kind[Crate, None]):
        name = "crate_kind"
        version = 2
        upcasters = ups

        packed = State(initial=True)
        shipped = State.done()
        transitions = (packed.to(shipped),)

        @staticmethod
        def action_id(crate: Crate) -> str:
            return crate.label

    return CrateKind


def hand_written(ups: Mapping[int, fsm.Upcaster]) -> type[fsm.Action[None]]:
    @attrs.frozen
    class CrateAction(fsm.Action[None]):
        name = "crate_action"
        version = 2
        upcasters = ups
        label: str

        @property
        def id(self) -> str:
            return self.label

        def advance(self, ctx: StepContext[None]) -> fsm.Outcome:
            return fsm.Done()

    return CrateAction


def v1_rows(kind: Any) -> tuple[str, str, str]:
    """(kind name, state, payload) of a v1 row of crate 'c1' in ``kind``'s format."""
    if isinstance(kind, type) and issubclass(kind, Kind):
        return "crate_kind", "packed", '{"data": {"who": "c1"}, "parks": 0}'
    return "crate_action", "CrateAction", '{"who": "c1"}'


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_both_codecs_refuse_a_failing_upcaster_with_the_same_reason(case: str) -> None:
    reasons = []
    for kind in (declarative(UPCASTERS[case]), hand_written(UPCASTERS[case])):
        codec = fsm.Registry([kind]).get(v1_rows(kind)[0])
        _, state, payload = v1_rows(kind)
        with pytest.raises(fsm.DecodeError) as err:
            codec.load(state, 1, payload)
        reasons.append(str(err.value).split(": ", 1)[1])
    assert reasons == [EXPECTED[case]] * 2


@pytest.mark.parametrize("case", sorted(UPCASTERS))
def test_both_kinds_drive_an_old_row_the_same_way(store: fsm.Store, case: str) -> None:
    """A working upcaster: the row is read and driven to its end; a failing one: the row
    is quarantined with the upcaster's failure as the reason, whichever kind it is."""
    for kind in (declarative(UPCASTERS[case]), hand_written(UPCASTERS[case])):
        name, state, payload = v1_rows(kind)
        store.insert(f"{name}-c1", name, state, 1, payload.replace("c1", f"{name}-c1"), [], 1.0)
        ex: fsm.Executor[None] = fsm.Executor(store, None, kinds=[kind])
        result = asyncio.run(ex.drive(f"{name}-c1"))
        if case in EXPECTED:
            assert result.status is fsm.DriveStatus.QUARANTINED, name
            assert EXPECTED[case] in str(result.error), name
        else:
            assert (result.status, result.error) == (fsm.DriveStatus.DONE, None), name
