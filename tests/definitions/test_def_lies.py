"""The five kinds behind a proxy that lies (bark's test proxy): it reports a success that did
not happen (``FAKE_SUCCESS``: an acknowledgement never forwarded) and rewrites a field of
the server's true answer (``REWRITE``). No lie may lose or double-spend funds: the world's
invariants (the ledger of effects) say so after every scenario. Where a kind can check the
answer, as bark checks it, it does, and a retry replays the truth."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from wallet_rig import Rig, payee

import fsm
from fsm_bark.arkoor_send import start_arkoor_send
from fsm_bark.board import BoardError, fund_board, start_board
from fsm_bark.lightning_receive_ops import cancel_receive
from fsm_bark.lightning_receive_start import start_lightning_receive
from fsm_bark.lightning_send import lightning_send_id
from fsm_bark.lightning_send_ops import pay_lightning_invoice
from fsm_bark.model import MovementStatus, VtxoState, digest, payment_hash_of
from fsm_bark.offboard_start import start_offboard
from fsm_bark.services import WalletConfig
from fsm_bark.services.ark_server import ServerUnavailable
from fsm_bark.sim import Fault, Faults
from fsm_bark.sim.ark_state import BOARD_PENDING

UNTIL_DONE = fsm.DriveMode.UNTIL_DONE
THRESHOLD = WalletConfig().vtxo_refresh_expiry_threshold
HTLC_DELTA = 60  # the sim server's htlc_send_expiry_delta


@pytest.fixture
def w(tmp_path: Path) -> Iterator[Rig]:
    rig = Rig(tmp_path)
    rig.world.fund_vtxos(rig.wallet, [50_000, 30_000])
    yield rig
    rig.close()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def movement_status(w: Rig, action_id: str) -> MovementStatus:
    m = w.wallet.movement_of(action_id)
    assert m is not None
    return m.status


# -- arkoor send -------------------------------------------------------------------------------


def test_arkoor_send_rejects_a_rewritten_cosign_and_delivers_what_the_server_made(w: Rig) -> None:
    """The payee's VTXO comes back one sat short: the send checks the outputs against its
    request (bark builds them from its own package) and retries; the replay is the truth."""
    w.world.script_fault("request_arkoor_cosign", Fault.REWRITE)
    action = run(start_arkoor_send(w.services, payee(), 20_000))
    assert run(w.start(action))
    assert run(w.drive(action.action.id, UNTIL_DONE)).status is fsm.DriveStatus.DONE
    [delivered] = w.world.server.mailbox(payee().mailbox_ids[0])
    assert delivered.amount == 20_000
    assert movement_status(w, action.action.id) is MovementStatus.SUCCESSFUL
    assert w.applied_by("request_arkoor_cosign") == 1
    assert w.problems() == []


def test_arkoor_send_believes_a_faked_delivery(w: Rig) -> None:
    """A post never forwarded looks delivered: nobody can tell (bark neither). The funds are
    the payee's on the server all the same; only the notice is missing."""
    w.world.script_fault("post_to_mailbox", Fault.FAKE_SUCCESS)
    action = run(start_arkoor_send(w.services, payee(), 20_000))
    assert run(w.start(action))
    assert run(w.drive(action.action.id, UNTIL_DONE)).status is fsm.DriveStatus.DONE
    assert w.world.server.mailbox(payee().mailbox_ids[0]) == []
    assert w.problems() == []


# -- offboard ----------------------------------------------------------------------------------


@pytest.mark.parametrize("rpc", ["request_arkoor_cosign", "prepare_offboard", "finish_offboard"])
def test_offboard_checks_every_answer_it_can_and_pays_exactly(w: Rig, rpc: str) -> None:
    """A split output one sat short, a prepared tx paying one sat less, a finished tx with its
    witnesses stripped: each is caught, and the retry (a replay) carries on."""
    w.world.script_fault(rpc, Fault.REWRITE)
    aid = run(w.start(run(start_offboard(w.services, "external:alice", amount=10_000))))
    assert run(w.drive(aid, UNTIL_DONE)).status is fsm.DriveStatus.DONE
    assert movement_status(w, aid) is MovementStatus.SUCCESSFUL
    paid = [
        o.amount
        for tx, _ in w.world.chain.effective()
        for o in tx.outputs
        if o.address == "external:alice"
    ]
    assert paid == [10_000]
    assert w.applied_by(rpc) == 1
    assert w.problems() == []


# -- lightning send ----------------------------------------------------------------------------


def invoice(w: Rig, *, fail: bool = False, pending_polls: int = 0) -> Any:
    inv = w.world.lightning.create_invoice(10_000, "coffee", f"inv-{fail}-{pending_polls}")
    w.world.lightning.set_outcome(inv.payment_hash, fail=fail, pending_polls=pending_polls)
    return inv


@pytest.mark.parametrize(
    ("rpc", "fail", "end"),
    [
        ("request_lightning_pay_htlc_cosign", False, "paid"),
        ("check_lightning_payment", False, "paid"),  # a forged preimage
        ("request_lightning_pay_htlc_revocation", True, "revoked"),
    ],
)
def test_lightning_send_checks_the_htlc_the_preimage_and_the_revocation(
    w: Rig, rpc: str, fail: bool, end: str
) -> None:
    inv = invoice(w, fail=fail)
    w.world.script_fault(rpc, Fault.REWRITE)
    result = run(pay_lightning_invoice(w.executor, inv, wait=True))
    assert (result.status, result.state) == (fsm.DriveStatus.DONE, end)
    preimage = w.wallet.paid_invoice(inv.payment_hash)
    assert (preimage is not None) == (end == "paid")
    assert preimage is None or payment_hash_of(preimage) == inv.payment_hash
    if end == "revoked":
        m = w.wallet.movement_of(lightning_send_id(inv.payment_hash))
        assert m is not None and m.effective_balance == 0
    assert w.problems() == []


def test_lightning_send_whose_initiation_was_faked_is_revoked_near_expiry(w: Rig) -> None:
    """The server never heard of the payment: it stays pending until the HTLC nears expiry,
    then the send revokes it and the money comes back."""
    inv = invoice(w)
    w.world.script_fault("initiate_lightning_payment", Fault.FAKE_SUCCESS)
    result = run(pay_lightning_invoice(w.executor, inv))
    assert result.state == "payment_initiated"
    w.world.mine(HTLC_DELTA - THRESHOLD + 1)
    done = run(w.executor.notify(lightning_send_id(inv.payment_hash), UNTIL_DONE))
    assert (done.status, done.state) == (fsm.DriveStatus.DONE, "revoked")
    assert w.problems() == []


# -- lightning receive -------------------------------------------------------------------------


def receive(w: Rig, name: str) -> fsm.Action[Any]:
    action, _ = run(start_lightning_receive(w.services, 10_000, preimage=digest(name)))
    assert run(w.executor.start(action))
    run(w.services.lightning.pay_invoice(action.data.invoice, f"payer.{name}"))
    return action


def test_lightning_receive_refuses_a_rewritten_grant_and_the_payer_is_refunded(w: Rig) -> None:
    """An HTLC one sat short, the fee to match: the grant no longer pays the invoice less the
    server's published fee, so it is refused before the preimage is out (bark: a rejected
    grant fails the receive); the server takes the HTLC back at its expiry."""
    w.world.script_fault("prepare_lightning_receive_claim", Fault.REWRITE)
    action = receive(w, "short")
    result = run(w.drive(action.id, UNTIL_DONE))
    assert (result.status, result.state) == (fsm.DriveStatus.FAILED, "refused")
    assert w.wallet.settled_receive(action.data.invoice.payment_hash) is None
    assert w.problems() == []
    w.world.mine(200)
    assert w.problems() == []


def test_lightning_receive_retries_a_rewritten_claim_and_settles(w: Rig) -> None:
    w.world.script_fault("claim_lightning_receive", Fault.REWRITE)
    action = receive(w, "claim")
    assert run(w.drive(action.id, UNTIL_DONE)).status is fsm.DriveStatus.DONE
    assert w.wallet.settled_receive(action.data.invoice.payment_hash) == 10_000 - 20
    assert w.applied_by("claim_lightning_receive") == 1
    assert w.problems() == []


def test_a_faked_cancel_leaves_the_receive_waiting_until_its_invoice_expires(w: Rig) -> None:
    """The cancel never reached the server: the receive sees its invoice still open and waits;
    unpaid, it expires as any unpaid invoice does."""
    action, _ = run(start_lightning_receive(w.services, 10_000, preimage=digest("cancel")))
    assert run(w.executor.start(action))
    w.world.script_fault("cancel_lightning_receive", Fault.FAKE_SUCCESS)
    assert run(cancel_receive(w.executor, action.data.invoice.payment_hash))
    canceled = run(w.drive(action.id))  # the cancel is not taken: the server says open
    assert (canceled.status, canceled.state) == (fsm.DriveStatus.PARKED, "awaiting_payment")
    assert [e.name for e in w.store.pending_events(action.id)] == ["ReceiveCanceled"]
    w.world.advance_time(3600 + 61)
    expired = run(w.drive(action.id, UNTIL_DONE))
    assert (expired.status, expired.state) == (fsm.DriveStatus.DONE, "expired")
    assert w.problems() == []


def test_a_rewritten_invoice_is_refused_at_start_and_the_retry_is_a_replay(w: Rig) -> None:
    w.world.script_fault("start_lightning_receive", Fault.REWRITE)
    with pytest.raises(ValueError, match="server invoice is for"):
        run(start_lightning_receive(w.services, 10_000, preimage=digest("again")))
    action, _ = run(start_lightning_receive(w.services, 10_000, preimage=digest("again")))
    assert action.data.invoice.payment_hash == payment_hash_of(digest("again"))
    assert w.applied_by("start_lightning_receive") == 1


# -- board -------------------------------------------------------------------------------------


def test_board_refuses_a_rewritten_cosign_and_a_retried_start_replays_it(tmp_path: Path) -> None:
    with Rig(tmp_path) as rig:
        rig.world.fund_onchain(100_000)
        funding = fund_board(rig.services, 40_000, fee=500)
        rig.world.script_fault("request_board_cosign", Fault.REWRITE)
        with pytest.raises(BoardError, match="unexpected board VTXO"):
            run(start_board(rig.services, funding))
        aid = run(rig.start(run(start_board(rig.services, funding))))
        assert run(rig.drive(aid)).state == "confirming"  # broadcast: now it can confirm
        rig.world.mine(2)
        assert run(rig.drive(aid, UNTIL_DONE)).status is fsm.DriveStatus.DONE
        assert rig.applied_by("request_board_cosign") == 1
        assert rig.problems() == []


def test_board_believes_a_faked_registration(tmp_path: Path) -> None:
    """A registration never forwarded: the wallet counts the VTXO as spendable, the server
    still has it pending (nobody can tell; bark neither). No money moves: the world's books
    count it as a board in flight, and a spend of it is refused."""
    with Rig(tmp_path) as rig:
        rig.world.fund_onchain(100_000)
        aid = run(
            rig.start(run(start_board(rig.services, fund_board(rig.services, 40_000, fee=500))))
        )
        assert run(rig.drive(aid)).state == "confirming"  # broadcast: now it can confirm
        rig.world.mine(2)
        rig.world.script_fault("register_board_vtxo", Fault.FAKE_SUCCESS)
        assert run(rig.drive(aid, UNTIL_DONE)).status is fsm.DriveStatus.DONE
        [(vtxo, state)] = rig.wallet.vtxos()
        assert state is VtxoState.SPENDABLE
        row = rig.world.server.vtxo(vtxo.id)
        assert row is not None and row[1] == BOARD_PENDING
        assert rig.problems() == []


# -- every kind at once, lies at random --------------------------------------------------------


@pytest.mark.parametrize("seed", [21, 5, 9])
def test_random_lies_lose_and_double_spend_nothing(tmp_path: Path, seed: int) -> None:
    """A board, an arkoor send, an offboard, a paid and a failed lightning send and a paid
    receive, under lies, lost answers and drops at random: every action ends and the
    invariants hold."""
    lies = Faults(fake_success=0.1, rewrite=0.15, lose_response=0.1, drop_request=0.05)
    with Rig(tmp_path, seed=seed, faults=lies) as rig:
        rig.world.fund_vtxos(rig.wallet, [40_000] * 6)
        rig.world.fund_onchain(100_000)
        funding = fund_board(rig.services, 40_000, fee=500)

        async def start(make: Callable[[], Awaitable[Any]]) -> None:
            """A start refused or lost before the action exists is simply made again."""
            for _ in range(20):
                try:
                    await make()
                    return
                except (ValueError, fsm.Rejected, ServerUnavailable):
                    continue
            raise AssertionError("could not start")

        async def go() -> None:
            async def arkoor() -> None:
                await rig.start(await start_arkoor_send(rig.services, payee(), 10_000))

            async def offboard() -> None:
                await rig.start(await start_offboard(rig.services, "external:bob", amount=10_000))

            async def board() -> None:
                await rig.start(await start_board(rig.services, funding))

            async def receive() -> None:
                preimage = digest(f"random.{seed}")
                action, _ = await start_lightning_receive(rig.services, 10_000, preimage=preimage)
                await rig.executor.start(action)
                await rig.services.lightning.pay_invoice(action.data.invoice, "payer.random")

            await start(board)
            await start(arkoor)
            await start(offboard)
            await start(receive)
            for n in range(2):
                inv = invoice(rig, fail=n == 1)
                await start(lambda inv=inv: pay_lightning_invoice(rig.executor, inv))
            for _ in range(60):
                await rig.executor.resume_all()
                if not rig.store.rows():
                    break
                rig.world.mine(1)
                rig.world.advance_time(30.0)

        run(go())
        assert [(r.id, r.state) for r in rig.store.rows()] == []
        assert rig.problems() == []
        seen = {fault for _, fault in rig.world.gate.log()}
        assert {Fault.REWRITE, Fault.FAKE_SUCCESS} <= seen
