"""The offboard kind (bark reference 2.2), both flavours, against the simulated world."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import attrs
import pytest
from processes import after_call, after_commits
from wallet_rig import DoubleStepper, Rig, kill_then_resume

import fsm
from fsm_bark.model import MovementStatus, Tx, VtxoState
from fsm_bark.offboard import OffboardKind, confirmed_enough
from fsm_bark.offboard_model import Offboard
from fsm_bark.offboard_start import start_offboard
from fsm_bark.services import WalletConfig
from fsm_bark.services.chain import TxState, TxStatus
from fsm_bark.sim import Fault
from fsm_bark.sim.ledger import Flow

DEST = "external:alice"


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    r = Rig(tmp_path)
    r.inputs = r.world.fund_vtxos(r.wallet, [50_000, 30_000])  # type: ignore[attr-defined]
    yield r
    r.close()


async def whole(rig: Any) -> str:
    return await rig.start(await start_offboard(rig.services, DEST, vtxo_ids=[rig.inputs[0].id]))


def movement_of(rig: Rig, aid: str) -> Any:
    movement = rig.wallet.movement_of(aid)
    assert movement is not None
    return movement


def test_offboard_whole_happy_path(rig: Any) -> None:
    async def go() -> None:
        aid = await whole(rig)
        r = await rig.drive(aid)
        assert r.status is fsm.DriveStatus.DONE  # 0 confirmations required off mainnet
        assert rig.wallet.vtxo_state(rig.inputs[0].id) is VtxoState.SPENT
        m = movement_of(rig, aid)
        assert m.status is MovementStatus.SUCCESSFUL
        assert (m.intended_balance, m.effective_balance, m.fee) == (-50_000, -50_000, 100)
        assert rig.world.ledger.totals()[Flow.OFFBOARD_OUT] == 49_900
        assert rig.held() == {} and rig.problems() == []

    asyncio.run(go())


def test_send_onchain_splits_then_offboards_the_exact_amount(tmp_path: Path) -> None:
    async def go() -> None:
        rig = Rig(tmp_path, config=WalletConfig(offboard_required_confirmations=2))
        rig.world.fund_vtxos(rig.wallet, [50_000])
        aid = await rig.start(await start_offboard(rig.services, DEST, amount=10_000))
        d = rig.data(aid)
        assert d.send_onchain.change_pieces == [19_950, 19_950]  # change > amount: split in 2
        r = await rig.drive(aid)
        assert (r.status, r.state) == (fsm.DriveStatus.PARKED, "awaiting_confirmations")
        d = rig.data(aid)
        assert len(d.change_vtxo_ids) == 2
        assert {v.id for v in rig.wallet.spendable_vtxos()} == set(d.change_vtxo_ids)
        rig.world.mine(2)
        assert (await rig.drive(aid)).status is fsm.DriveStatus.DONE
        m = movement_of(rig, aid)
        assert (m.kind, m.intended_balance, m.effective_balance) == (
            "send_onchain",
            -10_000,
            -10_100,
        )
        assert m.produced == d.change_vtxo_ids and m.status is MovementStatus.SUCCESSFUL
        assert rig.problems() == []
        rig.close()

    asyncio.run(go())


def test_start_fails_and_releases_when_an_input_is_gone(rig: Any) -> None:
    async def go() -> None:
        aid = await whole(rig)
        spendable = frozenset({VtxoState.SPENDABLE})
        rig.wallet.set_vtxo_state([rig.inputs[0].id], VtxoState.SPENT, allowed_from=spendable)
        r = await rig.drive(aid)
        assert r.status is fsm.DriveStatus.FAILED and "not spendable" in str(r.error)
        assert rig.held() == {} and rig.wallet.movement_of(aid) is None

    asyncio.run(go())


def test_refused_arkoor_split_fails_the_movement_and_releases_the_inputs(rig: Any) -> None:
    async def go() -> None:
        aid = await rig.start(await start_offboard(rig.services, DEST, amount=10_000))
        rig.world.script_fault("request_arkoor_cosign", Fault.REJECT_INVALID_ARGUMENT)
        r = await rig.drive(aid)
        assert r.status is fsm.DriveStatus.FAILED  # bark retried this forever (defect 8)
        m = movement_of(rig, aid)
        assert (m.status, m.effective_balance) == (MovementStatus.FAILED, 0)
        assert rig.held() == {} and len(rig.wallet.spendable_vtxos()) == 2
        assert rig.problems() == []

    asyncio.run(go())


@pytest.mark.parametrize("refusing", ["request_arkoor_cosign", "register_vtxo_transactions"])
def test_refused_retry_after_a_lost_split_answer_asks_the_server(rig: Any, refusing: str) -> None:
    """The split happened, its answer was lost, and the retry is refused (the cosign, or the
    inputs' registration before it). Abandoning would release inputs the server has spent and
    forget the split's outputs: the offboard asks the server, finds the inputs spent, and
    adopts the split (a replay)."""

    async def go() -> None:
        aid = await rig.start(await start_offboard(rig.services, DEST, amount=10_000))
        rig.world.script_fault("request_arkoor_cosign", Fault.LOSE_RESPONSE)
        assert (await rig.drive(aid)).state == "split_with_arkoor"
        rig.world.script_fault(refusing, Fault.REJECT_INVALID_ARGUMENT)
        rig.world.advance_time(60)
        assert (await rig.drive(aid)).status is fsm.DriveStatus.DONE
        steps = [(t.from_state, t.to_state) for t in rig.store.transitions(aid)]
        assert ("split_refused", "arkoor_registration_required") in steps
        assert movement_of(rig, aid).status is MovementStatus.SUCCESSFUL
        assert rig.applied_by("request_arkoor_cosign") == 1
        assert rig.held() == {} and rig.problems() == []

    asyncio.run(go())


def test_a_refused_replay_of_a_split_the_server_made_parks_with_the_inputs_locked(
    rig: Any,
) -> None:
    """The split happened, its answer was lost, the retry and the adopting replay are both
    refused: the offboard holds in split_refused. The inputs the server spent are locked
    (bark's Locked{Action}): not spendable in the wallet, and the invariants agree."""

    async def go() -> None:
        aid = await rig.start(await start_offboard(rig.services, DEST, amount=10_000))
        spent = rig.inputs[0]  # the larger one covers 10 000 and the fee
        rig.world.script_fault("request_arkoor_cosign", Fault.LOSE_RESPONSE)
        assert (await rig.drive(aid)).state == "split_with_arkoor"
        rig.world.script_fault("request_arkoor_cosign", Fault.REJECT_INVALID_ARGUMENT, times=2)
        rig.world.advance_time(60)
        r = await rig.drive(aid)
        assert (r.status, r.state) == (fsm.DriveStatus.PARKED, "split_refused")
        assert rig.world.server.vtxo(spent.id)[1] == "spent"
        assert [v.id for v in rig.wallet.locked_vtxos()] == [spent.id]
        assert spent.id not in {v.id for v in rig.wallet.spendable_vtxos()}
        assert rig.problems() == []
        assert (await rig.executor.notify(aid)).status is fsm.DriveStatus.DONE
        assert movement_of(rig, aid).status is MovementStatus.SUCCESSFUL
        assert rig.held() == {} and rig.problems() == []

    asyncio.run(go())


def test_refused_input_registration_fails_cleanly(rig: Any) -> None:
    async def go() -> None:
        aid = await rig.start(await start_offboard(rig.services, DEST, amount=10_000))
        rig.world.script_fault("register_vtxo_transactions", Fault.REJECT_NOT_FOUND)
        r = await rig.drive(aid)  # nothing was spent yet: fail, release the inputs
        assert (r.status, r.state) == (fsm.DriveStatus.FAILED, "failed")  # the terminal state
        assert rig.held() == {} and rig.problems() == []

    asyncio.run(go())


def test_refused_split_registration_parks_with_the_error_until_notified(rig: Any) -> None:
    def refuse_registration_after_split(action_id: str, entry: Any) -> None:
        if entry.from_state == "split_with_arkoor" and entry.outcome == "next":
            rig.world.script_fault("register_vtxo_transactions", Fault.REJECT_INVALID_ARGUMENT)

    async def go() -> None:
        rig.executor.on_commit = refuse_registration_after_split
        aid = await rig.start(await start_offboard(rig.services, DEST, amount=10_000))
        r = await rig.drive(aid)  # bark wrapped this refusal: its handler never ran
        assert (r.status, r.state) == (fsm.DriveStatus.PARKED, "arkoor_registration_required")
        assert isinstance(r.error, fsm.Rejected) and rig.row(aid).wake_at is None
        assert len(rig.held()) == 3  # the split outputs stay held: nothing is released
        rig.executor.on_commit = None
        assert (await rig.executor.notify(aid)).status is fsm.DriveStatus.DONE
        assert rig.problems() == []

    asyncio.run(go())


def test_refused_prepare_without_prior_tx_fails(rig: Any) -> None:
    async def go() -> None:
        aid = await whole(rig)
        rig.world.set_offboard_fee_rate(70)  # "fee rate is no longer valid"
        r = await rig.drive(aid)
        assert r.status is fsm.DriveStatus.FAILED
        assert movement_of(rig, aid).status is MovementStatus.FAILED
        assert rig.held() == {} and rig.problems() == []

    asyncio.run(go())


def test_a_refused_offboard_keeps_the_servers_reason(rig: Any) -> None:
    """The server's refusal is on the result and on the failed movement, not only in the
    transition log (bark's run_offboard returns the server's error)."""

    async def go() -> None:
        start = start_offboard(rig.services, "blocked:bob", vtxo_ids=[rig.inputs[0].id])
        aid = await rig.start(await start)
        r = await rig.drive(aid)
        assert r.status is fsm.DriveStatus.FAILED and "output address is blocked" in str(r.error)
        m = movement_of(rig, aid)
        assert m.status is MovementStatus.FAILED
        assert "output address is blocked" in m.metadata["failure"]
        assert rig.held() == {} and rig.problems() == []

    asyncio.run(go())


async def to_prepared(rig: Any) -> str:
    """An OffboardWhole whose finish runs into a server restart: parked in ready_for_offboard
    with ``prior_txid`` (its session is gone, the tx is nowhere)."""
    aid = await whole(rig)
    rig.world.script_fault("finish_offboard", Fault.RESTART)
    r = await rig.drive(aid)
    assert (r.state, r.error) == ("offboard_tx_prepared", None)
    r = await rig.drive(aid)  # the retry finds no session: NotFound
    assert r.state == "ready_for_offboard" and rig.row(aid).wake_at is not None
    assert rig.data(aid).prior_txid is not None
    return aid


def test_lost_finish_session_prepares_again(rig: Any) -> None:
    async def go() -> None:
        aid = await to_prepared(rig)
        rig.world.advance_time(30)
        assert (await rig.drive(aid)).status is fsm.DriveStatus.DONE
        assert rig.problems() == []

    asyncio.run(go())


def test_lost_session_with_spendable_proof_fails(rig: Any) -> None:
    async def go() -> None:
        aid = await to_prepared(rig)
        rig.world.set_offboard_fee_rate(70)
        r = await rig.drive(aid)
        assert r.status is fsm.DriveStatus.FAILED and rig.held() == {}
        assert rig.problems() == []

    asyncio.run(go())


def test_finish_refused_but_tx_on_chain_is_adopted(rig: Any) -> None:
    async def go() -> None:
        aid = await whole(rig)
        rig.world.script_fault("finish_offboard", Fault.LOSE_RESPONSE)  # applied, broadcast
        rig.world.script_fault("finish_offboard", Fault.REJECT_NOT_FOUND)
        await rig.drive(aid)
        r = await rig.drive(aid)
        assert r.status is fsm.DriveStatus.DONE
        assert [e.applied for e in rig.world.ledger.entries() if e.rpc == "finish_offboard"] == [1]
        assert rig.problems() == []

    asyncio.run(go())


def test_prior_tx_found_on_chain_at_reprepare_is_adopted(rig: Any) -> None:
    async def go() -> None:
        aid = await whole(rig)
        rig.world.script_fault("finish_offboard", Fault.LOSE_RESPONSE)
        rig.world.script_fault("finish_offboard", Fault.REJECT_NOT_FOUND)
        assert (await rig.drive(aid)).state == "offboard_tx_prepared"
        txid = rig.data(aid).offboard_tx.txid
        signed = rig.world.chain.tx(txid)
        rig.world.chain.evict(txid)  # our view: the tx is nowhere
        rig.world.restart_server()  # and the prepare session is gone
        r = await rig.drive(aid)
        assert r.state == "ready_for_offboard" and rig.data(aid).prior_txid == txid
        r = await rig.drive(aid)  # re-prepare: "inputs spent", prior not visible: keep looking
        assert r.state == "ready_for_offboard" and isinstance(r.error, fsm.Rejected)
        rig.world.chain.broadcast(signed)  # the server's broadcast reaches us
        assert (await rig.drive(aid)).status is fsm.DriveStatus.DONE
        assert rig.problems() == []

    asyncio.run(go())


def test_evicted_tx_is_rebroadcast_then_lost_after_grace(tmp_path: Path) -> None:
    async def go() -> None:
        rig = Rig(tmp_path, config=WalletConfig(offboard_required_confirmations=1))
        [v] = rig.world.fund_vtxos(rig.wallet, [50_000])
        aid = await rig.start(await start_offboard(rig.services, DEST, vtxo_ids=[v.id]))
        assert (await rig.drive(aid)).state == "awaiting_confirmations"
        tx = rig.world.chain.tx(rig.data(aid).offboard_tx.txid)
        rig.world.chain.evict(tx.txid)
        rig.world.advance_time(30)
        assert (await rig.drive(aid)).state == "awaiting_confirmations"
        assert rig.world.chain.status(tx.txid).state is TxState.MEMPOOL  # re-broadcast
        rig.world.chain.evict(tx.txid)
        rig.world.advance_time(3_601)
        r = await rig.drive(aid)
        assert (r.state, rig.row(aid).wake_at) == ("lost", None)
        assert rig.held()  # the VTXOs stay held: the server can still confirm the tx
        rig.world.chain.broadcast(tx)
        rig.world.mine(1)
        assert (await rig.drive(aid)).status is fsm.DriveStatus.DONE
        assert rig.problems() == []
        rig.close()

    asyncio.run(go())


class LaggingChain:
    """A chain whose tip read lags the block the tx is in (bark's underflow, defect 13)."""

    async def tip_height(self) -> int:
        return 5

    async def tx_status(self, txid: str) -> TxStatus:
        return TxStatus(TxState.CONFIRMED, 7)


def test_confirmations_never_underflow(rig: Any) -> None:
    async def go() -> None:
        aid = await whole(rig)
        await rig.drive(aid)  # settled at once: required is 0; look at a copy of its data
        lagging = attrs.evolve(
            rig.services,
            chain=LaggingChain(),
            config=WalletConfig(offboard_required_confirmations=2),
        )
        stepper = DoubleStepper(rig, OffboardKind.create(DATA_WITH_TX))
        ctx = stepper.context()
        ctx.services = lagging
        assert not await confirmed_enough(ctx, DATA_WITH_TX)

    asyncio.run(go())


DATA_WITH_TX = Offboard(
    "0" * 32, DEST, 1_000, 100, 50, ["a:0"], offboard_tx=Tx.build([], [], signed=True)
)


@pytest.mark.parametrize("flavour", ["whole", "send_onchain"])
def test_every_step_is_idempotent(rig: Any, flavour: str) -> None:
    async def go() -> None:
        if flavour == "whole":
            action, resources = await start_offboard(
                rig.services, DEST, vtxo_ids=[rig.inputs[0].id]
            )
        else:
            action, resources = await start_offboard(rig.services, DEST, amount=10_000)
        stepper = DoubleStepper(rig, action, resources)
        assert isinstance(await stepper.until_park(), fsm.Done)
        expected = ["start", "ready_for_offboard", "offboard_tx_prepared", "ready_for_broadcast"]
        if flavour == "send_onchain":
            expected[1:1] = ["split_with_arkoor", "arkoor_registration_required"]
        assert stepper.states == [*expected, "awaiting_confirmations"]
        assert all(applied <= 1 for _, applied in rig.ledger())

    asyncio.run(go())


@pytest.mark.parametrize(
    "rpc",
    [
        "request_arkoor_cosign",
        "register_vtxo_transactions",
        "prepare_offboard",
        "finish_offboard",
    ],
)
def test_lost_responses_are_replayed_not_repeated(rig: Any, rpc: str) -> None:
    async def go() -> None:
        aid = await rig.start(await start_offboard(rig.services, DEST, amount=10_000))
        rig.world.script_fault(rpc, Fault.LOSE_RESPONSE)
        r = await rig.drive(aid)
        assert r.status is fsm.DriveStatus.PARKED and rig.row(aid).last_error
        rig.world.advance_time(60)
        assert (await rig.drive(aid)).status is fsm.DriveStatus.DONE
        replayed = [e for e in rig.world.ledger.entries() if e.rpc == rpc and e.attempts == 2]
        assert replayed and all(e.applied <= 1 for e in replayed)
        assert rig.problems() == []

    asyncio.run(go())


@pytest.mark.slow
@pytest.mark.parametrize(
    "kill",
    [
        after_commits(2),
        after_commits(5),
        after_call("register_vtxo_transactions", 2),  # the split outputs' registration
        after_call("finish_offboard"),
    ],
)
def test_resumes_after_sigkill(tmp_path: Path, kill: str) -> None:
    rig = Rig(tmp_path)
    rig.world.fund_vtxos(rig.wallet, [50_000, 30_000])
    aid = asyncio.run(rig.start(asyncio.run(start_offboard(rig.services, DEST, amount=10_000))))
    rig.close()
    kill_then_resume(tmp_path, "resume", kill=kill)
    with Rig(tmp_path) as rig:
        assert rig.row(aid) is None
        assert movement_of(rig, aid).status is MovementStatus.SUCCESSFUL
        assert rig.problems() == []
