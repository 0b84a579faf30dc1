"""Several wallets on one simulated server, each with its own wallet store, fsm store and
executor: arkoor payments and lightning between them, the mailbox sync that takes a payment
in, and the invariants across wallets (no money created or lost between them)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import attrs
import pytest
from wallet_rig import Rig

import fsm
from fsm_bark.arkoor_send import start_arkoor_send
from fsm_bark.lightning_receive import lightning_receive_id
from fsm_bark.lightning_receive_ops import cancel_receive
from fsm_bark.lightning_receive_start import start_lightning_receive
from fsm_bark.lightning_send import lightning_send_id
from fsm_bark.lightning_send_ops import pay_lightning_invoice
from fsm_bark.mailbox_sync import receive_movement_id, sync_mailbox
from fsm_bark.model import ArkAddress, MovementStatus, Vtxo, VtxoState, digest
from fsm_bark.services.ark_server import ServerUnavailable
from fsm_bark.sim import Fault, Faults, check_world_invariants
from fsm_bark.sim.wallet_invariants import balance

T = TypeVar("T")
FEE = 20  # the sim's lightning receive fee


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class Two:
    """Alice and Bob on one world."""

    def __init__(self, folder: Path, **kw: Any) -> None:
        self.alice = Rig(folder, **kw)
        self.bob = Rig(folder, world=self.alice.world, name="bob")
        self.world = self.alice.world

    def problems(self) -> list[str]:
        pairs = [(r.wallet, r.store) for r in (self.alice, self.bob)]
        return check_world_invariants(self.world, pairs)

    def close(self) -> None:
        self.bob.close()
        self.alice.close()


@pytest.fixture
def two(tmp_path: Path) -> Iterator[Two]:
    t = Two(tmp_path)
    yield t
    t.close()


def spendable(rig: Rig) -> int:
    return sum(v.amount for v, _ in rig.wallet.vtxos(VtxoState.SPENDABLE))


def pay_arkoor(payer: Rig, to: ArkAddress, amount: int) -> fsm.DriveResult:
    async def go() -> fsm.DriveResult:
        action_id = await payer.start(await start_arkoor_send(payer.services, to, amount))
        return await payer.drive(action_id, fsm.DriveMode.UNTIL_DONE)

    return run(go())


def test_the_wallets_are_apart(two: Two) -> None:
    a, b = two.alice.wallet, two.bob.wallet
    assert a.mailbox_id() != b.mailbox_id()
    assert a.derive_key(0) != b.derive_key(0)
    assert two.world.onchain_wallet().address() != two.world.onchain_wallet("bob").address()
    assert a.db.path != b.db.path and two.alice.store is not two.bob.store


def test_an_arkoor_payment_waits_in_the_mailbox_until_the_payee_syncs(two: Two) -> None:
    two.world.fund_vtxos(two.alice.wallet, [50_000])
    to_bob = two.bob.wallet.new_address()
    assert pay_arkoor(two.alice, to_bob, 20_000).status is fsm.DriveStatus.DONE
    assert spendable(two.bob) == 0
    assert two.problems() == []  # not lost: it waits in Bob's mailbox
    [got] = run(sync_mailbox(two.bob.services))
    assert (got.amount, got.pubkey) == (20_000, to_bob.pubkey)
    assert two.bob.wallet.vtxo_state(got.id) is VtxoState.SPENDABLE
    m = two.bob.wallet.movement_of(receive_movement_id(got.id))
    assert m is not None and m.status is MovementStatus.SUCCESSFUL
    assert (m.kind, m.effective_balance, m.produced) == ("arkoor_receive", 20_000, [got.id])
    assert run(sync_mailbox(two.bob.services)) == []  # a second sync takes nothing twice
    assert len(two.bob.wallet.movements()) == 1
    # Bob pays part of it back: Alice takes it in the same way
    assert pay_arkoor(two.bob, two.alice.wallet.new_address(), 5_000).status.name == "DONE"
    [back] = run(sync_mailbox(two.alice.services))
    assert back.amount == 5_000
    assert (spendable(two.alice), spendable(two.bob)) == (35_000, 15_000)
    b = balance(two.world, two.alice.wallet, two.bob.wallet)
    assert (b.funding, b.wallet_spendable, b.others) == (50_000, 50_000, 0)
    assert two.problems() == []


def test_a_lost_delivery_answer_delivers_once(two: Two) -> None:
    two.world.fund_vtxos(two.alice.wallet, [50_000])
    two.world.script_fault("post_to_mailbox", Fault.LOSE_RESPONSE)
    assert pay_arkoor(two.alice, two.bob.wallet.new_address(), 20_000).status.name == "DONE"
    assert len(two.world.server.mailbox(two.bob.wallet.mailbox_id())) == 1
    assert len(run(sync_mailbox(two.bob.services))) == 1
    assert spendable(two.bob) == 20_000 and two.problems() == []


@pytest.mark.parametrize("rpc", ["read_mailbox", "spent_vtxos"])
def test_a_sync_that_fails_is_run_again(two: Two, rpc: str) -> None:
    two.world.fund_vtxos(two.alice.wallet, [50_000])
    pay_arkoor(two.alice, two.bob.wallet.new_address(), 20_000)
    two.world.script_fault(rpc, Fault.LOSE_RESPONSE)
    with pytest.raises(ServerUnavailable):
        run(sync_mailbox(two.bob.services))
    assert two.problems() == []
    assert [v.amount for v in run(sync_mailbox(two.bob.services))] == [20_000]
    assert two.problems() == []


def test_a_sync_cut_short_after_storing_finishes_the_movement(two: Two) -> None:
    two.world.fund_vtxos(two.alice.wallet, [50_000])
    pay_arkoor(two.alice, two.bob.wallet.new_address(), 20_000)
    [vtxo] = two.world.server.mailbox(two.bob.wallet.mailbox_id())
    w = two.bob.wallet  # what a sync killed after its insert left behind
    w.get_or_create_movement(
        receive_movement_id(vtxo.id),
        "arkoor_receive",
        intended_balance=1,
        effective_balance=1,
        fee=0,
    )
    w.insert_vtxo(vtxo, VtxoState.SPENDABLE)
    assert run(sync_mailbox(two.bob.services)) == []
    m = w.movement_of(receive_movement_id(vtxo.id))
    assert m is not None and m.status is MovementStatus.SUCCESSFUL
    assert two.problems() == []


def test_the_server_delivers_only_the_vtxos_it_made(two: Two) -> None:
    [real] = two.world.fund_vtxos(two.alice.wallet, [50_000])
    server, bob = two.alice.services.server, two.bob.wallet
    forged = Vtxo(f"{digest('forged')}:0", 10_000, 600, real.policy, digest("anchor"))
    with pytest.raises(fsm.Rejected) as unknown:
        run(server.post_to_mailbox(bob.mailbox_id(), [forged], "forge.1"))
    assert unknown.value.code == "NotFound"
    inflated = attrs.evolve(real, amount=90_000)
    with pytest.raises(fsm.Rejected, match="not the one the server made"):
        run(server.post_to_mailbox(bob.mailbox_id(), [inflated], "forge.2"))
    assert two.world.server.mailbox(bob.mailbox_id()) == []


def test_a_payment_spent_before_the_sync_is_not_taken_in(two: Two) -> None:
    """What the mailbox holds is checked with the server: a VTXO spent meanwhile (here by
    the funding wallet, the stand-in for a forged delivery) is skipped."""
    two.world.fund_vtxos(two.alice.wallet, [50_000])
    pay_arkoor(two.alice, two.bob.wallet.new_address(), 20_000)
    [vtxo] = two.world.server.mailbox(two.bob.wallet.mailbox_id())
    with two.world.db.transaction():
        two.world.server.spend([vtxo.id], "elsewhere")
    assert run(sync_mailbox(two.bob.services)) == []
    assert two.bob.wallet.get_vtxo(vtxo.id) is None


def lightning_between(two: Two, amount: int = 10_000) -> tuple[str, str]:
    """Bob's receive paid by Alice's send, both started: (receive id, send id)."""
    started = run(start_lightning_receive(two.bob.services, amount, preimage=digest("bob")))
    run(two.bob.start(started))
    invoice = started.action.data.invoice
    r = run(pay_lightning_invoice(two.alice.executor, invoice))
    assert (r.status, r.state) == (fsm.DriveStatus.PARKED, "payment_initiated")
    return started.action.id, lightning_send_id(invoice.payment_hash)


def test_lightning_from_one_wallet_to_another(two: Two) -> None:
    two.world.fund_vtxos(two.alice.wallet, [50_000])
    receive_id, send_id = lightning_between(two)
    assert two.problems() == []
    assert run(two.bob.drive(receive_id, fsm.DriveMode.UNTIL_DONE)).status is fsm.DriveStatus.DONE
    assert run(two.alice.executor.notify(send_id)).status is fsm.DriveStatus.DONE
    sent = two.alice.wallet.movement_of(send_id)
    got = two.bob.wallet.movement_of(receive_id)
    assert sent is not None and sent.status is MovementStatus.SUCCESSFUL
    assert got is not None and got.status is MovementStatus.SUCCESSFUL
    fee = two.alice.world.server.info().lightning_send_fee(10_000)
    assert spendable(two.alice) == 50_000 - 10_000 - fee
    assert spendable(two.bob) == 10_000 - FEE
    b = balance(two.world, two.alice.wallet, two.bob.wallet)
    assert b.ln_in == b.ln_out == 10_000  # through the one server: in and out cancel
    assert two.problems() == []


def test_a_receive_cancelled_under_a_paying_wallet_refunds_it(two: Two) -> None:
    two.world.fund_vtxos(two.alice.wallet, [50_000])
    receive_id, send_id = lightning_between(two)
    payment_hash = receive_id.removeprefix("ln_recv.")
    assert lightning_receive_id(payment_hash) == receive_id
    assert run(cancel_receive(two.bob.executor, payment_hash)).status is fsm.SendStatus.SENT
    result = run(two.alice.executor.drive(send_id, fsm.DriveMode.UNTIL_DONE))
    assert result.state == "revoked", result
    [canceled] = run(two.bob.executor.run_due(keep_results=True)).results  # bob's worker
    assert (canceled.id, canceled.state) == (receive_id, "canceled")
    assert spendable(two.alice) == 50_000 and spendable(two.bob) == 0
    assert two.problems() == []


def test_the_checker_sees_money_made_between_wallets(two: Two) -> None:
    [vtxo] = two.world.fund_vtxos(two.alice.wallet, [50_000])
    two.bob.wallet.insert_vtxo(vtxo, VtxoState.SPENDABLE)
    problems = two.problems()
    assert any("spendable in wallet and bob" in p for p in problems), problems


def test_a_vtxo_in_the_mailbox_of_no_address_is_lost(two: Two) -> None:
    """Only payments to the wallet's addresses may wait in its mailbox: its own VTXOs (a
    board's change key, say) must be stored by the wallet itself."""
    bob = two.bob.wallet
    [own] = two.world.fund_vtxos(bob, [10_000])
    with bob.db.transaction():
        bob.db.run("DELETE FROM w_vtxo WHERE id = ?", (own.id,))
    run(two.bob.services.server.post_to_mailbox(bob.mailbox_id(), [own], "own.1"))
    assert any("missing in the wallet" in p for p in two.problems())


# -- both ways at once, faults at random -------------------------------------------------------


async def _retried(make: Callable[[], Awaitable[T]]) -> T:
    """A start or a sync refused or lost on its way is simply made again."""
    for _ in range(20):
        try:
            return await make()
        except (fsm.Rejected, ServerUnavailable):
            continue
    raise AssertionError("could not get through")


@pytest.mark.parametrize("seed", [3, 8, 13])
def test_random_payments_both_ways_lose_and_make_nothing(tmp_path: Path, seed: int) -> None:
    """Arkoor payments both ways and a lightning payment from Alice to Bob, under lost
    answers, drops and refusals at random: every action ends, each wallet takes in what it
    was paid, and the invariants hold across both."""
    faults = Faults(lose_response=0.15, drop_request=0.1, reject_invalid_argument=0.02)
    two = Two(tmp_path, seed=seed, faults=faults)
    try:
        alice, bob = two.alice, two.bob
        two.world.fund_vtxos(alice.wallet, [40_000] * 3)
        two.world.fund_vtxos(bob.wallet, [40_000])

        async def arkoor(payer: Rig, payee: Rig, amount: int) -> None:
            to = payee.wallet.new_address()
            await payer.start(await start_arkoor_send(payer.services, to, amount))

        async def lightning() -> None:
            preimage = digest(f"two.{seed}")
            started = await start_lightning_receive(bob.services, 10_000, preimage=preimage)
            if bob.store.row(started.action.id) is None:
                await bob.start(started)
            await pay_lightning_invoice(alice.executor, started.action.data.invoice)

        async def go() -> None:
            await _retried(lambda: arkoor(alice, bob, 15_000))
            await _retried(lambda: arkoor(bob, alice, 7_000))
            await _retried(lightning)
            for _ in range(60):
                await alice.executor.resume_all()
                await bob.executor.resume_all()
                if not alice.store.rows() and not bob.store.rows():
                    break
                two.world.mine(1)
                two.world.advance_time(30.0)
            for rig in (alice, bob):
                await _retried(lambda rig=rig: sync_mailbox(rig.services))

        run(go())
        assert [r.id for r in alice.store.rows()] + [r.id for r in bob.store.rows()] == []
        assert two.problems() == []
        b = balance(two.world, alice.wallet, bob.wallet)
        assert b.others == 0  # every payment landed in a wallet, none outside
        assert b.wallet_spendable + b.server_fees + b.ln_out - b.ln_in == 160_000
        for rig in (alice, bob):  # these seeds' faults are all overcome
            assert {m.status for m in rig.wallet.movements()} == {MovementStatus.SUCCESSFUL}
        kinds = sorted(m.kind for r in (alice, bob) for m in r.wallet.movements())
        assert kinds == [
            "arkoor_receive",
            "arkoor_receive",
            "arkoor_send",
            "arkoor_send",
            "lightning_receive",
            "lightning_send",
        ]
        assert two.world.gate.log()
    finally:
        two.close()
