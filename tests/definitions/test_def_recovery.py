"""Mailbox recovery: a wallet restored from its seed finds its VTXOs and its open Lightning
receives again on the server, and goes on with them."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from wallet_rig import Rig

import fsm
from fsm_bark.arkoor_send import start_arkoor_send
from fsm_bark.board import fund_board, start_board
from fsm_bark.lightning_receive_start import start_lightning_receive
from fsm_bark.model import VtxoState
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
    assert r.bob.wallet.vtxos(VtxoState.SPENDABLE) == []


class Lost(Exception):
    """The wallet is lost right after this commit."""


def test_a_receive_granted_before_the_loss_is_claimed_after_it(r: Restorable) -> None:
    started = run(start_lightning_receive(r.bob.services, 8_000))
    run(r.bob.start(started))
    run(r.alice.services.lightning.pay_invoice(started.action.data.invoice, "payer.1"))

    def lose_at_htlcs(entry: Any) -> None:
        if entry.to_state == "htlcs_ready":
            raise Lost(entry.to_state)

    r.bob.after_commit = lose_at_htlcs
    with pytest.raises(Lost):
        run(r.bob.drive(started.action.id))
    r.lose_bob()
    assert run(recover_from_mailbox(r.bob.executor)).receives == [started.action.id]
    done = run(r.bob.drive(started.action.id, fsm.DriveMode.UNTIL_DONE))
    assert done.status is fsm.DriveStatus.DONE and done.state == "settled"
    [(vtxo, _)] = r.bob.wallet.vtxos(VtxoState.SPENDABLE)
    assert vtxo.amount == 8_000 - 20
    assert r.problems() == []
