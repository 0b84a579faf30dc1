"""`Store.state_census`: live actions per (kind, state), with those in trouble, on both
databases (what ``fsm console`` paints on a kind's diagram)."""

from __future__ import annotations

import asyncio

import pytest
from actions import one_step

import fsm
from fsm.store import StateCensus

Other = one_step("other")
Later = one_step("later")
NOW = 2_000_000_000.0


def start(store: fsm.Store, kind: type, prefix: str, n: int) -> None:
    ex = fsm.Executor(store, None, kinds=[kind], clock=lambda: NOW - 500)

    async def go() -> None:
        for i in range(n):
            await ex.start(kind(f"{prefix}{i}"))

    asyncio.run(go())


def test_state_census_counts_the_live_the_broken_the_quarantined_and_the_longest_wait(
    store: fsm.Store,
) -> None:
    start(store, Other, "a", 7)
    start(store, Later, "b", 2)
    p = store.db.param
    sql = store.db.execute_sql
    # a0: waiting for a notify; a1: quarantined; a2: broken; a3: leased, lease live;
    # a4: due in the future; a5: a dead driver's lease that ran out at NOW - 50;
    # a6: due at once since its last write, NOW - 30.
    sql(f"UPDATE fsm_action SET wake_at = NULL WHERE id = {p}", ("a0",))
    store.quarantine("a1", "unreadable")
    sql(f"UPDATE fsm_action SET broken = TRUE, wake_at = NULL WHERE id = {p}", ("a2",))
    sql(
        f"UPDATE fsm_action SET lease_owner = 'w', lease_expires = {p} WHERE id = {p}",
        (NOW + 30, "a3"),
    )
    sql(f"UPDATE fsm_action SET wake_at = {p} WHERE id = {p}", (NOW + 60, "a4"))
    sql(
        f"UPDATE fsm_action SET wake_at = 0, lease_owner = 'dead', lease_expires = {p} "
        f"WHERE id = {p}",
        (NOW - 50, "a5"),
    )
    sql(f"UPDATE fsm_action SET wake_at = 0, updated_at = {p} WHERE id = {p}", (NOW - 30, "a6"))
    state = Other.__name__
    found = store.state_census(now=NOW)
    assert found[("other", state)] == StateCensus(7, broken=1, quarantined=1, due_since=NOW - 50)
    assert found[("other", state)].waited(NOW) == pytest.approx(50.0)
    # b0, b1: started due at NOW - 500 and never claimed
    assert found[("later", Later.__name__)] == StateCensus(2, due_since=NOW - 500)
    assert set(found) == {("other", state), ("later", Later.__name__)}
    assert store.state_census("later", now=NOW) == {
        ("later", Later.__name__): StateCensus(2, due_since=NOW - 500)
    }
    # the counts are the gauges' counts
    assert {k: c.live for k, c in found.items()} == store.live_counts()
    sql(f"DELETE FROM fsm_action WHERE id IN ({p}, {p})", ("a5", "a6"))
    calm = store.state_census("other", now=NOW)[("other", state)]
    assert calm == StateCensus(5, broken=1, quarantined=1, due_since=None)
    assert calm.waited(NOW) == 0.0
    assert store.state_census("nobody", now=NOW) == {}
