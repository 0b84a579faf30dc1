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
from fsm_bark.mailbox_sync import sync_mailbox
from fsm_bark.model import ArkAddress, Network, VtxoState, digest
from fsm_bark.offboard_start import start_offboard
from fsm_bark.recovery import recover_from_mailbox
from fsm_bark.sim import check_world_invariants

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
