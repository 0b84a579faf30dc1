"""The exit kind against the simulated chain: a VTXO's exit path broadcast hop by hop, the
exit output's timelock, the claim, and what goes wrong on the way (evictions, a crash
between steps); VTXO depth and the server's limit on it."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from wallet_rig import DoubleStepper, Rig, payee

import fsm
from fsm_bark.arkoor_send import start_arkoor_send
from fsm_bark.board import fund_board, start_board
from fsm_bark.exit import (
    CLAIM_FEE,
    EXIT_TX_FEE,
    NotExitable,
    exit_id,
    start_exit,
    start_requested_exits,
)
from fsm_bark.lightning_send import lightning_send_id
from fsm_bark.lightning_send_ops import pay_lightning_invoice
from fsm_bark.lightning_send_start import start_lightning_send
from fsm_bark.model import (
    MovementStatus,
    PubkeyPolicy,
    VtxoRequest,
    VtxoState,
    exit_path,
    fee_anchor,
    vtxo_resource,
)
from fsm_bark.offboard_start import start_offboard
from fsm_bark.services.chain import ChainRejected, TxState
from fsm_bark.services.wallet import InsufficientFunds
from fsm_bark.sim import Fault
from fsm_bark.sim.ark_state import EXITED
from fsm_bark.sim.wallet_invariants import balance

T = TypeVar("T")
DELTA = 12  # the sim server's vtxo_exit_delta


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


FEES = 5_000
"""On-chain coins for the exit transactions' CPFP fees."""


@pytest.fixture
def w(tmp_path: Path) -> Iterator[Rig]:
    rig = Rig(tmp_path)
    rig.world.fund_onchain(FEES)
    yield rig
    rig.close()


def exit_fees(hops: int) -> int:
    """What an exit of ``hops`` transactions costs on chain: one CPFP fee each, the claim."""
    return hops * EXIT_TX_FEE + CLAIM_FEE


def begin(w: Rig, vtxo_id: str) -> str:
    return run(w.start(run(start_exit(w.services, vtxo_id))))


def drive(w: Rig, action_id: str) -> fsm.DriveResult:
    return run(w.drive(action_id))


def blocks_until(w: Rig, action_id: str, state: str, limit: int = 40) -> int:
    """Mine a block and drive until the exit reaches ``state``; the blocks it took. The
    invariants hold after every block."""
    for n in range(limit):
        result = drive(w, action_id)
        if result.state == state or (state == "done" and result.status is fsm.DriveStatus.DONE):
            return n
        assert w.problems() == [], (n, result)
        w.world.mine(1)
    raise AssertionError(f"not in {state} after {limit} blocks")


def test_an_exit_unrolls_waits_out_the_timelock_and_claims(w: Rig) -> None:
    [vtxo] = w.world.fund_vtxos(w.wallet, [50_000])
    action_id = begin(w, vtxo.id)
    assert w.wallet.vtxo_state(vtxo.id) is VtxoState.EXITED  # no selection takes it now
    assert blocks_until(w, action_id, "awaiting_delta") == 1  # depth 0: one tx, one block
    assert w.world.server.vtxo(vtxo.id)[1] == EXITED  # the server saw it on chain
    b = balance(w.world, w.wallet)
    assert (b.exits_in_flight, b.wallet_spendable) == (50_000, 0)
    [tx] = exit_path(vtxo, DELTA)
    claim = w.data(action_id).claim
    with pytest.raises(ChainRejected, match="timelocked"):
        run(w.services.chain.broadcast(claim))  # the chain holds the exit output
    assert blocks_until(w, action_id, "claim_waiting") == DELTA - 1
    assert blocks_until(w, action_id, "done") == 1
    assert w.world.onchain_wallet().balance() == FEES + 50_000 - exit_fees(1)
    m = w.wallet.movement_of(action_id)
    assert m is not None and m.status is MovementStatus.SUCCESSFUL
    assert (m.kind, m.effective_balance, m.fee) == ("exit", -50_000, exit_fees(1))
    assert m.consumed == [vtxo.id]
    b = balance(w.world, w.wallet)
    onchain = (b.exits_in_flight, b.onchain, b.onchain_fees)
    assert onchain == (0, FEES + 50_000 - exit_fees(1), exit_fees(1))
    assert w.world.chain.status(tx.txid).state is TxState.CONFIRMED
    assert w.problems() == []


def test_a_deeper_vtxo_takes_a_block_per_hop(w: Rig) -> None:
    [vtxo] = w.world.fund_vtxos(w.wallet, [50_000], depth=3)
    action_id = begin(w, vtxo.id)
    assert len(w.data(action_id).path) == 4
    assert blocks_until(w, action_id, "awaiting_delta") == 4
    assert blocks_until(w, action_id, "done") == DELTA
    assert w.world.onchain_wallet().balance() == FEES + 50_000 - exit_fees(4)
    assert w.problems() == []


def test_an_evicted_exit_tx_or_claim_is_sent_again(w: Rig) -> None:
    [vtxo] = w.world.fund_vtxos(w.wallet, [50_000], depth=1)
    action_id = begin(w, vtxo.id)
    first, _ = w.data(action_id).path
    drive(w, action_id)
    w.world.chain.evict(first.txid)
    assert blocks_until(w, action_id, "awaiting_delta") == 3  # lost a block, sent again
    blocks_until(w, action_id, "claim_waiting")
    w.world.chain.evict(w.data(action_id).claim.txid)
    assert blocks_until(w, action_id, "done") == 2
    assert w.world.onchain_wallet().balance() == FEES + 50_000 - exit_fees(2)
    assert w.problems() == []


def test_every_step_twice_sends_nothing_twice(w: Rig) -> None:
    """bark's double-drive check: each step run twice from the same state agrees."""
    [vtxo] = w.world.fund_vtxos(w.wallet, [50_000])
    action, _ = run(start_exit(w.services, vtxo.id))
    stepper = DoubleStepper(w, action)
    for _ in range(3 * DELTA):
        outcome = run(stepper.step())
        if isinstance(outcome, fsm.Done):
            break
        if isinstance(outcome, fsm.Park):
            w.world.mine(1)
    assert stepper.states[-1] == "claim_waiting" and isinstance(outcome, fsm.Done)
    assert w.world.onchain_wallet().balance() == FEES + 50_000 - exit_fees(1)


def test_only_a_free_spendable_vtxo_or_a_requested_exit_starts(w: Rig) -> None:
    big, small = w.world.fund_vtxos(w.wallet, [50_000, 30_000])
    run(w.start(run(start_arkoor_send(w.services, payee(), 20_000))))  # holds the 50k
    assert w.store.holder_of(vtxo_resource(big.id)) is not None
    with pytest.raises(NotExitable):
        run(start_exit(w.services, big.id))
    with pytest.raises(NotExitable):
        run(start_exit(w.services, "nope:0"))
    # an action asks for the exit of what it holds (as a board near expiry does)
    w.wallet.start_exit(small.id)
    assert run(start_requested_exits(w.executor)) == [exit_id(small.id)]
    assert run(start_requested_exits(w.executor)) == []  # once
    assert blocks_until(w, exit_id(small.id), "done") == DELTA + 1
    assert run(start_requested_exits(w.executor)) == []  # finished: not again


def test_the_server_refuses_a_spend_at_the_depth_limit(w: Rig) -> None:
    limit = w.world.server.info().max_arkoor_depth
    [deep] = w.world.fund_vtxos(w.wallet, [50_000], depth=limit)
    with pytest.raises(fsm.Rejected, match=f"at depth {limit}, the maximum is {limit}"):
        outputs = [VtxoRequest(50_000, PubkeyPolicy("x"))]
        run(w.services.server.request_arkoor_cosign([deep.id], outputs, "deep.1"))
    w.world.fund_vtxos(w.wallet, [60_000], depth=limit - 1)
    action_id = run(w.start(run(start_arkoor_send(w.services, payee(), 20_000))))
    assert run(w.drive(action_id, fsm.DriveMode.UNTIL_DONE)).status is fsm.DriveStatus.DONE
    change = [v for v, _ in w.wallet.vtxos(VtxoState.SPENDABLE) if v.id not in (deep.id,)]
    assert {v.depth for v in change} == {limit}
    assert w.wallet.vtxo_state(deep.id) is VtxoState.SPENDABLE  # left for a refresh or an exit
    assert w.problems() == []


def test_selection_skips_vtxos_at_the_depth_limit(w: Rig) -> None:
    """bark skips depth-limited VTXOs when it selects (they need a refresh first): a larger
    VTXO at the limit is passed over for a smaller one the server will spend."""
    limit = w.world.server.info().max_arkoor_depth
    [deep] = w.world.fund_vtxos(w.wallet, [50_000], depth=limit)
    [shallow] = w.world.fund_vtxos(w.wallet, [30_000], depth=1)
    started = run(start_arkoor_send(w.services, payee(), 20_000))
    assert started.action.data.input_ids == [shallow.id]
    assert run(w.drive(run(w.start(started)), fsm.DriveMode.UNTIL_DONE)).state == "sent"
    assert w.wallet.vtxo_state(deep.id) is VtxoState.SPENDABLE
    assert w.problems() == []


@pytest.mark.parametrize("kind", ["arkoor", "offboard", "lightning"])
def test_only_vtxos_at_the_depth_limit_left_says_why(w: Rig, kind: str) -> None:
    limit = w.world.server.info().max_arkoor_depth
    w.world.fund_vtxos(w.wallet, [50_000], depth=limit)
    with pytest.raises(
        InsufficientFunds, match=r"50000 more at the arkoor depth limit \(5\): refresh"
    ):
        if kind == "arkoor":
            run(start_arkoor_send(w.services, payee(), 20_000))
        elif kind == "offboard":
            run(start_offboard(w.services, "bc1dest", amount=20_000))
        else:
            invoice = w.world.lightning.create_invoice(20_000, "coffee", "deep")
            run(start_lightning_send(w.services, invoice))
    assert w.store.rows() == [] and w.problems() == []


def test_an_exit_of_a_vtxo_the_server_spent_makes_money_and_is_caught(w: Rig) -> None:
    [vtxo] = w.world.fund_vtxos(w.wallet, [50_000])
    action_id = begin(w, vtxo.id)
    with w.world.db.transaction():  # an earlier out-of-round spend to someone else
        w.world.server.arkoor_cosign([vtxo.id], [VtxoRequest(50_000, PubkeyPolicy("someone"))])
    for _ in range(DELTA + 3):
        drive(w, action_id)
        w.world.mine(1)
    assert any("not conserved" in p for p in w.problems())


def test_a_board_near_expiry_is_exited_on_chain(w: Rig) -> None:
    """The board asks for the exit of its unregistered VTXO; the exit plays it out, the
    board sees it exited and ends, and the server's books take the board fee."""
    w.world.fund_onchain(100_000)  # beside the fees' coin: the board takes this one
    board_id = run(w.start(run(start_board(w.services, fund_board(w.services, 40_000, fee=500)))))
    drive(w, board_id)
    vtxo = w.data(board_id).vtxo
    w.world.script_fault("register_board_vtxo", Fault.REJECT_INVALID_ARGUMENT, times=1000)
    w.world.mine(vtxo.expiry_height - w.world.chain.tip() - 1)
    assert drive(w, board_id).state == "confirming"
    [action_id] = run(start_requested_exits(w.executor))
    assert blocks_until(w, action_id, "done") == DELTA + 1
    assert drive(w, board_id).status is fsm.DriveStatus.DONE  # torn down: exited
    board_movement = w.wallet.movement_of(board_id)
    assert board_movement is not None and board_movement.status is MovementStatus.FAILED
    spent = 40_000 + 500 + exit_fees(1)
    assert w.world.onchain_wallet().balance() == FEES + 100_000 - spent + vtxo.amount
    assert w.problems() == []


def test_a_lightning_send_passes_over_vtxos_at_the_depth_limit(w: Rig) -> None:
    """As arkoor send and offboard: the server would refuse a VTXO at the limit, so the
    lightning send's selection leaves it for a refresh or an exit, and says why when only
    such VTXOs are left (nothing started, nothing held)."""
    limit = w.world.server.info().max_arkoor_depth
    [deep] = w.world.fund_vtxos(w.wallet, [50_000], depth=limit)
    invoice = w.world.lightning.create_invoice(10_000, "coffee", "outside")
    with pytest.raises(InsufficientFunds, match=rf"at the arkoor depth limit \({limit}\)"):
        run(pay_lightning_invoice(w.executor, invoice, wait=True))
    assert w.wallet.movement_of(lightning_send_id(invoice.payment_hash)) is None
    [shallow] = w.world.fund_vtxos(w.wallet, [30_000], depth=1)
    result = run(pay_lightning_invoice(w.executor, invoice, wait=True))
    assert (result.status, result.state) == (fsm.DriveStatus.DONE, "paid")
    assert w.wallet.vtxo_state(deep.id) is VtxoState.SPENDABLE
    assert w.wallet.vtxo_state(shallow.id) is VtxoState.SPENT
    assert w.store.all_resources() == {} and w.problems() == []


# -- exit fees: CPFP through the fee anchors ---------------------------------------------------


@pytest.fixture
def poor(tmp_path: Path) -> Iterator[Rig]:
    """A wallet with no on-chain coin for the exit fees."""
    rig = Rig(tmp_path)
    yield rig
    rig.close()


def test_an_exit_tx_without_its_fee_is_never_mined(poor: Rig) -> None:
    [vtxo] = poor.world.fund_vtxos(poor.wallet, [50_000])
    [tx] = exit_path(vtxo, DELTA)
    run(poor.services.chain.broadcast(tx))
    poor.world.mine(3)
    assert poor.world.chain.status(tx.txid).state is TxState.MEMPOOL  # pays no fee
    poor.world.fund_onchain(1_000)
    anchor = fee_anchor(tx)
    assert anchor is not None
    run(poor.services.chain.broadcast(poor.services.onchain.build_cpfp(anchor, EXIT_TX_FEE)))
    poor.world.mine(1)
    assert poor.world.chain.status(tx.txid).state is TxState.CONFIRMED  # the child paid
    assert poor.world.onchain_wallet().balance() == 1_000 - EXIT_TX_FEE


def test_an_exit_with_no_funds_for_its_fees_waits_and_says_why(poor: Rig) -> None:
    [vtxo] = poor.world.fund_vtxos(poor.wallet, [50_000], depth=1)
    action_id = begin(poor, vtxo.id)
    assert drive(poor, action_id).state == "awaiting_fee_funds"
    m = poor.wallet.movement_of(action_id)
    assert m is not None and "needs a fee of 300 sats on chain" in m.metadata["waiting"]
    assert "need 300 sats on chain, have 0" in str(poor.data(action_id).fee_short)
    for _ in range(3):  # blocks go by: the tx sits in the mempool, the exit keeps waiting
        poor.world.mine(1)
        assert drive(poor, action_id).state == "awaiting_fee_funds"
        assert poor.problems() == []
    first, second = poor.data(action_id).path
    assert poor.world.chain.status(first.txid).state is TxState.MEMPOOL
    poor.world.fund_onchain(EXIT_TX_FEE)  # enough for the first hop only
    poor.world.mine(1)
    assert drive(poor, action_id).state == "unrolling_wait"
    poor.world.mine(1)
    assert poor.world.chain.status(first.txid).state is TxState.CONFIRMED
    assert drive(poor, action_id).state == "awaiting_fee_funds"  # the second hop's fee
    assert poor.world.chain.status(second.txid).state is TxState.MEMPOOL
    poor.world.fund_onchain(EXIT_TX_FEE)
    assert blocks_until(poor, action_id, "done") == DELTA + 2
    assert poor.world.onchain_wallet().balance() == 50_000 - CLAIM_FEE
    b = balance(poor.world, poor.wallet)
    assert b.onchain_fees == exit_fees(2)
    assert poor.problems() == []


def test_an_evicted_fee_child_is_paid_again(w: Rig) -> None:
    [vtxo] = w.world.fund_vtxos(w.wallet, [50_000])
    action_id = begin(w, vtxo.id)
    drive(w, action_id)
    [tx] = w.data(action_id).path
    anchor = fee_anchor(tx)
    assert anchor is not None
    child = w.world.chain.spent_by(anchor)
    assert child is not None
    w.world.chain.evict(child.txid)  # the child alone: its parent stays, unpaid
    w.world.mine(1)
    assert w.world.chain.status(tx.txid).state is TxState.MEMPOOL  # a block lost
    assert blocks_until(w, action_id, "done") == DELTA + 1  # as if it started now
    assert w.world.onchain_wallet().balance() == FEES + 50_000 - exit_fees(1)
    assert w.problems() == []


def test_an_exit_asks_the_server_nothing_after_its_start(w: Rig) -> None:
    """Unilateral: once started, an exit plays out with the server refusing every call."""
    [vtxo] = w.world.fund_vtxos(w.wallet, [50_000])
    action_id = begin(w, vtxo.id)
    w.world.script_fault("*", Fault.REJECT_NOT_FOUND, times=1000)
    assert blocks_until(w, action_id, "done") == DELTA + 1
    assert w.world.onchain_wallet().balance() == FEES + 50_000 - exit_fees(1)
    assert w.problems() == []
