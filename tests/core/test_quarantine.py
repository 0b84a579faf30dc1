"""Rows that cannot be read are set aside with a reason; every other action keeps running."""

from __future__ import annotations

import asyncio
from typing import Any

import attrs
import pytest
from actions import Script, one_step

import fsm
from fsm import DriveStatus

BAD_ROWS = {
    "bad-json": ("script", 1, '{"label": "bad-json", n: }', "not valid JSON"),
    "bad-shape": ("script", 1, '{"label": "bad-shape", "n": "seven"}', "does not structure"),
    "wrong-id": ("script", 1, '{"label": "someone-else"}', "belongs to action 'someone-else'"),
    "bad:id": ("script", 1, '{"label": "bad:id"}', "breaks the key rules"),
}


FOREIGN_ROWS = {
    "unknown-kind": ("ghost", 1, '{"label": "unknown-kind"}', "kind 'ghost' is not registered"),
    "too-new": ("script", 7, '{"label": "too-new"}', "newer than this code"),
}


def test_each_bad_row_is_quarantined_and_the_rest_runs(store: fsm.Store) -> None:
    for action_id, (kind, version, payload, _) in {**BAD_ROWS, **FOREIGN_ROWS}.items():
        store.insert(action_id, kind, "s0", version, payload, [f"res.{action_id}"], 1.0)
    ex: fsm.Executor[Any] = fsm.Executor(store, {}, kinds=[Script])
    for name in ("good-1", "good-2"):
        asyncio.run(ex.start(Script(name)))

    report = asyncio.run(ex.resume_all())

    # the drives that went well are counted, those that did not are kept in full
    assert report.count(DriveStatus.DONE) == 2
    assert report.total == 2 + len(BAD_ROWS) + len(FOREIGN_ROWS)
    statuses = {r.id: r.status for r in report.failures}
    assert set(statuses) == set(BAD_ROWS) | set(FOREIGN_ROWS)
    reasons = {row.id: row.quarantine for row in report.quarantined}
    assert set(reasons) == set(BAD_ROWS)
    for action_id, (*_, fragment) in BAD_ROWS.items():
        assert fragment in (reasons[action_id] or ""), (action_id, reasons[action_id])
        assert statuses[action_id] is DriveStatus.QUARANTINED
    # rows of a kind this executor does not know, or of a newer version, are not bad: they
    # are left as they are, due, for a driver that knows them (rolling deploys, team pools)
    for action_id in FOREIGN_ROWS:
        assert statuses[action_id] is DriveStatus.SKIPPED, action_id
        row = store.row(action_id)
        assert row is not None and row.quarantine is None and row.lease_owner is None
    # never deleted, never driven again
    again = asyncio.run(ex.resume_all())
    assert {r.id for r in again.failures} == set(FOREIGN_ROWS)
    assert again.counts == {DriveStatus.SKIPPED: len(FOREIGN_ROWS)}
    assert {row.id for row in store.quarantined()} == set(BAD_ROWS)
    assert asyncio.run(ex.drive("bad-json")).status is DriveStatus.QUARANTINED


def test_delete_removes_a_quarantined_row_and_its_resources(store: fsm.Store) -> None:
    store.insert("lost", "script", "s0", 1, "{}", ["coin.1"], 1.0)
    ex: fsm.Executor[Any] = fsm.Executor(store, {}, kinds=[Script])
    assert asyncio.run(ex.drive("lost")).status is DriveStatus.QUARANTINED
    assert asyncio.run(ex.delete("lost")) is True
    assert store.row("lost") is None and store.all_resources() == {}


Renamed = one_step("renamed", version=2, upcasters={1: lambda p: {"label": p.pop("who")}})
"""v2 renamed ``who`` to ``label``; ``upcasters[1]`` turns v1 rows into v2."""


def test_old_rows_are_upcast_and_rewritten(store: fsm.Store) -> None:
    store.insert("old", "renamed", "Renamed", 1, '{"who": "old"}', [], 1.0)
    ex: fsm.Executor[Any] = fsm.Executor(store, {}, kinds=[Renamed])
    assert asyncio.run(ex.drive("old")).status is DriveStatus.DONE


def test_missing_upcaster_is_a_clear_quarantine(store: fsm.Store) -> None:
    NoUpcast = one_step("noup", version=3)
    store.insert("n", "noup", "NoUpcast", 2, '{"label": "n"}', [], 1.0)
    ex: fsm.Executor[Any] = fsm.Executor(store, {}, kinds=[NoUpcast])
    result = asyncio.run(ex.drive("n"))
    assert result.status is DriveStatus.QUARANTINED
    assert "no upcaster from v2 to v3" in str(result.error)


def test_registering_two_kinds_under_one_name_is_refused() -> None:
    @attrs.frozen
    class Twin(fsm.Action[Any]):
        name = "script"
        label: str

    with pytest.raises(ValueError, match="registered twice"):
        fsm.Registry([Script, Twin])


def test_a_quarantined_row_goes_back_into_service_once_fixed(store: fsm.Store) -> None:
    store.insert("late", "script", "s0", 1, '{"label": "late"}', [], 1.0)
    store.quarantine("late", "set aside by an operator")
    without: fsm.Executor[Any] = fsm.Executor(store, {}, kinds=[])
    assert asyncio.run(without.drive("late")).status is DriveStatus.QUARANTINED
    assert store.release_quarantine("late") is True
    assert store.release_quarantine("nope") is False
    with_kind: fsm.Executor[Any] = fsm.Executor(store, {}, kinds=[Script])
    assert asyncio.run(with_kind.drive("late")).status is DriveStatus.DONE
