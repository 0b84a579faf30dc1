"""The refresh kind and the server's rounds: VTXOs near expiry (or too deep) swapped for
fresh ones, expired VTXOs refused, a refused registration after a lost answer adopted, a
round that cannot take the inputs."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from wallet_rig import DoubleStepper, Rig, payee

import fsm
from fsm_bark.arkoor_send import start_arkoor_send
from fsm_bark.model import MovementStatus, PubkeyPolicy, VtxoRequest, VtxoState
from fsm_bark.refresh import NothingToRefresh, refresh_candidates, start_refresh
from fsm_bark.services.wallet import InsufficientFunds
from fsm_bark.sim import Fault

T = TypeVar("T")
THRESHOLD = 12  # WalletConfig.vtxo_refresh_expiry_threshold
EXPIRY_DELTA = 500  # the sim server's vtxo_expiry_delta


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@pytest.fixture
def w(tmp_path: Path) -> Iterator[Rig]:
    rig = Rig(tmp_path)
    yield rig
    rig.close()


def near_expiry(w: Rig, amounts: list[int]) -> list[str]:
    """Fund VTXOs and mine until they are within the refresh threshold of expiry."""
    vtxos = w.world.fund_vtxos(w.wallet, amounts)
    w.world.mine(vtxos[0].expiry_height - w.world.chain.tip() - THRESHOLD)
    return [v.id for v in vtxos]


def spendable(w: Rig) -> list[Any]:
    return [v for v, _ in w.wallet.vtxos(VtxoState.SPENDABLE)]


def test_vtxos_near_expiry_are_refreshed_in_the_next_round(w: Rig) -> None:
    ids = near_expiry(w, [30_000, 20_000])
    assert sorted(v.id for v in run(refresh_candidates(w.services))) == sorted(ids)
    action_id = run(w.start(run(start_refresh(w.services))))
    r = run(w.drive(action_id))
    assert (r.status, r.state) == (fsm.DriveStatus.PARKED, "awaiting_round")
    assert [v.id for v in spendable(w)] == sorted(ids)  # nothing spent before the round
    assert w.problems() == []
    w.world.run_round()
    assert run(w.drive(action_id)).status is fsm.DriveStatus.DONE
    [fresh] = spendable(w)
    tip = w.world.chain.tip()
    assert (fresh.amount, fresh.depth, fresh.expiry_height) == (50_000, 0, tip + EXPIRY_DELTA)
    assert all(w.wallet.vtxo_state(i) is VtxoState.SPENT for i in ids)
    m = w.wallet.movement_of(action_id)
    assert m is not None and m.status is MovementStatus.SUCCESSFUL
    assert (m.kind, m.effective_balance, m.consumed, m.produced) == (
        "refresh", 0, sorted(ids), [fresh.id]
    )  # fmt: skip
    assert run(refresh_candidates(w.services)) == []
    with pytest.raises(NothingToRefresh):
        run(start_refresh(w.services))
    assert w.store.all_resources() == {} and w.problems() == []


def test_an_expired_vtxo_is_refused_and_no_candidate(w: Rig) -> None:
    [vid] = near_expiry(w, [30_000])
    w.world.mine(THRESHOLD)
    assert run(refresh_candidates(w.services)) == []
    with pytest.raises(InsufficientFunds, match="30000 more expired"):
        run(start_arkoor_send(w.services, payee(), 10_000))  # selection skips it, says why
    with pytest.raises(fsm.Rejected, match="expired at height"):  # and the server refuses it
        outputs = [VtxoRequest(30_000, PubkeyPolicy("x"))]
        run(w.services.server.request_arkoor_cosign([vid], outputs, "x.1"))


def test_a_deep_vtxo_is_refreshed_and_spendable_again(w: Rig) -> None:
    limit = w.world.server.info().max_arkoor_depth
    w.world.fund_vtxos(w.wallet, [30_000], depth=limit)
    action_id = run(w.start(run(start_refresh(w.services))))
    run(w.drive(action_id))
    w.world.run_round()
    assert run(w.drive(action_id)).status is fsm.DriveStatus.DONE
    send = run(w.start(run(start_arkoor_send(w.services, payee(), 10_000))))
    assert run(w.drive(send, fsm.DriveMode.UNTIL_DONE)).status is fsm.DriveStatus.DONE
    assert w.problems() == []


def test_a_refused_retry_after_a_lost_answer_adopts_the_participation(w: Rig) -> None:
    near_expiry(w, [30_000])
    w.world.script_fault("register_for_round", Fault.LOSE_RESPONSE)
    w.world.script_fault("register_for_round", Fault.REJECT_INVALID_ARGUMENT)
    action_id = run(w.start(run(start_refresh(w.services))))
    assert run(w.drive(action_id)).state == "registering"  # the answer was lost: retried
    w.world.advance_time(60)
    r = run(w.drive(action_id))
    assert r.state == "awaiting_round", r
    states = [t.to_state for t in w.store.transitions(action_id)]
    assert "register_refused" in states
    w.world.run_round()
    assert run(w.drive(action_id)).status is fsm.DriveStatus.DONE
    assert w.applied_by("register_for_round") == 1
    assert w.problems() == []


def test_a_refused_registration_the_server_never_made_cancels(w: Rig) -> None:
    [vid] = near_expiry(w, [30_000])
    w.world.script_fault("register_for_round", Fault.REJECT_INVALID_ARGUMENT)
    action_id = run(w.start(run(start_refresh(w.services))))
    assert run(w.drive(action_id)).state == "cancelled"
    assert w.wallet.vtxo_state(vid) is VtxoState.SPENDABLE and w.store.all_resources() == {}
    assert w.problems() == []


def test_a_round_that_cannot_take_the_inputs_fails_the_refresh(w: Rig) -> None:
    [vid] = near_expiry(w, [30_000])
    action_id = run(w.start(run(start_refresh(w.services))))
    run(w.drive(action_id))
    w.world.mine(THRESHOLD)  # expired before the round ran
    w.world.run_round()
    assert run(w.drive(action_id)).state == "round_lost"
    m = w.wallet.movement_of(action_id)
    assert m is not None and m.status is MovementStatus.FAILED
    assert "expired" in m.metadata["failure"]
    assert w.wallet.vtxo_state(vid) is VtxoState.SPENDABLE and w.store.all_resources() == {}
    assert w.problems() == []


def test_an_input_is_in_one_participation_only(w: Rig) -> None:
    [vid] = near_expiry(w, [30_000])
    run(w.start(run(start_refresh(w.services))))
    run(w.executor.resume_all())
    vtxo = w.wallet.get_vtxo(vid)
    assert vtxo is not None
    other = run(start_refresh(w.services, [vtxo]))
    with pytest.raises(fsm.ResourceConflict):  # the wallet holds it
        run(w.executor.start(other.action, resources=other.resources))
    elsewhere = [VtxoRequest(30_000, PubkeyPolicy("someone else"))]
    with pytest.raises(fsm.Rejected, match="already registered for the round"):
        run(w.services.server.register_for_round([vid], elsewhere, "rogue.1"))


def test_every_step_twice_registers_once(w: Rig) -> None:
    near_expiry(w, [30_000])
    action, resources = run(start_refresh(w.services))
    stepper = DoubleStepper(w, action, resources)
    assert isinstance(run(stepper.step()), fsm.Next)  # registered
    assert isinstance(run(stepper.step()), fsm.Park)  # the round has not run
    w.world.run_round()
    assert isinstance(run(stepper.step()), fsm.Done)
    assert w.applied_by("register_for_round") == 1


def test_the_demos_upkeep_adopts_a_refresh_started_before_a_kill(w: Rig) -> None:
    """The demo starts its refresh, then notes it: a kill between the two left a live
    refresh holding the deep VTXO and no note. The next run notes that refresh instead of
    starting another (whose input is taken: every later run of the demo failed on it, and
    `fsm torture` saw drivers that never finished)."""
    from fsm_bark.demo_upkeep import start_upkeep

    limit = w.world.server.info().max_arkoor_depth
    [deep] = w.world.fund_vtxos(w.wallet, [4_000], depth=limit)
    table: dict[str, str] = {"upkeep.refresh_vtxo": deep.id}

    class Table:
        def get(self, key: str) -> str | None:
            return table.get(key)

        def set(self, key: str, value: str) -> None:
            table[key] = value

    first = run(start_refresh(w.services, [deep]))
    run(w.executor.start(first.action, resources=first.resources))  # then the kill
    started = run(start_upkeep(w.services, w.executor, Table()))
    assert started == []
    assert table["upkeep.refresh"] == first.action.id
    assert [r.id for r in w.store.rows()] == [first.action.id]
