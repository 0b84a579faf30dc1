"""Fees: the server's schedule with tiers, schedules that change over time, the estimates a
wallet reads, and a quote gone stale between the start of an action and its use (the server
refuses it, as bark's server refuses a stale fee rate; the kind fails with the reason, and
starting again quotes anew)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from wallet_rig import Rig

import fsm
from fsm_bark.board import fund_board, start_board
from fsm_bark.fee_estimates import (
    estimate_board_fee,
    estimate_lightning_receive_fee,
    estimate_lightning_send_fee,
    estimate_offboard_fee,
)
from fsm_bark.lightning_receive_start import start_lightning_receive
from fsm_bark.lightning_send_ops import pay_lightning_invoice
from fsm_bark.lightning_send_start import start_lightning_send
from fsm_bark.model import MovementStatus, board_address, digest
from fsm_bark.offboard_start import start_offboard
from fsm_bark.services.ark_records import BoardRequest
from fsm_bark.services.fees import FeeSchedule, FeeTier
from fsm_bark.sim.fee_schedule import DEFAULT_FEES, TIERED_FEES
from fsm_bark.sim.ledger import Flow

UNTIL_DONE = fsm.DriveMode.UNTIL_DONE


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture
def w(tmp_path: Path) -> Iterator[Rig]:
    rig = Rig(tmp_path)
    rig.world.set_fees(TIERED_FEES)
    rig.world.fund_vtxos(rig.wallet, [200_000, 50_000])
    yield rig
    rig.close()


def test_tiers_price_each_amount_by_the_first_tier_that_covers_it() -> None:
    fees = TIERED_FEES
    assert fees.lightning_send_fee(10_000) == 10 + 10  # base 10, 1000 ppm, up to 10 000
    assert fees.lightning_send_fee(10_001) == 20 + 8  # the next tier: base 20, 800 ppm
    assert fees.lightning_send_fee(1_000_000) == 50 + 500  # the open tier
    assert fees.board_fee(50_000) == 200 and fees.board_fee(60_000) == 100 + 120
    assert fees.lightning_receive_fee(30_000) == 10 + 15
    assert fees.offboard_fee(2) == 50 * 3
    with pytest.raises(ValueError, match="must rise"):
        FeeSchedule([FeeTier(None, 1), FeeTier(10, 1)], [FeeTier(None, 1)], [FeeTier(None, 1)], 1)


def test_estimates_read_the_schedule_in_force_and_a_change_takes_effect_on_time(w: Rig) -> None:
    dearer = attrs.evolve(TIERED_FEES, lightning_receive=[FeeTier(None, 99)], offboard_fee_rate=80)
    w.world.set_fees(dearer, since=w.world.clock.now() + 60)
    s = w.services
    assert run(estimate_lightning_send_fee(s, 50_000)) == 20 + 40
    assert run(estimate_board_fee(s, 40_000)) == 200
    assert run(estimate_lightning_receive_fee(s, 30_000)) == 25
    assert run(estimate_offboard_fee(s)) == 100
    w.world.advance_time(60)
    assert run(estimate_lightning_receive_fee(s, 30_000)) == 99
    assert run(estimate_offboard_fee(s, 3)) == 320


def test_a_lightning_send_whose_quote_went_stale_fails_with_the_reason_then_pays_again(
    w: Rig,
) -> None:
    other = w.world.lightning.create_invoice(30_000, "a lamp", "inv.lamp")
    w.world.lightning.set_outcome(other.payment_hash, fail=False)
    action, resources = run(start_lightning_send(w.services, other))  # quotes 20 + 24
    run(w.executor.start(action, resources=resources))
    dearer = [attrs.evolve(t, base=t.base + 5) for t in TIERED_FEES.lightning_send]
    w.world.set_fees(attrs.evolve(TIERED_FEES, lightning_send=dearer))
    result = run(w.executor.drive(action.id, UNTIL_DONE))
    assert (result.status, result.state) == (fsm.DriveStatus.FAILED, "not_sent")
    m = w.wallet.movement_of(action.id)
    assert m is not None and m.status is MovementStatus.FAILED
    assert "lightning send fee 44 is no longer valid" in m.metadata["failure"]
    assert w.store.resources_of(action.id) == [] and w.problems() == []
    again = run(pay_lightning_invoice(w.executor, other, wait=True))  # a new quote: 49
    assert (again.status, again.state) == (fsm.DriveStatus.DONE, "paid")
    assert w.world.ledger.totals()[Flow.SERVER_FEE] == 49  # the new quote, and only it
    refused, paid = w.wallet.movements()  # one per attempt: the refused one stays failed
    assert (refused.status, paid.status) == (MovementStatus.FAILED, MovementStatus.SUCCESSFUL)
    assert paid.fee == 49 and w.wallet.movement_of(again.id) == paid
    assert w.problems() == []


def test_an_offboard_whose_fee_rate_went_stale_fails_with_the_reason_then_offboards_again(
    w: Rig,
) -> None:
    aid = run(w.start(run(start_offboard(w.services, "external:carol", amount=30_000))))
    w.world.set_offboard_fee_rate(70)  # between the quote (start) and its use (prepare)
    result = run(w.drive(aid, UNTIL_DONE))
    assert result.status is fsm.DriveStatus.FAILED
    m = w.wallet.movement_of(aid)
    assert m is not None and "fee rate is no longer valid" in m.metadata["failure"]
    assert w.held() == {} and w.problems() == []
    again = run(w.start(run(start_offboard(w.services, "external:carol", amount=30_000))))
    assert run(w.drive(again, UNTIL_DONE)).status is fsm.DriveStatus.DONE
    done = w.wallet.movement_of(again)
    assert done is not None and done.fee == 70 * 2
    assert w.problems() == []


def test_a_board_refused_for_a_stale_fee_is_started_again_with_a_new_quote(
    tmp_path: Path,
) -> None:
    """`start_board` quotes and asks in one go, so the stale request is made by hand here;
    the server refuses it with the reason, and the starter run again quotes anew."""
    with Rig(tmp_path) as rig:
        rig.world.fund_onchain(100_000)
        funding = fund_board(rig.services, 60_000, fee=500)
        [(vout, out)] = [(n, o) for n, o in enumerate(funding.outputs) if o.amount == 60_000]
        pk = next(
            rig.wallet.derive_key(i)
            for i in range(5)
            if board_address(rig.wallet.derive_key(i)) == out.address
        )
        quote = DEFAULT_FEES.board_fee(60_000)  # the wallet read the default schedule ...
        rig.world.set_fees(TIERED_FEES)  # ... and the server moved on before the cosign
        stale = BoardRequest(funding, vout, pk, 600, quote)
        with pytest.raises(fsm.Rejected, match=f"board fee {quote} is no longer valid"):
            run(rig.services.server.request_board_cosign(stale, "board.stale"))
        aid = run(rig.start(run(start_board(rig.services, funding))))
        assert run(rig.drive(aid)).state == "confirming"
        rig.world.mine(2)
        assert run(rig.drive(aid, UNTIL_DONE)).status is fsm.DriveStatus.DONE
        m = rig.wallet.movement_of(aid)
        assert m is not None and m.fee == TIERED_FEES.board_fee(60_000) == 220
        assert rig.problems() == []


def test_a_receive_pays_the_fee_in_force_when_its_htlc_is_granted(w: Rig) -> None:
    """The receive fee is the server's when it grants the HTLC (the wallet commits to no fee
    before): a change after the invoice is what the receive pays."""
    action, _ = run(start_lightning_receive(w.services, 30_000, preimage=digest("tiered")))
    assert run(w.executor.start(action))
    w.world.set_fees(attrs.evolve(TIERED_FEES, lightning_receive=[FeeTier(None, 40, 1_000)]))
    run(w.services.lightning.pay_invoice(action.data.invoice, "payer.tiered"))
    assert run(w.drive(action.id, UNTIL_DONE)).status is fsm.DriveStatus.DONE
    assert w.wallet.settled_receive(action.data.invoice.payment_hash) == 30_000 - 70
    m = w.wallet.movement_of(action.id)
    assert m is not None and m.fee == 70
    assert w.problems() == []
