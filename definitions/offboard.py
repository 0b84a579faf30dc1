"""Offboard: send Ark funds to an on-chain address (bark reference 2.2), as a declarative kind.

Two flavours share one table. *OffboardWhole* forfeits whole VTXOs, the fee taken from the
gross (`start_offboard` with ``vtxo_ids``). *SendOnchain* pays an exact amount: an arkoor
split first makes a VTXO of exactly amount + fee (plus change), which is then offboarded
(`start_offboard` with ``amount``).

This module is the table and the phases after the split: prepare, finish, broadcast, the
confirmations and the rejection handlers. The checkpoint is in `offboard_model`, the arkoor
split in `offboard_split`, the starter in `offboard_start`.

The inputs are held as fsm resources ``vtxo.<id>`` from the first checkpoint on (the starter
returns them for ``Executor.start``), so no crash can leave them locked by an action
that does not exist. Every server call that refuses keeps its typed status (``fsm.Rejected``),
so the rejection handling bark wrote for the arkoor split and its registration actually runs.
See docs/definitions/offboard.md for the table and the defects fixed.
"""

from __future__ import annotations

import attrs

import fsm
from fsm import Kind, RetryPolicy, State

from .model import MovementStatus, MovementUpdate, Tx, VtxoState, digest, vtxo_resource
from .offboard_model import UNSPENT, Ctx, Offboard, offboard_movement, offboard_tx
from .offboard_split import arkoor_split, register_split, split_made
from .services import Services
from .services.ark_records import OffboardRequest
from .services.chain import TxState

POLL_SECONDS = 30.0
"""bark's offboard poll: confirmations, re-broadcasts and re-prepares every 30 s."""
SPENDABLE_PROOFS = (
    "fee rate is no longer valid",
    "does not match expected amount",
    "output address is blocked",
)
"""Refusals the server gives only after checking the inputs are unspent (reference 2.2)."""


async def _on_chain(ctx: Ctx, txid: str) -> Tx | None:
    """The tx, if the chain has it in the mempool or a block."""
    status = await ctx.services.chain.tx_status(txid)
    if status.state is TxState.NOT_FOUND:
        return None
    return await ctx.services.chain.get_tx(txid)


def _adopt(ctx: Ctx, d: Offboard, tx: Tx) -> fsm.Outcome:
    """The tx is out there: follow it to its confirmations instead of preparing again."""
    adopted = attrs.evolve(
        d,
        offboard_tx=tx,
        movement_id=offboard_movement(ctx.services.wallet, d),
        created_at=ctx.now,
        prior_txid=None,
    )
    return OffboardKind.goto(adopted, OffboardKind.awaiting_confirmations)


# -- start -------------------------------------------------------------------------------------


def is_send_onchain(ctx: Ctx, d: Offboard) -> bool:
    return d.send_onchain is not None


def check_inputs(ctx: Ctx, d: Offboard) -> Offboard:
    """bark locks the inputs here; fsm took them with the first checkpoint. Check that they
    are still spendable and ours: if not, the offboard fails at once (nothing happened)."""
    wallet = ctx.services.wallet
    for vid in d.input_vtxo_ids:
        if wallet.vtxo_state(vid) is not VtxoState.SPENDABLE or not ctx.holds(vtxo_resource(vid)):
            raise ValueError(f"input {vid} is not spendable and held by this offboard")
    return attrs.evolve(d, offboard_vtxo_ids=sorted(d.input_vtxo_ids))


# -- prepare, finish, broadcast ----------------------------------------------------------------


def offboard_request(d: Offboard) -> OffboardRequest:
    """Sorted inputs and the fee rate committed at start: the server replays identical
    requests."""
    return OffboardRequest(
        sorted(d.offboard_vtxo_ids),
        d.destination,
        d.onchain_output_amount,
        d.send_onchain is None,
        d.committed_fee_rate,
    )


async def prepare(ctx: Ctx, d: Offboard) -> Offboard:
    """Ask the server for the unsigned offboard tx; check it pays what we asked."""
    req = offboard_request(d)
    prepared = await ctx.services.server.prepare_offboard(req, ctx.idempotency_key)
    tx = prepared.unsigned_tx
    paid = sum(o.amount for o in tx.outputs if o.address == d.destination)
    if paid != d.onchain_output_amount:
        raise ValueError(f"prepared tx {tx.txid} pays {paid}, not {d.onchain_output_amount}")
    return attrs.evolve(
        d,
        offboard_tx=tx,
        forfeit_nonces=list(prepared.forfeit_nonces),
        movement_id=offboard_movement(ctx.services.wallet, d),
    )


async def finish(ctx: Ctx, d: Offboard) -> Offboard:
    """Sign the forfeits (never stored: made again on every attempt; the sim has no
    cryptography, so they are a digest of what they sign) and have the server finish."""
    tx = offboard_tx(d)
    signatures = [
        digest("forfeit", tx.txid, vid, server_nonce)
        for vid, server_nonce in zip(sorted(d.offboard_vtxo_ids), d.forfeit_nonces, strict=True)
    ]
    signed = await ctx.services.server.finish_offboard(tx.txid, signatures, ctx.idempotency_key)
    if signed.txid != tx.txid or not signed.signed:
        raise ValueError(f"server returned {signed.txid} (signed={signed.signed}) for {tx.txid}")
    assert d.movement_id is not None
    ctx.services.wallet.update_movement(
        d.movement_id, MovementUpdate(metadata={"offboard_txid": signed.txid})
    )
    return attrs.evolve(d, offboard_tx=signed, forfeit_nonces=[])


async def broadcast(ctx: Ctx, d: Offboard) -> Offboard:
    """Broadcast the signed tx (a tx the chain knows is accepted again silently)."""
    await ctx.services.chain.broadcast(offboard_tx(d))
    return attrs.evolve(d, created_at=ctx.now)


# -- awaiting confirmations --------------------------------------------------------------------


async def confirmed_enough(ctx: Ctx, d: Offboard) -> bool:
    """confs = tip - height + 1, saturating (bark's unchecked subtraction could wrap)."""
    chain, need = ctx.services.chain, ctx.services.config.offboard_required_confirmations
    tip = await chain.tip_height()  # an error here is transient: backoff
    try:
        status = await chain.tx_status(offboard_tx(d).txid)
    except Exception as exc:
        ctx.log.warning("tx status unknown: %s", exc)
        return False
    if status.state is TxState.MEMPOOL:
        return need == 0
    return status.state is TxState.CONFIRMED and status.confirmations(tip) >= need


async def missing(ctx: Ctx, d: Offboard) -> bool:
    try:
        status = await ctx.services.chain.tx_status(offboard_tx(d).txid)
    except Exception:
        return False
    return status.state is TxState.NOT_FOUND


def within_grace(ctx: Ctx, d: Offboard) -> bool:
    grace = ctx.services.config.offboard_lost_tx_grace_period_secs
    return d.created_at is None or ctx.now - d.created_at <= grace


async def missing_within_grace(ctx: Ctx, d: Offboard) -> bool:
    return within_grace(ctx, d) and await missing(ctx, d)


async def lost_after_grace(ctx: Ctx, d: Offboard) -> bool:
    """Gone from the chain for longer than the grace period. The VTXOs stay held: the
    server has the signed tx and can still confirm it, which makes the forfeits valid."""
    return not within_grace(ctx, d) and await missing(ctx, d)


async def visible(ctx: Ctx, d: Offboard) -> bool:
    return not await missing(ctx, d)


async def rebroadcast(ctx: Ctx, d: Offboard) -> Offboard:
    """Re-broadcast (``created_at`` is not refreshed: the grace counts from the first
    broadcast). Raise if the chain still does not show it, so this cannot spin."""
    await ctx.services.chain.broadcast(offboard_tx(d))
    if await missing(ctx, d):
        raise RuntimeError(f"re-broadcast tx {offboard_tx(d).txid} is still not visible")
    return d


def settle(ctx: Ctx, d: Offboard) -> Offboard:
    """The forfeited VTXOs are spent (before Done releases them) and the movement done."""
    wallet = ctx.services.wallet
    wallet.set_vtxo_state(d.offboard_vtxo_ids, VtxoState.SPENT, allowed_from=UNSPENT)
    assert d.movement_id is not None
    wallet.finish_movement(d.movement_id, MovementStatus.SUCCESSFUL)
    return d


def fail_movement(ctx: Ctx, d: Offboard) -> Offboard:
    """Nothing was forfeited: the movement fails with nothing moved (and the server's reason,
    when it refused), and the failed state releases the inputs (or the arkoor outputs) the
    action holds."""
    wallet = ctx.services.wallet
    movement = offboard_movement(wallet, d)
    if d.refusal is not None:
        wallet.update_movement(movement, MovementUpdate(metadata={"failure": d.refusal}))
    wallet.finish_movement(movement, MovementStatus.FAILED, effective_balance=0)
    return d


# -- rejection handlers ------------------------------------------------------------------------


async def prepare_refused(ctx: Ctx, d: Offboard, error: BaseException) -> fsm.Outcome:
    """ReadyForOffboard refused. Without a prior tx nothing was forfeited: fail. With one
    (we lost a finish session): adopt it if the chain has it; fail if the refusal proves the
    inputs unspent; else keep looking (our chain view may lag the server's broadcast)."""
    refused = attrs.evolve(d, refusal=str(error))
    if d.prior_txid is None:
        return OffboardKind.goto(refused, OffboardKind.abandoning)
    prior = await _on_chain(ctx, d.prior_txid)
    if prior is not None:
        return _adopt(ctx, d, prior)
    if any(proof in str(error) for proof in SPENDABLE_PROOFS):
        return OffboardKind.goto(refused, OffboardKind.abandoning)
    here = OffboardKind.create(d, OffboardKind.ready_for_offboard)
    return fsm.Park(here, wake_after=POLL_SECONDS, error=error)


async def finish_refused(ctx: Ctx, d: Offboard, error: BaseException) -> fsm.Outcome:
    """The finish session is gone. If the tx made it to the chain anyway, adopt it; else
    prepare again, remembering this txid. A park, not a Next: repeated refusals must not
    spin creating fresh server sessions."""
    tx = offboard_tx(d)
    on_chain = await _on_chain(ctx, tx.txid)
    if on_chain is not None:
        return _adopt(ctx, d, on_chain)
    again = attrs.evolve(d, prior_txid=tx.txid, offboard_tx=None, forfeit_nonces=[])
    return fsm.Park(OffboardKind.create(again, OffboardKind.ready_for_offboard), POLL_SECONDS)


# -- the kind ----------------------------------------------------------------------------------


class OffboardKind(Kind[Offboard, Services]):
    """Start -> [SplitWithArkoor (-> SplitRefused) -> ArkoorRegistrationRequired ->]
    ReadyForOffboard -> OffboardTxPrepared -> ReadyForBroadcast -> AwaitingConfirmations ->
    done."""

    name = "offboard"

    start = State(initial=True, retry=RetryPolicy(max_attempts=1), doc="inputs held")
    split_with_arkoor = State(doc="SendOnchain: arkoor split to an exact VTXO")
    split_refused = State(doc="adopt the split if the server made it, else give up")
    arkoor_registration_required = State(doc="register the split, free the change")
    ready_for_offboard = State(doc="prepare (prior_txid: after a lost session)")
    offboard_tx_prepared = State(doc="sign forfeits, finish")
    ready_for_broadcast = State(doc="broadcast the signed tx")
    awaiting_confirmations = State.wait(after=POLL_SECONDS)
    lost = State.wait(doc="gone after the grace period; checked on every drive")
    abandoning = State(doc="fail the movement")
    settled = State.done(doc="inputs spent, movement successful")
    failed = State.failed(doc="held VTXOs released")

    transitions = (
        start.to(split_with_arkoor, guard=is_send_onchain, effect=check_inputs),
        start.to(ready_for_offboard, effect=check_inputs),
        split_with_arkoor.to(arkoor_registration_required, effect=arkoor_split),
        split_refused.to(arkoor_registration_required, guard=split_made, effect=arkoor_split),
        split_refused.to(abandoning),
        arkoor_registration_required.to(ready_for_offboard, effect=register_split),
        ready_for_offboard.to(offboard_tx_prepared, effect=prepare),
        offboard_tx_prepared.to(ready_for_broadcast, effect=finish),
        ready_for_broadcast.to(awaiting_confirmations, effect=broadcast),
        awaiting_confirmations.to(settled, guard=confirmed_enough, effect=settle),
        awaiting_confirmations.to(
            awaiting_confirmations, guard=missing_within_grace, effect=rebroadcast
        ),
        awaiting_confirmations.to(lost, guard=lost_after_grace),
        lost.to(settled, guard=confirmed_enough, effect=settle),
        lost.to(awaiting_confirmations, guard=visible),
        abandoning.to(failed, effect=fail_movement),
        # Where the inputs may be forfeited or the split outputs registered half-way, failing
        # (and releasing them) is not safe: park there with the error, no wake-up (bark's
        # "consider exiting" arms).
        # A refused split asks the server before abandoning (a lost answer may hide a split
        # that happened); a refused replay of a split the server made holds.
        start.rejected(to=failed),
        split_with_arkoor.rejected(to=split_refused),
        split_refused.rejected(park=True),
        arkoor_registration_required.rejected(park=True),
        ready_for_offboard.rejected(
            handler=prepare_refused, to=(abandoning, awaiting_confirmations)
        ),
        offboard_tx_prepared.rejected(
            handler=finish_refused, to=(awaiting_confirmations, ready_for_offboard)
        ),
        ready_for_broadcast.rejected(park=True),
        awaiting_confirmations.rejected(park=True),
        lost.rejected(park=True),
    )

    @staticmethod
    def action_id(data: Offboard) -> str:
        return data.id


__all__ = ["OffboardKind", "confirmed_enough", "offboard_request"]
