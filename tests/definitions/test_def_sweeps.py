"""The server's sweep of expired VTXOs through the kinds: a VTXO neither refreshed nor exited
before its expiry is taken back by the server and lost to the wallet; a refresh or an exit in
time saves it; an exit that comes too late ends ``swept``; the books and the invariants know
about it (`sim.sweeps`)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from wallet_rig import Rig, payee

import fsm
from fsm_bark.arkoor_send import start_arkoor_send
from fsm_bark.exit import start_exit
from fsm_bark.model import MovementStatus, VtxoState, exit_path
from fsm_bark.refresh import start_refresh
from fsm_bark.services.chain import ChainRejected
from fsm_bark.services.wallet import InsufficientFunds
from fsm_bark.sim.ark_state import EXITED, LIVE, SWEPT
from fsm_bark.sim.wallet_invariants import balance

T = TypeVar("T")
DELTA = 12  # the sim server's vtxo_exit_delta


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@pytest.fixture
def w(tmp_path: Path) -> Iterator[Rig]:
    rig = Rig(tmp_path)
    rig.world.fund_onchain(5_000)  # the exits' CPFP fees
    yield rig
    rig.close()


def mine_to(w: Rig, height: int) -> None:
    w.world.mine(height - w.world.chain.tip())


def status(w: Rig, vtxo_id: str) -> str:
    row = w.world.server.vtxo(vtxo_id)
    assert row is not None
    return row[1]


def test_a_vtxo_left_past_its_expiry_is_swept_and_lost(w: Rig) -> None:
    [vtxo] = w.world.fund_vtxos(w.wallet, [30_000])
    mine_to(w, vtxo.expiry_height - 1)
    assert status(w, vtxo.id) == LIVE and w.problems() == []
    w.world.mine(1)  # the expiry block
    assert status(w, vtxo.id) == SWEPT
    b = balance(w.world, w.wallet)
    assert (b.swept, b.wallet_spendable) == (30_000, 0)  # the server has it back
    assert w.problems() == []  # the wallet still lists it, but lost by the rule, not a bug
    with pytest.raises(InsufficientFunds, match="30000 more expired"):
        run(start_arkoor_send(w.services, payee(), 10_000))
    [sweep] = [e for e in w.world.ledger.entries() if e.rpc == "sweep"]
    assert sweep.effect_id == f"sweep:{vtxo.id}"
    w.world.mine(3)  # swept once
    assert balance(w.world, w.wallet).swept == 30_000 and w.problems() == []


def test_a_refresh_in_time_saves_the_money(w: Rig) -> None:
    [old] = w.world.fund_vtxos(w.wallet, [30_000])
    mine_to(w, old.expiry_height - 5)
    action_id = run(w.start(run(start_refresh(w.services))))
    run(w.drive(action_id))
    w.world.run_round()
    assert run(w.drive(action_id)).status is fsm.DriveStatus.DONE
    mine_to(w, old.expiry_height + 1)
    [(fresh, _)] = w.wallet.vtxos(VtxoState.SPENDABLE)
    assert status(w, fresh.id) == LIVE and balance(w.world, w.wallet).swept == 0
    assert w.problems() == []


def test_a_refresh_that_misses_the_round_loses_the_money(w: Rig) -> None:
    [old] = w.world.fund_vtxos(w.wallet, [30_000])
    mine_to(w, old.expiry_height - 5)
    action_id = run(w.start(run(start_refresh(w.services))))
    run(w.drive(action_id))
    mine_to(w, old.expiry_height)  # swept before the server ran the round
    w.world.run_round()
    assert run(w.drive(action_id)).state == "round_lost"
    m = w.wallet.movement_of(action_id)
    assert m is not None and "expired" in m.metadata["failure"]
    assert balance(w.world, w.wallet).swept == 30_000
    assert w.store.all_resources() == {} and w.problems() == []


def test_an_exit_confirmed_before_the_expiry_is_not_swept(w: Rig) -> None:
    [vtxo] = w.world.fund_vtxos(w.wallet, [30_000])
    mine_to(w, vtxo.expiry_height - 2)
    action_id = run(w.start(run(start_exit(w.services, vtxo.id))))
    run(w.drive(action_id))
    w.world.mine(1)
    assert status(w, vtxo.id) == EXITED
    for _ in range(DELTA + 3):
        if run(w.drive(action_id)).status is fsm.DriveStatus.DONE:
            break
        assert w.problems() == []
        w.world.mine(1)
    assert w.world.onchain_wallet().balance() > 5_000 and balance(w.world, w.wallet).swept == 0
    assert w.problems() == []


def test_an_exit_too_late_ends_swept(w: Rig) -> None:
    [vtxo] = w.world.fund_vtxos(w.wallet, [30_000])
    mine_to(w, vtxo.expiry_height)
    [root] = exit_path(vtxo, DELTA)
    with pytest.raises(ChainRejected, match="swept by the server") as refused:
        run(w.services.chain.broadcast(root))
    assert refused.value.missing_inputs
    action_id = run(w.start(run(start_exit(w.services, vtxo.id))))
    result = run(w.drive(action_id, fsm.DriveMode.UNTIL_DONE))
    assert (result.status, result.state) == (fsm.DriveStatus.FAILED, "swept"), result
    m = w.wallet.movement_of(action_id)
    assert m is not None and m.status is MovementStatus.FAILED
    assert "swept" in m.metadata["failure"]
    assert w.world.onchain_wallet().balance() == 5_000  # no fee paid for a refused tx
    assert w.problems() == []


def test_an_early_sweep_is_caught(w: Rig) -> None:
    """The checker holds the server to the rule: nothing is swept before its expiry."""
    [vtxo] = w.world.fund_vtxos(w.wallet, [30_000])
    with w.world.db.transaction():
        w.world.db.run(
            "UPDATE srv_vtxo SET status = ?, spent_by = ? WHERE id = ?", (SWEPT, "sweep:3", vtxo.id)
        )
    assert any("before its expiry" in p for p in w.problems())
