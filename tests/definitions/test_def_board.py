"""The board kind (bark reference 2.1) against the simulated world."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from processes import after_call, after_commits
from wallet_rig import DoubleStepper, Rig, kill_then_resume

import fsm
from fsm_bark.board import Probe, fund_board, start_board
from fsm_bark.model import MovementStatus, VtxoState, vtxo_resource
from fsm_bark.sim import Fault


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    r = Rig(tmp_path)
    r.world.fund_onchain(100_000)
    yield r
    r.close()


async def board(rig: Rig, *, signed: bool = True) -> str:
    return await rig.start(
        await start_board(rig.services, fund_board(rig.services, 40_000, fee=500, signed=signed))
    )


def test_happy_path_registers_after_the_required_confirmations(rig: Rig) -> None:
    async def go() -> None:
        aid = await board(rig)
        vtxo = rig.data(aid).vtxo
        assert rig.held() == {vtxo_resource(vtxo.id): aid}
        r = await rig.drive(aid)
        assert (r.status, r.state) == (fsm.DriveStatus.PARKED, "confirming")
        assert rig.wallet.vtxo_state(vtxo.id) is VtxoState.SPENDABLE
        assert rig.wallet.spendable_vtxos() == []  # held by the board until registered
        rig.world.mine(1)
        assert (await rig.drive(aid)).state == "confirming"  # 1 of 2 confirmations
        assert rig.data(aid).confirmations == 1
        rig.world.mine(1)
        assert (await rig.drive(aid)).status is fsm.DriveStatus.DONE
        assert rig.wallet.spendable_vtxos() == [vtxo]
        movement = rig.wallet.movement_of(aid)
        assert movement is not None and movement.status is MovementStatus.SUCCESSFUL
        assert (movement.intended_balance, movement.effective_balance) == (40_000, 39_800)
        assert rig.held() == {}
        assert vtxo.id in [
            v.id for v in await rig.services.server.read_mailbox(rig.wallet.mailbox_id())
        ]
        assert rig.problems() == []

    asyncio.run(go())


def test_a_psbt_is_not_ours_to_broadcast_the_probe_waits_for_it(rig: Rig) -> None:
    async def go() -> None:
        aid = await board(rig, signed=False)
        assert (await rig.drive(aid)).state == "confirming"
        d = rig.data(aid)
        assert d.probe is Probe.UNDECIDED
        assert d.last_park_error == "awaiting external funding broadcast"
        rig.world.chain.broadcast(d.funding.with_signatures())  # the other party signs it
        rig.world.mine(2)
        assert (await rig.drive(aid)).status is fsm.DriveStatus.DONE
        assert rig.problems() == []

    asyncio.run(go())


def test_confirmed_double_spend_tears_the_board_down(rig: Rig) -> None:
    async def go() -> None:
        aid = await board(rig)
        await rig.drive(aid)
        d = rig.data(aid)
        rig.world.chain.double_spend(d.funding)  # mined conflicting spend of its inputs
        r = await rig.drive(aid)
        assert r.status is fsm.DriveStatus.DONE
        assert rig.wallet.vtxo_state(d.vtxo.id) is VtxoState.SPENT
        movement = rig.wallet.movement_of(aid)
        assert movement is not None
        assert (movement.status, movement.effective_balance) == (MovementStatus.FAILED, 0)
        assert rig.held() == {}
        assert rig.problems() == []

    asyncio.run(go())


def test_funding_input_spent_before_the_first_broadcast_tears_down(rig: Rig) -> None:
    """The broadcast is refused for a spent input: no retry loop, the probe decides."""

    async def go() -> None:
        aid = await board(rig)
        d = rig.data(aid)
        rig.world.chain.double_spend(d.funding)  # spent (and mined) before we broadcast
        r = await rig.drive(aid)
        assert r.status is fsm.DriveStatus.DONE
        steps = [(t.from_state, t.to_state) for t in rig.store.transitions(aid)]
        assert steps[0] == ("broadcasting", "confirming")  # not a retry park
        assert rig.wallet.vtxo_state(d.vtxo.id) is VtxoState.SPENT
        movement = rig.wallet.movement_of(aid)
        assert movement is not None and movement.status is MovementStatus.FAILED
        assert rig.held() == {}
        assert rig.problems() == []

    asyncio.run(go())


def test_evicted_funding_is_rebroadcast_by_the_probe(rig: Rig) -> None:
    async def go() -> None:
        aid = await board(rig)
        await rig.drive(aid)
        rig.world.chain.evict(rig.data(aid).funding.txid)
        rig.world.advance_time(60)
        assert (await rig.drive(aid)).state == "confirming"
        assert rig.data(aid).probe is None and rig.data(aid).confirmations == 0
        rig.world.mine(2)
        assert (await rig.drive(aid)).status is fsm.DriveStatus.DONE

    asyncio.run(go())


def test_exited_vtxo_and_an_unfinished_teardown_end_the_board(rig: Rig) -> None:
    async def go() -> None:
        for state in (VtxoState.EXITED, VtxoState.SPENT):
            aid = await board(rig)
            await rig.drive(aid)
            vtxo_id = rig.data(aid).vtxo.id
            allowed = frozenset({VtxoState.SPENDABLE})
            rig.wallet.set_vtxo_state([vtxo_id], state, allowed_from=allowed)
            assert (await rig.drive(aid)).status is fsm.DriveStatus.DONE
            movement = rig.wallet.movement_of(aid)
            assert movement is not None and movement.status is MovementStatus.FAILED
            rig.world.mine(1)

    asyncio.run(go())


@pytest.mark.parametrize(
    "fault", [Fault.REJECT_INVALID_ARGUMENT, Fault.DROP_REQUEST, Fault.LOSE_RESPONSE]
)
def test_a_failed_registration_parks_with_the_reason_and_is_tried_again(
    rig: Rig, fault: Fault
) -> None:
    async def go() -> None:
        aid = await board(rig)
        await rig.drive(aid)
        rig.world.mine(2)
        rig.world.script_fault("register_board_vtxo", fault)
        r = await rig.drive(aid)
        assert (r.status, r.state) == (fsm.DriveStatus.PARKED, "confirming")
        assert rig.data(aid).last_park_error
        rig.world.advance_time(60)
        assert (await rig.drive(aid)).status is fsm.DriveStatus.DONE
        assert rig.problems() == []

    asyncio.run(go())


def test_near_expiry_starts_an_exit_and_keeps_trying_to_register(rig: Rig) -> None:
    async def go() -> None:
        aid = await board(rig)
        await rig.drive(aid)
        vtxo = rig.data(aid).vtxo
        rig.world.script_fault("register_board_vtxo", Fault.REJECT_INVALID_ARGUMENT, times=1000)
        rig.world.mine(vtxo.expiry_height - rig.world.chain.tip() - 1)
        assert (await rig.drive(aid)).state == "confirming"
        assert rig.wallet.exiting(vtxo.id)
        movement = rig.wallet.movement_of(aid)
        assert movement is not None and movement.metadata["exited_vtxo"] == vtxo.id
        rig.world.db.run("DELETE FROM fault_script")
        rig.world.advance_time(60)
        assert (await rig.drive(aid)).status is fsm.DriveStatus.DONE  # the exit is not undone

    asyncio.run(go())


def test_starting_twice_keeps_one_action_one_movement(rig: Rig) -> None:
    async def go() -> None:
        action, resources = await start_board(
            rig.services, fund_board(rig.services, 40_000, fee=500)
        )
        assert await rig.executor.start(action, resources=resources)
        await rig.drive(action.id)
        again, resources2 = await start_board(rig.services, action.data.funding)
        assert again.id == action.id and resources2 == resources
        assert not await rig.executor.start(again, resources=resources2)
        assert rig.row(action.id).state == "confirming"  # not back to broadcasting
        assert len(rig.wallet.movements()) == 1

    asyncio.run(go())


def test_deleting_a_board_releases_its_vtxo(rig: Rig) -> None:
    async def go() -> None:
        aid = await board(rig)
        await rig.drive(aid)
        assert rig.held()
        assert await rig.executor.delete(aid)
        assert rig.held() == {}

    asyncio.run(go())


def test_every_step_is_idempotent(rig: Rig) -> None:
    async def go() -> None:
        action, resources = await start_board(
            rig.services, fund_board(rig.services, 40_000, fee=500)
        )
        stepper = DoubleStepper(rig, action, resources)
        assert isinstance(await stepper.until_park(), fsm.Park)
        rig.world.mine(2)
        rig.world.advance_time(60)
        assert isinstance(await stepper.until_park(), fsm.Done)
        assert stepper.states == [
            "broadcasting",
            "confirming",
            "assessing",
            "salvaging",
            "confirming",
            "assessing",
            "registering",
        ]
        assert all(applied == 1 for _, applied in rig.ledger())

    asyncio.run(go())


@pytest.mark.slow
@pytest.mark.parametrize(
    "kill", [after_commits(1), after_commits(3), after_call("info", 1), after_call("info", 2)]
)
def test_resumes_after_sigkill(tmp_path: Path, kill: str) -> None:
    rig = Rig(tmp_path)
    rig.world.fund_onchain(100_000)
    aid = asyncio.run(board(rig))
    rig.close()
    kill_then_resume(tmp_path, "resume", kill=kill)
    with Rig(tmp_path) as rig:
        assert rig.row(aid) is None
        movement = rig.wallet.movement_of(aid)
        assert movement is not None and movement.status is MovementStatus.SUCCESSFUL
        assert rig.problems() == []
