"""Mailbox recovery: a wallet restored from its seed finds its VTXOs and its open Lightning
receives again on the server, and goes on with them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from wallet_rig import Rig

import fsm
from fsm_bark.arkoor_send import start_arkoor_send
from fsm_bark.board import fund_board, start_board
from fsm_bark.lightning_receive_start import start_lightning_receive
from fsm_bark.lightning_send import lightning_send_id
from fsm_bark.lightning_send_ops import pay_lightning_invoice
from fsm_bark.mailbox_sync import sync_mailbox
from fsm_bark.model import (
    ArkAddress,
    Invoice,
    MovementStatus,
    Network,
    ServerHtlcSendPolicy,
    VtxoState,
    digest,
    vtxo_resource,
)
from fsm_bark.offboard_start import start_offboard
from fsm_bark.recovery import recover_from_mailbox
from fsm_bark.services.ark_server import ServerUnavailable
from fsm_bark.sim import Fault, check_world_invariants

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class Restorable:
    """Alice, and Bob, whose wallet (wallet store and fsm store) can be lost and restored."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.alice = Rig(folder)
        self.world = self.alice.world
        self.bob = Rig(folder, world=self.world, name="bob")

    def lose_bob(self) -> None:
        self.bob.close()
        for name in ("world/wallet-bob.sqlite", "fsm-bob.sqlite"):
            for suffix in ("", "-wal", "-shm"):
                (self.folder / f"{name}{suffix}").unlink(missing_ok=True)
        self.bob = Rig(self.folder, world=self.world, name="bob")

    def problems(self) -> list[str]:
        pairs = [(r.wallet, r.store) for r in (self.alice, self.bob)]
        return check_world_invariants(self.world, pairs)

    def close(self) -> None:
        self.bob.close()
        self.alice.close()


@pytest.fixture
def r(tmp_path: Path) -> Iterator[Restorable]:
    t = Restorable(tmp_path)
    yield t
    t.close()


def bob_boards(r: Restorable) -> str:
    r.world.fund_onchain(100_000, name="bob")
    funding = fund_board(r.bob.services, 40_000, fee=500)
    action_id = run(r.bob.start(run(start_board(r.bob.services, funding))))
    run(r.bob.drive(action_id))
    r.world.mine(2)
    assert run(r.bob.drive(action_id)).status is fsm.DriveStatus.DONE
    [vtxo] = [v for v, _ in r.bob.wallet.vtxos(VtxoState.SPENDABLE)]
    return vtxo.id


def test_a_restored_wallet_finds_its_vtxos_and_open_receives(r: Restorable) -> None:
    board_vtxo = bob_boards(r)
    r.world.fund_vtxos(r.alice.wallet, [50_000])
    to_bob = r.bob.wallet.new_address()
    send = run(r.alice.start(run(start_arkoor_send(r.alice.services, to_bob, 20_000))))
    assert run(r.alice.drive(send, fsm.DriveMode.UNTIL_DONE)).status is fsm.DriveStatus.DONE
    waiting = run(start_lightning_receive(r.bob.services, 10_000))  # a seed-derived preimage
    run(r.bob.start(waiting))
    paid = run(start_lightning_receive(r.bob.services, 8_000))
    run(r.bob.start(paid))
    run(r.alice.services.lightning.pay_invoice(paid.action.data.invoice, "payer.1"))
    used = r.bob.wallet.next_key_index()

    r.lose_bob()
    assert r.bob.wallet.vtxos() == [] and r.bob.store.rows() == []
    found = run(recover_from_mailbox(r.bob.executor))
    mailbox = r.world.server.mailbox(to_bob.mailbox_ids[0])
    [arkoor_vtxo] = [v.id for v in mailbox if v.id != board_vtxo]
    assert sorted(v.id for v in found.vtxos) == sorted([board_vtxo, arkoor_vtxo])
    assert {v.id for v, _ in r.bob.wallet.vtxos(VtxoState.SPENDABLE)} == {board_vtxo, arkoor_vtxo}
    assert sorted(found.receives) == sorted([waiting.action.id, paid.action.id])
    assert r.bob.wallet.next_key_index() >= used  # no key handed out again
    assert r.problems() == []
    # the receives go on: the paid one is claimed, the other one once it is paid
    assert run(r.bob.drive(paid.action.id, fsm.DriveMode.UNTIL_DONE)).status.name == "DONE"
    run(r.alice.services.lightning.pay_invoice(waiting.action.data.invoice, "payer.2"))
    assert run(r.bob.drive(waiting.action.id, fsm.DriveMode.UNTIL_DONE)).status.name == "DONE"
    total = sum(v.amount for v, _ in r.bob.wallet.vtxos(VtxoState.SPENDABLE))
    fee = 20  # the sim's receive fee
    assert total == (40_000 - 200) + 20_000 + (8_000 - fee) + (10_000 - fee)
    assert r.problems() == []


def test_recovery_run_again_finds_nothing_new(r: Restorable) -> None:
    bob_boards(r)
    r.lose_bob()
    assert len(run(recover_from_mailbox(r.bob.executor)).vtxos) == 1
    again = run(recover_from_mailbox(r.bob.executor))
    assert (again.vtxos, again.receives) == ([], [])
    assert r.problems() == []


def test_a_spent_vtxo_comes_back_as_spent(r: Restorable) -> None:
    board_vtxo = bob_boards(r)
    to_alice = r.alice.wallet.new_address()
    send = run(r.bob.start(run(start_arkoor_send(r.bob.services, to_alice, 39_300))))
    assert run(r.bob.drive(send, fsm.DriveMode.UNTIL_DONE)).status is fsm.DriveStatus.DONE
    r.lose_bob()
    run(recover_from_mailbox(r.bob.executor))
    assert r.bob.wallet.vtxo_state(board_vtxo) is VtxoState.SPENT
    [(change, _)] = r.bob.wallet.vtxos(VtxoState.SPENDABLE)  # the send's change, found
    assert change.amount == 40_000 - 200 - 39_300
    assert r.problems() == []


def carol() -> ArkAddress:
    """A payee on no wallet the test checks (its payment is "others" in the books)."""
    return ArkAddress(digest("carol"), [digest("carol-mailbox")], Network.REGTEST)


def test_a_restored_wallet_finds_the_change_of_its_sends(r: Restorable) -> None:
    """The server posts a send's change to the sender's mailbox with the spend (arkoor send
    and an offboard's split): the restored wallet finds it, and nothing else of others'."""
    r.world.fund_vtxos(r.bob.wallet, [50_000, 30_000])
    send = run(r.bob.start(run(start_arkoor_send(r.bob.services, carol(), 20_000))))
    assert run(r.bob.drive(send, fsm.DriveMode.UNTIL_DONE)).state == "sent"
    off = run(r.bob.start(run(start_offboard(r.bob.services, "bc1dest", amount=10_000))))
    assert run(r.bob.drive(off, fsm.DriveMode.UNTIL_DONE)).status is fsm.DriveStatus.DONE
    before = sorted((v.id, v.amount) for v, _ in r.bob.wallet.vtxos(VtxoState.SPENDABLE))
    fee = r.world.server.info().offboard_fee(1)
    assert sum(a for _, a in before) == 80_000 - 20_000 - 10_000 - fee
    r.lose_bob()
    found = run(recover_from_mailbox(r.bob.executor))
    after = sorted((v.id, v.amount) for v, _ in r.bob.wallet.vtxos(VtxoState.SPENDABLE))
    assert after == before and len(found.vtxos) >= len(before)
    assert r.problems() == []


class Lost(Exception):
    """The wallet is lost right after this commit."""


def lose_at(state: str) -> Callable[[Any], None]:
    def hook(entry: Any) -> None:
        if entry.to_state == state:
            raise Lost(entry.to_state)

    return hook


@pytest.mark.parametrize("state", ["registration", "delivery", "finalizing"])
def test_a_wallet_lost_with_an_arkoor_send_in_flight_finds_its_change(
    r: Restorable, state: str
) -> None:
    """Lost after the cosign, before the send stored its change (it lived only in the
    checkpoint): the restored wallet finds it in its mailbox, spendable."""
    r.world.fund_vtxos(r.bob.wallet, [50_000])
    send = run(r.bob.start(run(start_arkoor_send(r.bob.services, carol(), 20_000))))
    r.bob.after_commit = lose_at(state)
    with pytest.raises(Lost):
        run(r.bob.drive(send, fsm.DriveMode.UNTIL_DONE))
    assert r.bob.wallet.vtxos(VtxoState.SPENDABLE) == []  # the change is in the checkpoint
    r.lose_bob()
    run(recover_from_mailbox(r.bob.executor))
    change = [v for v, _ in r.bob.wallet.vtxos(VtxoState.SPENDABLE)]
    assert sum(v.amount for v in change) == 30_000 and len(change) == 2  # split in two
    assert r.problems() == []
    # and it spends: the restored wallet goes on
    again = run(r.bob.start(run(start_arkoor_send(r.bob.services, carol(), 5_000))))
    assert run(r.bob.drive(again, fsm.DriveMode.UNTIL_DONE)).state == "sent"
    assert r.problems() == []


def test_a_wallet_lost_with_an_offboard_split_in_flight_finds_its_outputs(
    r: Restorable,
) -> None:
    r.world.fund_vtxos(r.bob.wallet, [50_000])
    off = run(r.bob.start(run(start_offboard(r.bob.services, "bc1dest", amount=10_000))))
    r.bob.after_commit = lose_at("arkoor_registration_required")
    with pytest.raises(Lost):
        run(r.bob.drive(off, fsm.DriveMode.UNTIL_DONE))
    r.lose_bob()
    run(recover_from_mailbox(r.bob.executor))
    total = sum(v.amount for v, _ in r.bob.wallet.vtxos(VtxoState.SPENDABLE))
    assert total == 50_000  # the split's outputs: nothing was offboarded yet
    assert r.problems() == []


def test_a_sync_never_takes_a_send_s_change_in_as_received(r: Restorable) -> None:
    """The change waits in the sender's own mailbox while the send is in flight: a sync
    then must leave it to the send (it is no payment)."""
    r.world.fund_vtxos(r.bob.wallet, [50_000])
    send = run(r.bob.start(run(start_arkoor_send(r.bob.services, carol(), 20_000))))
    r.bob.after_commit = lose_at("delivery")
    with pytest.raises(Lost):
        run(r.bob.drive(send))
    r.bob.after_commit = None
    assert run(sync_mailbox(r.bob.services)) == []
    assert run(r.bob.drive(send, fsm.DriveMode.UNTIL_DONE)).state == "sent"
    assert [m.kind for m in r.bob.wallet.movements()] == ["arkoor_send"]
    assert sum(v.amount for v, _ in r.bob.wallet.vtxos(VtxoState.SPENDABLE)) == 30_000
    assert r.problems() == []


def test_a_receive_granted_before_the_loss_is_claimed_after_it(r: Restorable) -> None:
    started = run(start_lightning_receive(r.bob.services, 8_000))
    run(r.bob.start(started))
    run(r.alice.services.lightning.pay_invoice(started.action.data.invoice, "payer.1"))

    r.bob.after_commit = lose_at("htlcs_ready")
    with pytest.raises(Lost):
        run(r.bob.drive(started.action.id))
    r.lose_bob()
    assert run(recover_from_mailbox(r.bob.executor)).receives == [started.action.id]
    done = run(r.bob.drive(started.action.id, fsm.DriveMode.UNTIL_DONE))
    assert done.status is fsm.DriveStatus.DONE and done.state == "settled"
    [(vtxo, _)] = r.bob.wallet.vtxos(VtxoState.SPENDABLE)
    assert vtxo.amount == 8_000 - 20
    assert r.problems() == []


# -- lightning sends: the change, a send in flight, a revoked send --------------------------

LN_AMOUNT = 10_000
LN_FEE = 20  # the sim server: 10 base + 1000 ppm


def held_invoice(r: Restorable, name: str, *, fail: bool = False) -> Invoice:
    """An invoice whose payment stays pending until the payee decides (`resolve`), unless
    ``fail``: then the payment fails at once."""
    inv = r.world.lightning.create_invoice(LN_AMOUNT, "coffee", f"inv-{name}")
    r.world.lightning.set_outcome(inv.payment_hash, fail=fail, hold=not fail)
    return inv


def bob_pays(r: Restorable, inv: Invoice, mode: fsm.DriveMode) -> fsm.DriveResult:
    wait = mode is fsm.DriveMode.UNTIL_DONE
    return run(pay_lightning_invoice(r.bob.executor, inv, wait=wait))


def spendable(r: Restorable) -> int:
    """Bob's plain VTXOs no action holds: what he can spend now."""
    return sum(v.amount for v in r.bob.wallet.spendable_vtxos())


def htlcs(r: Restorable) -> list[str]:
    return [v.id for v, _ in r.bob.wallet.vtxos() if isinstance(v.policy, ServerHtlcSendPolicy)]


def test_a_restored_wallet_finds_the_change_of_its_lightning_send(r: Restorable) -> None:
    """The HTLC cosign names the sender's mailbox in a recovery post, as arkoor's does: the
    change is posted with the spend, and nothing is left to take up once the send is paid."""
    r.world.fund_vtxos(r.bob.wallet, [50_000])
    inv = r.world.lightning.create_invoice(LN_AMOUNT, "coffee", "inv-paid")
    assert bob_pays(r, inv, fsm.DriveMode.UNTIL_DONE).state == "paid"
    before = sorted((v.id, v.amount) for v, _ in r.bob.wallet.vtxos(VtxoState.SPENDABLE))
    assert sum(a for _, a in before) == 50_000 - LN_AMOUNT - LN_FEE and len(before) == 2
    r.lose_bob()
    found = run(recover_from_mailbox(r.bob.executor))
    after = sorted((v.id, v.amount) for v, _ in r.bob.wallet.vtxos(VtxoState.SPENDABLE))
    assert after == before and found.sends == []
    assert r.bob.store.rows() == []
    assert r.problems() == []


@pytest.mark.parametrize("lost_answer", [False, True], ids=["initiated", "cosign-answer-lost"])
@pytest.mark.parametrize("settles", [True, False], ids=["succeeds", "fails"])
def test_a_lightning_send_in_flight_at_restore_is_settled_or_revoked(
    r: Restorable, lost_answer: bool, settles: bool
) -> None:
    """Lost with its payment pending (initiated), or right after a cosign whose answer was
    lost (the HTLC and change exist only on the server): the restored wallet finds the change
    in its mailbox and takes the send up from the server's record, holding its HTLC. The
    payee then settles (the preimage settles the send) or fails the payment back (the HTLC
    is revoked to the seed's key): no money lost or made either way."""
    r.world.fund_vtxos(r.bob.wallet, [50_000])
    inv = held_invoice(r, "held")
    if lost_answer:
        r.world.script_fault("request_lightning_pay_htlc_cosign", Fault.LOSE_RESPONSE)
    paid = bob_pays(r, inv, fsm.DriveMode.UNTIL_PARK_OR_DONE)
    assert paid.state == ("start" if lost_answer else "payment_initiated")
    assert spendable(r) == (0 if lost_answer else 50_000 - LN_AMOUNT - LN_FEE)
    r.lose_bob()

    found = run(recover_from_mailbox(r.bob.executor))
    send = lightning_send_id(inv.payment_hash)
    assert found.sends == [send]
    assert spendable(r) == 50_000 - LN_AMOUNT - LN_FEE  # the change, found
    assert r.bob.data(send).htlc_ids == htlcs(r) and r.bob.held() == {
        vtxo_resource(htlcs(r)[0]): send
    }
    assert run(recover_from_mailbox(r.bob.executor)).sends == []  # taken up once
    assert r.problems() == []
    parked = r.bob.drive(send, fsm.DriveMode.UNTIL_PARK_OR_DONE)
    assert run(parked).state == "payment_initiated"  # pending: the payee holds it

    r.world.lightning.resolve(inv.payment_hash, settle=settles)
    done = run(r.bob.drive(send, fsm.DriveMode.UNTIL_DONE))
    assert done.status is fsm.DriveStatus.DONE
    assert done.state == ("paid" if settles else "revoked")
    movement = r.bob.wallet.movement_of(send)
    assert movement is not None
    if settles:
        assert r.bob.wallet.paid_invoice(inv.payment_hash) is not None
        assert movement.status is MovementStatus.SUCCESSFUL
        assert spendable(r) == 50_000 - LN_AMOUNT - LN_FEE
    else:
        assert movement.status is MovementStatus.FAILED
        assert spendable(r) == 50_000  # the HTLC revoked to the seed's key
    assert r.bob.store.rows() == []
    assert r.problems() == []


def test_a_wallet_lost_after_a_revocation_finds_the_money_back(r: Restorable) -> None:
    """The server posts a revoked HTLC's output to the mailbox the cosign named: a wallet
    lost after its failed send was revoked finds the money back, and no send to take up."""
    r.world.fund_vtxos(r.bob.wallet, [50_000])
    inv = held_invoice(r, "failing", fail=True)
    assert bob_pays(r, inv, fsm.DriveMode.UNTIL_DONE).state == "revoked"
    assert spendable(r) == 50_000
    r.lose_bob()
    found = run(recover_from_mailbox(r.bob.executor))
    assert found.sends == [] and spendable(r) == 50_000
    assert r.problems() == []


def test_a_recovery_cut_short_by_a_lost_answer_is_run_again(r: Restorable) -> None:
    """The sends' list lost on the way: nothing is taken up; run again, the send is, once."""
    r.world.fund_vtxos(r.bob.wallet, [50_000])
    inv = held_invoice(r, "cut")
    assert bob_pays(r, inv, fsm.DriveMode.UNTIL_PARK_OR_DONE).state == "payment_initiated"
    r.lose_bob()
    r.world.script_fault("list_lightning_sends", Fault.LOSE_RESPONSE)
    with pytest.raises(ServerUnavailable):
        run(recover_from_mailbox(r.bob.executor))
    assert r.bob.store.rows() == []
    assert run(recover_from_mailbox(r.bob.executor)).sends == [lightning_send_id(inv.payment_hash)]
    r.world.lightning.resolve(inv.payment_hash, settle=True)
    done = run(r.bob.drive(lightning_send_id(inv.payment_hash), fsm.DriveMode.UNTIL_DONE))
    assert done.state == "paid" and spendable(r) == 50_000 - LN_AMOUNT - LN_FEE
    assert r.problems() == []
