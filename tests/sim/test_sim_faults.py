"""Each fault of the simulated world does what it says, and replays are exactly-once."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import attrs
import pytest
from wallet_rig import Rig

import fsm
from fsm_bark.model import (
    PubkeyPolicy,
    TxOut,
    Vtxo,
    VtxoRequest,
    board_address,
    digest,
    payment_hash_of,
)
from fsm_bark.services import Services
from fsm_bark.services.ark_records import (
    BoardRequest,
    HtlcSendRequest,
    OffboardRequest,
    ReceiveState,
    RecoveryPost,
)
from fsm_bark.services.ark_server import ServerUnavailable
from fsm_bark.services.chain import ChainRejected, TxState
from fsm_bark.sim import Fault, Faults, World

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    with Rig(tmp_path) as rig:
        yield rig


@pytest.fixture
def world(rig: Rig) -> World:
    return rig.world


@pytest.fixture
def svc(rig: Rig) -> Services:
    return rig.services


def arkoor(svc: Services, vtxo: Vtxo) -> list[VtxoRequest]:
    half = vtxo.amount // 2
    other = PubkeyPolicy(digest("someone else"))
    return [VtxoRequest(half, other), VtxoRequest(vtxo.amount - half, other)]


def status(world: World, vtxo_id: str) -> str:
    row = world.server.vtxo(vtxo_id)
    assert row is not None
    return row[1]


def test_dropped_request_changes_nothing(world: World, svc: Services) -> None:
    [v] = world.fund_vtxos(svc.wallet, [10_000])
    world.script_fault("request_arkoor_cosign", Fault.DROP_REQUEST)
    with pytest.raises(ServerUnavailable, match="dropped"):
        run(svc.server.request_arkoor_cosign([v.id], arkoor(svc, v), "act.1"))
    assert status(world, v.id) == "live"
    assert world.ledger.entry("act.1") is None
    run(svc.server.request_arkoor_cosign([v.id], arkoor(svc, v), "act.1"))
    assert status(world, v.id) == "spent"


def test_lost_response_is_applied_once_and_the_retry_is_a_replay(
    world: World, svc: Services
) -> None:
    [v] = world.fund_vtxos(svc.wallet, [10_000])
    world.script_fault("request_arkoor_cosign", Fault.LOSE_RESPONSE)
    with pytest.raises(ServerUnavailable, match="lost"):
        run(svc.server.request_arkoor_cosign([v.id], arkoor(svc, v), "act.1"))
    assert status(world, v.id) == "spent"
    vtxos_before = len(world.server.vtxos())
    outputs = run(svc.server.request_arkoor_cosign([v.id], arkoor(svc, v), "act.1"))
    assert len(world.server.vtxos()) == vtxos_before
    assert [status(world, o.id) for o in outputs] == ["live", "live"]
    entry = world.ledger.entry("act.1")
    assert entry is not None and (entry.applied, entry.attempts) == (1, 2)
    assert entry.action_id == "act"


def test_a_rewritten_answer_is_applied_once_and_the_replay_tells_the_truth(
    world: World, svc: Services
) -> None:
    [v] = world.fund_vtxos(svc.wallet, [10_000])
    world.script_fault("request_arkoor_cosign", Fault.REWRITE)
    lie = run(svc.server.request_arkoor_cosign([v.id], arkoor(svc, v), "act.1"))
    truth = run(svc.server.request_arkoor_cosign([v.id], arkoor(svc, v), "act.1"))
    assert [o.amount for o in lie] == [4_999, 5_000]
    assert [o.amount for o in truth] == [5_000, 5_000] and lie[1:] == truth[1:]
    entry = world.ledger.entry("act.1")
    assert status(world, v.id) == "spent" and entry is not None and entry.applied == 1


def test_a_faked_acknowledgement_applies_nothing_and_an_answer_is_never_faked(
    world: World, svc: Services
) -> None:
    [v] = world.fund_vtxos(svc.wallet, [10_000])
    world.script_fault("post_to_mailbox", Fault.FAKE_SUCCESS)
    assert run(svc.server.post_to_mailbox("mbx", [v], "post.1")) is None
    assert world.server.mailbox("mbx") == [] and world.ledger.entry("post.1") is None
    world.script_fault("request_arkoor_cosign", Fault.FAKE_SUCCESS)  # signed: forwarded
    outputs = run(svc.server.request_arkoor_cosign([v.id], arkoor(svc, v), "act.1"))
    assert [status(world, o.id) for o in outputs] == ["live", "live"]


def test_same_spend_under_a_new_key_is_a_natural_replay(world: World, svc: Services) -> None:
    [v] = world.fund_vtxos(svc.wallet, [10_000])
    first = run(svc.server.request_arkoor_cosign([v.id], arkoor(svc, v), "act.1"))
    again = run(svc.server.request_arkoor_cosign([v.id], arkoor(svc, v), "act.2"))
    assert first == again
    entry = world.ledger.entry("act.2")
    assert entry is not None and entry.applied == 0


@pytest.mark.parametrize(
    ("fault", "code"),
    [(Fault.REJECT_INVALID_ARGUMENT, "InvalidArgument"), (Fault.REJECT_NOT_FOUND, "NotFound")],
)
def test_injected_rejections_carry_their_code_and_change_nothing(
    world: World, svc: Services, fault: Fault, code: str
) -> None:
    [v] = world.fund_vtxos(svc.wallet, [10_000])
    world.script_fault("*", fault)
    with pytest.raises(fsm.Rejected) as info:
        run(svc.server.request_arkoor_cosign([v.id], arkoor(svc, v), "act.1"))
    assert info.value.code == code
    assert status(world, v.id) == "live"
    assert world.ledger.entries() == []


def test_real_rejections_use_the_two_codes(world: World, svc: Services) -> None:
    [v] = world.fund_vtxos(svc.wallet, [10_000])
    with pytest.raises(fsm.Rejected) as unknown:
        run(svc.server.request_arkoor_cosign(["00:0"], arkoor(svc, v), "x.1"))
    assert unknown.value.code == "NotFound"
    run(svc.server.request_arkoor_cosign([v.id], arkoor(svc, v), "a.1"))
    other = [VtxoRequest(v.amount, PubkeyPolicy(digest("thief")))]
    with pytest.raises(fsm.Rejected) as spent:
        run(svc.server.request_arkoor_cosign([v.id], other, "b.1"))
    assert spent.value.code == "InvalidArgument"
    with pytest.raises(fsm.Rejected, match="different request"):
        run(svc.server.request_arkoor_cosign([v.id], other, "a.1"))


def offboard(world: World, svc: Services) -> tuple[OffboardRequest, str]:
    [v] = world.fund_vtxos(svc.wallet, [10_000])
    info = run(svc.server.info())
    req = OffboardRequest([v.id], "bc1dest", v.amount - info.offboard_fee(1), True, 50)
    prepared = run(svc.server.prepare_offboard(req, "off.1"))
    return req, prepared.unsigned_tx.txid


def test_restart_forgets_offboard_sessions(world: World, svc: Services) -> None:
    req, txid = offboard(world, svc)
    world.restart_server()
    with pytest.raises(fsm.Rejected) as info:
        run(svc.server.finish_offboard(txid, ["sig"], "off.2"))
    assert info.value.code == "NotFound"
    # a new prepare of the same request opens a session with the same tx and nonces
    again = run(svc.server.prepare_offboard(req, "off.3"))
    assert again.unsigned_tx.txid == txid
    signed = run(svc.server.finish_offboard(txid, ["sig"], "off.4"))
    assert signed.signed and run(svc.chain.tx_status(txid)).state is TxState.MEMPOOL


def test_restart_fault_forgets_sessions_and_fails_the_call(world: World, svc: Services) -> None:
    _, txid = offboard(world, svc)
    world.script_fault("finish_offboard", Fault.RESTART)
    with pytest.raises(ServerUnavailable, match="restarting"):
        run(svc.server.finish_offboard(txid, ["sig"], "off.2"))
    with pytest.raises(fsm.Rejected):
        run(svc.server.finish_offboard(txid, ["sig"], "off.2"))


def test_offboard_checks_spendability_before_parameters(world: World, svc: Services) -> None:
    req, txid = offboard(world, svc)
    run(svc.server.finish_offboard(txid, ["sig"], "off.2"))
    world.restart_server()
    world.set_offboard_fee_rate(70)
    with pytest.raises(fsm.Rejected) as spent:
        run(svc.server.prepare_offboard(req, "off.3"))
    assert "fee rate" not in str(spent.value)
    [v] = world.fund_vtxos(svc.wallet, [10_000])
    fresh = OffboardRequest([v.id], "bc1dest", 9_900, True, 50)
    with pytest.raises(fsm.Rejected, match="fee rate is no longer valid"):
        run(svc.server.prepare_offboard(fresh, "off.4"))


def board_tx(world: World, svc: Services) -> tuple[Any, Vtxo]:
    world.fund_onchain(100_000)
    pk = svc.wallet.derive_key(svc.wallet.next_key_index())
    tx = svc.onchain.build_tx([TxOut(board_address(pk), 40_000)], fee=500)
    vtxo = run(svc.server.request_board_cosign(BoardRequest(tx, 0, pk, 600, 200), "board.1"))
    return tx, vtxo


def test_eviction_drops_a_mempool_tx_and_frees_its_inputs(world: World, svc: Services) -> None:
    tx, _ = board_tx(world, svc)
    run(svc.chain.broadcast(tx))
    assert svc.onchain.balance() == 100_000 - 40_000 - 500
    world.chain.evict(tx.txid)
    assert run(svc.chain.tx_status(tx.txid)).state is TxState.NOT_FOUND
    assert run(svc.chain.spent_by(tx.inputs[0])) is None
    assert svc.onchain.balance() == 100_000
    run(svc.chain.broadcast(tx))
    world.mine(1)
    assert run(svc.chain.tx_status(tx.txid)).state is TxState.CONFIRMED


def test_conflicting_spend_is_mined_and_the_board_funding_is_dead(
    world: World, svc: Services
) -> None:
    tx, vtxo = board_tx(world, svc)
    run(svc.chain.broadcast(tx))
    conflict = world.chain.double_spend(tx)
    assert run(svc.chain.tx_status(tx.txid)).state is TxState.NOT_FOUND
    assert run(svc.chain.tx_status(conflict.txid)).state is TxState.CONFIRMED
    spend = run(svc.chain.spent_by(tx.inputs[0]))
    assert spend is not None and spend.txid == conflict.txid and spend.height is not None
    with pytest.raises(ChainRejected) as info:
        run(svc.chain.broadcast(tx))
    assert info.value.missing_inputs
    world.mine(3)
    with pytest.raises(fsm.Rejected):
        run(svc.server.register_board_vtxo(vtxo, "board.2"))


@pytest.mark.parametrize(
    ("faults", "spent"),
    [(Faults(evict=1.0), False), (Faults(conflict=1.0), True)],
    ids=["eviction", "conflict"],
)
def test_fault_by_rate_takes_the_board_funding_off_the_chain(
    tmp_path: Path, faults: Faults, spent: bool
) -> None:
    """Evicted, its inputs are free again; conflicted, a conflicting spend took them."""
    with Rig(tmp_path, seed=3, faults=faults) as rig:
        world, svc = rig.world, rig.services
        tx, _ = board_tx(world, svc)
        run(svc.chain.broadcast(tx))
        world.mine(1)
        assert run(svc.chain.tx_status(tx.txid)).state is TxState.NOT_FOUND
        assert (run(svc.chain.spent_by(tx.inputs[0])) is not None) is spent


def test_board_registers_after_required_confirmations(world: World, svc: Services) -> None:
    tx, vtxo = board_tx(world, svc)
    run(svc.chain.broadcast(tx))
    world.mine(1)
    with pytest.raises(fsm.Rejected, match="1 confirmations, 2 required"):
        run(svc.server.register_board_vtxo(vtxo, "board.2"))
    world.mine(1)
    run(svc.server.register_board_vtxo(vtxo, "board.3"))
    run(svc.server.register_board_vtxo(vtxo, "board.4"))
    assert status(world, vtxo.id) == "live"
    entry = world.ledger.entry("board.4")
    assert entry is not None and entry.applied == 0


def test_external_payment_pending_then_succeeds(world: World, svc: Services) -> None:
    [v] = world.fund_vtxos(svc.wallet, [20_000])
    invoice = run(svc.lightning.create_invoice(5_000, "coffee", "payee.1"))
    world.lightning.set_outcome(invoice.payment_hash, fail=False, pending_polls=2)
    info = run(svc.server.info())
    fee = info.lightning_send_fee(5_000)
    hk = svc.wallet.derive_key(svc.wallet.next_key_index())
    change = [VtxoRequest(v.amount - 5_000 - fee, PubkeyPolicy(hk))]
    req = HtlcSendRequest([v.id], invoice, 5_000, hk, world.chain.tip() + 60, change, fee)
    htlc, _ = run(svc.server.request_lightning_pay_htlc_cosign(req, "ln_pay.x.1"))
    run(svc.server.initiate_lightning_payment(invoice, [htlc.id], 5_000, "mb", "ln_pay.x.2"))
    states = [run(svc.server.check_lightning_payment(invoice.payment_hash)) for _ in range(3)]
    assert [s.state.value for s in states] == ["pending", "pending", "succeeded"]
    assert states[-1].preimage is not None
    assert payment_hash_of(states[-1].preimage) == invoice.payment_hash
    with pytest.raises(fsm.Rejected, match="succeeded"):
        run(svc.server.request_lightning_pay_htlc_revocation([htlc.id], hk, "ln_pay.x.3"))


def test_revocation_refused_while_the_intra_ark_receive_is_committed(
    world: World, svc: Services
) -> None:
    [v] = world.fund_vtxos(svc.wallet, [20_000])
    preimage = digest("receiver secret")
    h = payment_hash_of(preimage)
    invoice = run(svc.server.start_lightning_receive(h, 5_000, 50, "mb", "", "ln_recv.h.1"))
    info = run(svc.server.info())
    fee = info.lightning_send_fee(5_000)
    hk = svc.wallet.derive_key(svc.wallet.next_key_index())
    change = [VtxoRequest(v.amount - 5_000 - fee, PubkeyPolicy(hk))]
    req = HtlcSendRequest([v.id], invoice, 5_000, hk, world.chain.tip() + 60, change, fee)
    htlc, _ = run(svc.server.request_lightning_pay_htlc_cosign(req, "ln_pay.h.1"))
    run(svc.server.initiate_lightning_payment(invoice, [htlc.id], 5_000, "mb", "ln_pay.h.2"))
    assert run(svc.server.check_lightning_receive(h)).state is ReceiveState.ACCEPTED
    rk = svc.wallet.derive_key(svc.wallet.next_key_index())
    grant = run(svc.server.prepare_lightning_receive_claim(h, rk, 200, None, "ln_recv.h.2"))
    world.mine(70)  # the send's HTLC has expired, but the receive is committed
    with pytest.raises(fsm.Rejected, match="committed") as info_:
        run(svc.server.request_lightning_pay_htlc_revocation([htlc.id], hk, "ln_pay.h.3"))
    assert info_.value.code == "InvalidArgument"
    ids = [x.id for x in grant.htlc_vtxos]
    run(svc.server.claim_lightning_receive(h, preimage, ids, PubkeyPolicy(rk), "ln_recv.h.3"))
    paid = run(svc.server.check_lightning_payment(h))
    assert paid.state.value == "succeeded" and paid.preimage == preimage


def test_an_htlc_cosign_posts_its_change_and_lists_the_send_under_its_recovery_mailbox(
    world: World, svc: Services
) -> None:
    """The recovery post is applied with the spend (a replay posts nothing new), the send is
    listed under its mailbox until it is revoked, and the revocation's output is posted
    there; a post naming an output the cosign does not make is refused, changing nothing."""
    [v] = world.fund_vtxos(svc.wallet, [20_000])
    invoice = run(svc.lightning.create_invoice(5_000, "coffee", "payee.r"))
    world.lightning.set_outcome(invoice.payment_hash, fail=True)
    fee = run(svc.server.info()).lightning_send_fee(5_000)
    hk = svc.wallet.derive_key(svc.wallet.next_key_index())
    change = [VtxoRequest(v.amount - 5_000 - fee, PubkeyPolicy(hk))]
    req = HtlcSendRequest([v.id], invoice, 5_000, hk, world.chain.tip() + 60, change, fee)
    bad = attrs.evolve(req, recovery=RecoveryPost("mb", [2]))
    with pytest.raises(fsm.Rejected, match="recovery post"):
        run(svc.server.request_lightning_pay_htlc_cosign(bad, "ln_pay.r.0"))
    assert status(world, v.id) == "live"
    good = attrs.evolve(req, recovery=RecoveryPost("mb", [1]))
    htlc, back = run(svc.server.request_lightning_pay_htlc_cosign(good, "ln_pay.r.1"))
    run(svc.server.request_lightning_pay_htlc_cosign(good, "ln_pay.r.2"))  # a replay
    assert run(svc.server.read_mailbox("mb")) == [back]
    assert run(svc.server.list_lightning_sends("other")) == []
    [listed] = run(svc.server.list_lightning_sends("mb"))
    assert (listed.request, listed.htlc_vtxos) == (good, [htlc])
    run(svc.server.initiate_lightning_payment(invoice, [htlc.id], 5_000, "mb", "ln_pay.r.3"))
    assert run(svc.server.check_lightning_payment(invoice.payment_hash)).state.value == "failed"
    assert len(run(svc.server.list_lightning_sends("mb"))) == 1  # failed: still to revoke
    rk = svc.wallet.derive_key(svc.wallet.next_key_index())
    [refund] = run(svc.server.request_lightning_pay_htlc_revocation([htlc.id], rk, "ln_pay.r.4"))
    assert run(svc.server.list_lightning_sends("mb")) == []
    assert run(svc.server.read_mailbox("mb")) == [back, refund]
    assert refund.amount == 5_000 + fee
