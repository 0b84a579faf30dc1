"""Unilateral exit: take a VTXO out of the Ark on chain without the server (bark's exit
system: its ``Start -> Processing -> AwaitingDelta -> Claimable -> ClaimInProgress ->
Claimed``), as a declarative fsm kind::

    starting -> unrolling <-> unrolled? -> awaiting_delta -> claiming <-> claim_waiting -> claimed

The VTXO's exit path (`model.exit_path`: ``depth + 1`` transactions, each spending the one
before) is broadcast one transaction at a time, each once its parent confirmed, so a deep
VTXO takes a block per hop; the last one pays an exit output the owner may spend only
``vtxo_exit_delta`` blocks after it confirmed. Then the claim sends it, less the claim's
fee, to the wallet's on-chain address.

Every step reads the chain and broadcasts what is missing, so a crash, an evicted
transaction or a lost answer is repaired by running the step again: a transaction the
chain knows is never sent twice, one it lost is sent again. The wallet marks the VTXO
``Exited`` when the exit starts (nothing may spend it out of round any more) and keeps an
``exit`` movement that succeeds with the claim.

Who starts one: `start_exit` (a user's explicit exit of a spendable VTXO), and
`start_requested_exits` for the exits the other kinds request (a board near expiry,
HTLCs whose payment cannot finish: `WalletStore.start_exit`).
"""

from __future__ import annotations

import attrs

import fsm
from fsm import Kind, State, StepContext

from .model import (
    MovementStatus,
    MovementUpdate,
    Tx,
    TxOut,
    Vtxo,
    VtxoState,
    exit_path,
    fee_anchor,
)
from .services import Services
from .services.chain import ChainRejected, TxState
from .services.wallet import InsufficientFunds
from .started import Started

CLAIM_FEE = 200
"""The claim transaction's fee (the sim has no fee market)."""

EXIT_TX_FEE = 300
"""The fee of one exit transaction, paid by its CPFP child from the on-chain wallet (the
exit txs were signed without a fee; bark's exit system bumps each through its fee anchor)."""

RECHECK_SECONDS = 60.0
"""How often a waiting exit looks at the chain without a new block."""

Ctx = StepContext[Services]


@attrs.frozen
class Exit:
    """The checkpoint: the VTXO, its exit path and claim (fixed at the start), and what the
    last look at the chain found."""

    vtxo: Vtxo
    path: list[Tx]
    claim: Tx
    movement_id: int | None = None
    confirmed: int = 0
    """How many transactions of the path were confirmed at the last look."""
    unlock_height: int | None = None
    """The height from which the claim may be mined (the exit output's timelock)."""
    checked_tip: int = -1
    checked_at: float = 0.0
    swept: str | None = None
    """Why the exit is lost: the chain refused the path because the server swept the VTXO's
    tree output after its expiry (the exit came too late)."""
    fee_short: str | None = None
    """Why the exit waits: the on-chain wallet cannot pay the next exit tx's fee (fund it)."""
    exit_delta: int | None = None
    """The exit output's timelock, read from the server at the start: a unilateral exit asks
    the server nothing afterwards (``None``: a checkpoint from before, which asks it)."""


def exit_id(vtxo_id: str) -> str:
    """``exit.<txid>.<vout>``: one exit per VTXO (action ids use '.' for ':')."""
    return f"exit.{vtxo_id.replace(':', '.')}"


# -- steps -------------------------------------------------------------------------------------


def begin(ctx: Ctx, d: Exit) -> Exit:
    """Mark the VTXO exited and open the movement (both idempotent)."""
    wallet = ctx.services.wallet
    wallet.start_exit(d.vtxo.id)
    wallet.set_vtxo_state(
        [d.vtxo.id], VtxoState.EXITED, allowed_from=frozenset({VtxoState.SPENDABLE})
    )
    movement = wallet.get_or_create_movement(
        exit_id(d.vtxo.id),
        "exit",
        intended_balance=-d.vtxo.amount,
        effective_balance=-d.vtxo.amount,
        fee=CLAIM_FEE + EXIT_TX_FEE * len(d.path),
        consumed=[d.vtxo.id],
        metadata={"exit_depth": str(d.vtxo.depth), "claim_txid": d.claim.txid},
    )
    return attrs.evolve(d, movement_id=movement.id)


async def _send(ctx: Ctx, tx: Tx) -> None:
    """Broadcast ``tx`` unless the chain knows it (a chain refusal is transient: retried)."""
    chain = ctx.services.chain
    if (await chain.tx_status(tx.txid)).state is TxState.NOT_FOUND:
        await chain.broadcast(tx)


async def _bump(ctx: Ctx, tx: Tx) -> None:
    """Pay ``tx``'s fee by a child spending its fee anchor, unless one does already (a child
    evicted from the mempool is made again). `InsufficientFunds` when the on-chain wallet
    cannot pay it."""
    anchor = fee_anchor(tx)
    if anchor is None or await ctx.services.chain.spent_by(anchor) is not None:
        return
    await ctx.services.chain.broadcast(ctx.services.onchain.build_cpfp(anchor, EXIT_TX_FEE))


async def unroll(ctx: Ctx, d: Exit) -> Exit:
    """Count the confirmed prefix of the path; broadcast the first transaction after it, and
    its CPFP child paying its fee."""
    chain = ctx.services.chain
    tip = await chain.tip_height()
    checked = attrs.evolve(d, checked_tip=tip, checked_at=ctx.now, fee_short=None)
    confirmed, height = 0, None
    for tx in d.path:
        status = await chain.tx_status(tx.txid)
        if status.state is not TxState.CONFIRMED:
            try:
                await _send(ctx, tx)
                await _bump(ctx, tx)
            except ChainRejected as exc:
                if not exc.missing_inputs:
                    raise
                return attrs.evolve(checked, swept=str(exc))
            except InsufficientFunds as exc:
                why = f"exit tx {tx.txid} needs a fee of {EXIT_TX_FEE} sats on chain: {exc}"
                ctx.log.warning("%s", why)
                return attrs.evolve(checked, fee_short=why)
            break
        confirmed, height = confirmed + 1, status.height
    unlock = None
    if confirmed == len(d.path) and height is not None:
        delta = d.exit_delta
        if delta is None:
            delta = (await ctx.services.server.info()).vtxo_exit_delta
        unlock = height + delta
    return attrs.evolve(checked, confirmed=confirmed, unlock_height=unlock)


def unrolled(ctx: Ctx, d: Exit) -> bool:
    return d.unlock_height is not None


def was_swept(ctx: Ctx, d: Exit) -> bool:
    return d.swept is not None


def short_of_fee(ctx: Ctx, d: Exit) -> bool:
    return d.fee_short is not None


def say_why(ctx: Ctx, d: Exit) -> Exit:
    """Put the reason the exit waits on its movement, where the user looks."""
    assert d.movement_id is not None and d.fee_short is not None  # set by begin, unroll
    update = MovementUpdate(metadata={"waiting": d.fee_short})
    ctx.services.wallet.update_movement(d.movement_id, update)
    return d


def lose(ctx: Ctx, d: Exit) -> Exit:
    """The server swept the VTXO before its exit got on chain: the money is gone (Ark's rule
    for a VTXO neither refreshed nor exited before its expiry)."""
    wallet = ctx.services.wallet
    assert d.movement_id is not None and d.swept is not None  # set by begin, unroll
    wallet.update_movement(d.movement_id, MovementUpdate(metadata={"failure": d.swept}))
    wallet.finish_movement(d.movement_id, MovementStatus.FAILED)
    return d


async def new_block_or_due(ctx: Ctx, d: Exit) -> bool:
    tip = await ctx.services.chain.tip_height()
    return tip != d.checked_tip or ctx.now >= d.checked_at + RECHECK_SECONDS


async def timelock_passed(ctx: Ctx, d: Exit) -> bool:
    """The next block may spend the exit output."""
    assert d.unlock_height is not None  # set when the path was unrolled
    return await ctx.services.chain.tip_height() + 1 >= d.unlock_height


async def send_claim(ctx: Ctx, d: Exit) -> Exit:
    await _send(ctx, d.claim)
    tip = await ctx.services.chain.tip_height()
    return attrs.evolve(d, checked_tip=tip, checked_at=ctx.now)


async def claim_confirmed(ctx: Ctx, d: Exit) -> bool:
    return (await ctx.services.chain.tx_status(d.claim.txid)).state is TxState.CONFIRMED


async def claim_lost(ctx: Ctx, d: Exit) -> bool:
    """Evicted from the mempool: send it again (looked at on a new block or when due)."""
    if not await new_block_or_due(ctx, d):
        return False
    return (await ctx.services.chain.tx_status(d.claim.txid)).state is TxState.NOT_FOUND


def finish(ctx: Ctx, d: Exit) -> Exit:
    wallet = ctx.services.wallet
    assert d.movement_id is not None  # set by begin
    wallet.update_movement(d.movement_id, MovementUpdate(metadata={"claimed": d.claim.txid}))
    wallet.finish_movement(d.movement_id, MovementStatus.SUCCESSFUL)
    return d


# -- the kind ----------------------------------------------------------------------------------


class ExitKind(Kind[Exit, Services]):
    name = "exit"

    starting = State(initial=True, doc="mark the VTXO exited, open the movement")
    unrolling = State(doc="broadcast the next exit tx of the path")
    unrolling_wait = State.wait(after=RECHECK_SECONDS, doc="until a new block")
    awaiting_fee_funds = State.wait(
        after=RECHECK_SECONDS, doc="no on-chain funds for the CPFP fee: fund the wallet"
    )
    awaiting_delta = State.wait(after=RECHECK_SECONDS, doc="the exit output's timelock")
    claiming = State(doc="broadcast the claim to the on-chain wallet")
    claim_waiting = State.wait(after=RECHECK_SECONDS, doc="until the claim confirms")
    claimed = State.done(doc="on chain; movement successful")
    swept = State.failed(doc="too late: the server swept the VTXO; movement failed")

    transitions = (
        starting.to(unrolling, effect=begin),
        unrolling.to(unrolling_wait, effect=unroll),
        unrolling_wait.to(swept, guard=was_swept, effect=lose),
        unrolling_wait.to(awaiting_fee_funds, guard=short_of_fee, effect=say_why),
        awaiting_fee_funds.to(unrolling, guard=new_block_or_due),
        unrolling_wait.to(awaiting_delta, guard=unrolled),
        unrolling_wait.to(unrolling, guard=new_block_or_due),
        awaiting_delta.to(claiming, guard=timelock_passed),
        claiming.to(claim_waiting, effect=send_claim),
        claim_waiting.to(claimed, guard=claim_confirmed, effect=finish),
        claim_waiting.to(claiming, guard=claim_lost),
    )

    @staticmethod
    def action_id(data: Exit) -> str:
        return exit_id(data.vtxo.id)


# -- entry points ------------------------------------------------------------------------------


class NotExitable(ValueError):
    """The VTXO is unknown, spent, or held by an action that did not ask for its exit."""


async def start_exit(services: Services, vtxo_id: str) -> Started[Exit]:
    """The exit of one of the wallet's VTXOs: a spendable one no action holds, or one whose
    exit an action requested (`WalletStore.start_exit`). It holds no resource: the VTXO is
    marked exited by the first step (so no selection takes it; for a spendable VTXO this
    starter marks it at once, before a concurrent start could select it)."""
    wallet = services.wallet
    vtxo = wallet.get_vtxo(vtxo_id)
    state = wallet.vtxo_state(vtxo_id)
    if vtxo is None or state is None:
        raise NotExitable(f"unknown vtxo {vtxo_id}")
    if not wallet.exiting(vtxo_id):
        if state is not VtxoState.SPENDABLE or vtxo not in wallet.spendable_vtxos():
            raise NotExitable(f"vtxo {vtxo_id} is {state.value} or held by an action")
        wallet.start_exit(vtxo_id)
        wallet.set_vtxo_state(
            [vtxo_id], VtxoState.EXITED, allowed_from=frozenset({VtxoState.SPENDABLE})
        )
    info = await services.server.info()
    path = exit_path(vtxo, info.vtxo_exit_delta)
    claim = Tx.build(
        [path[-1].outpoint(0)],
        [TxOut(services.onchain.address(), vtxo.amount - CLAIM_FEE)],
        signed=True,
    )
    data = Exit(vtxo, path, claim, exit_delta=info.vtxo_exit_delta)
    return Started(ExitKind.create(data), [])


async def start_requested_exits(executor: fsm.Executor[Services]) -> list[str]:
    """Start an exit for every requested one not started yet (bark's exit system picks up
    what the actions hand it); returns the ids started now."""
    wallet = executor.services.wallet
    started = []
    for vtxo_id in wallet.exit_requests():
        action_id = exit_id(vtxo_id)
        if wallet.movement_of(action_id) is not None or executor.store.row(action_id):
            continue
        action, resources = await start_exit(executor.services, vtxo_id)
        if await executor.start(action, resources=resources):
            started.append(action_id)
    return started


__all__ = [
    "CLAIM_FEE",
    "Exit",
    "ExitKind",
    "NotExitable",
    "exit_id",
    "start_exit",
    "start_requested_exits",
]
