"""Board: move on-chain bitcoin into a VTXO (bark reference 2.1), as a declarative fsm kind.

Everything that needs the user's key or the on-chain wallet happens in `start_board` before
the action exists, as in bark's ``board_psbt``: the server cosigns the board VTXO and the
movement is created (get-or-create keyed by the action id, so a retried start finds it). The
action owns the durable tail: store the VTXO and broadcast the funding tx, wait for the
confirmations the server requires, register the VTXO; or tear the board down when its funding
was double-spent, and start a unilateral exit when the VTXO nears expiry unregistered.

The board VTXO is held as the fsm resource ``vtxo.<id>`` from the first checkpoint on (bark:
``Locked{Movement}``): coin selection skips it until the action ends, and the end of the action
always releases it, whether registered (it becomes usable), torn down (``Spent``) or exited.
See docs/definitions/board.md for the table and the defects fixed.
"""

from __future__ import annotations

import enum

import attrs

import fsm
from fsm import Kind, RetryPolicy, State, StepContext

from .model import (
    BOARD_PREFIX,
    MovementStatus,
    MovementUpdate,
    Tx,
    TxOut,
    Vtxo,
    VtxoState,
    board_address,
    vtxo_resource,
)
from .services import Services
from .services.ark_records import BoardRequest
from .services.chain import ChainRejected, ChainSource, TxState, TxStatus
from .started import Started

RECHECK_SECONDS = 60.0
"""How often a board is looked at again without a new block (bark's daemon sync interval)."""

Ctx = StepContext[Services]


class Probe(enum.Enum):
    """The conflict probe's verdict on a funding tx the chain does not know (reference 2.1)."""

    FATAL = "fatal"
    """An input is spent by a confirmed conflicting tx: the board can never confirm."""
    UNDECIDED = "undecided"
    """Not ours to decide yet (parent not visible, awaiting an external broadcast, ...)."""


@attrs.frozen
class Board:
    """The checkpoint of a board.

    ``funding`` is the funding tx; ``signed`` False makes it a PSBT another party signs and
    broadcasts (payjoin), which the action never broadcasts. ``vtxo`` is the cosigned board
    VTXO. The assessment fields are what the last look at the chain found: the tip and time
    of that look, the confirmations (``None``: unknown), the probe verdict and the reason the
    board is still waiting (``last_park_error``, for diagnostics).
    """

    funding: Tx
    vout: int
    vtxo: Vtxo
    movement_id: int
    last_park_error: str | None = None
    checked_tip: int = -1
    checked_at: float = 0.0
    confirmations: int | None = None
    probe: Probe | None = None


def board_id(funding_txid: str, vout: int) -> str:
    """``board.<funding txid>.<vout>``: an outpoint funds at most one board."""
    return f"board.{funding_txid}.{vout}"


# -- broadcasting ------------------------------------------------------------------------------


async def store_vtxo_and_broadcast(ctx: Ctx, d: Board) -> Board:
    """Store the VTXO (insert-if-absent; held by this action, so not usable yet) and broadcast
    the funding tx if it is ours to broadcast and the chain does not know it yet.

    A broadcast refused because an input is missing or already spent is not retried here
    (bark retries it forever): the board goes on to ``confirming``, whose conflict probe
    tells a confirmed double spend (teardown) from one that may still be replaced.
    """
    svc = ctx.services
    svc.wallet.insert_vtxo(d.vtxo, VtxoState.SPENDABLE)
    refused = None
    if d.funding.signed and not await _known(svc.chain, d.funding.txid):
        try:
            await svc.chain.broadcast(d.funding)
        except ChainRejected as exc:
            if not exc.missing_inputs:
                raise
            refused = str(exc)
    return attrs.evolve(d, last_park_error=refused, checked_tip=-1)


async def _known(chain: ChainSource, txid: str) -> bool:
    """In the mempool or confirmed; any error counts as not known (bark does the same)."""
    try:
        status = await chain.tx_status(txid)
    except Exception:
        return False
    return status.state is not TxState.NOT_FOUND


# -- confirming --------------------------------------------------------------------------------


def vtxo_exited(ctx: Ctx, d: Board) -> bool:
    return ctx.services.wallet.vtxo_state(d.vtxo.id) is VtxoState.EXITED


def vtxo_spent(ctx: Ctx, d: Board) -> bool:
    """A previous drive tore the board down but did not finish (``Spent`` is the marker)."""
    return ctx.services.wallet.vtxo_state(d.vtxo.id) is VtxoState.SPENT


def finish_exited(ctx: Ctx, d: Board) -> Board:
    ctx.services.wallet.finish_movement(d.movement_id, MovementStatus.FAILED)
    return d


def finish_torn_down(ctx: Ctx, d: Board) -> Board:
    ctx.services.wallet.finish_movement(d.movement_id, MovementStatus.FAILED, effective_balance=0)
    return d


async def new_block_or_due(ctx: Ctx, d: Board) -> bool:
    """Look at the chain again on a new block, or when a minute has passed."""
    tip = await ctx.services.chain.tip_height()
    return tip != d.checked_tip or ctx.now >= d.checked_at + RECHECK_SECONDS


async def check_funding(ctx: Ctx, d: Board) -> Board:
    """Count the funding tx's confirmations; when the chain does not know it, run the
    conflict probe. A failing status query leaves the confirmations unknown."""
    chain = ctx.services.chain
    tip = await chain.tip_height()
    probe: Probe | None = None
    reason: str | None = None
    try:
        status: TxStatus | None = await chain.tx_status(d.funding.txid)
    except Exception as exc:
        status, reason = None, f"funding status unknown: {exc}"
    confirmations: int | None = None
    if status is not None and status.state is TxState.NOT_FOUND:
        probe, reason = await conflict_probe(chain, d.funding)
        confirmations = 0 if probe is None else None
    elif status is not None:
        confirmations = status.confirmations(tip)
    return attrs.evolve(
        d,
        checked_tip=tip,
        checked_at=ctx.now,
        confirmations=confirmations,
        probe=probe,
        last_park_error=reason,
    )


async def conflict_probe(chain: ChainSource, funding: Tx) -> tuple[Probe | None, str | None]:
    """Why the chain does not know the funding tx (reference 2.1, in its order).

    Only a *confirmed* conflicting spend is fatal: a mempool conflict may still be replaced.
    Backend errors propagate (a transient error of the step).
    """
    for op in funding.inputs:
        parent = await chain.tx_status(op.txid)
        if parent.state is TxState.CONFIRMED:
            spend = await chain.spent_by(op)
            if spend is not None and spend.height is not None and spend.txid != funding.txid:
                return Probe.FATAL, f"input {op} spent by confirmed tx {spend.txid}"
        elif parent.state is TxState.NOT_FOUND:
            return Probe.UNDECIDED, f"parent of input {op} not yet visible"
    if not funding.signed:
        return Probe.UNDECIDED, "awaiting external funding broadcast"
    try:
        await chain.broadcast(funding)
    except ChainRejected as exc:
        return (Probe.FATAL if exc.missing_inputs else Probe.UNDECIDED), str(exc)
    return None, None


# -- assessing ---------------------------------------------------------------------------------


def double_spent(ctx: Ctx, d: Board) -> bool:
    return d.probe is Probe.FATAL


def undecided(ctx: Ctx, d: Board) -> bool:
    return d.probe is Probe.UNDECIDED


async def confirmed_enough(ctx: Ctx, d: Board) -> bool:
    if d.confirmations is None:
        return False
    info = await ctx.services.server.info()
    return d.confirmations >= info.required_board_confirmations


def tear_down(ctx: Ctx, d: Board) -> Board:
    """The funding can never confirm: the VTXO is void (``Spent``, checked) and the movement
    fails with nothing moved. ``Spent`` first, so a crash in between is finished by
    `vtxo_spent`."""
    wallet = ctx.services.wallet
    wallet.set_vtxo_state(
        [d.vtxo.id], VtxoState.SPENT, allowed_from=frozenset({VtxoState.SPENDABLE})
    )
    wallet.finish_movement(d.movement_id, MovementStatus.FAILED, effective_balance=0)
    return d


# -- registering -------------------------------------------------------------------------------


async def register(ctx: Ctx, d: Board) -> Board:
    """Register the VTXO with the server (repeats are tolerated), post it to the recovery
    mailbox (best effort) and finish the movement; the action's end releases the VTXO."""
    svc = ctx.services
    await svc.server.register_board_vtxo(d.vtxo, ctx.idempotency_key)
    svc.wallet.set_vtxo_state(
        [d.vtxo.id], VtxoState.SPENDABLE, allowed_from=frozenset({VtxoState.SPENDABLE})
    )
    try:
        await svc.server.post_to_mailbox(
            svc.wallet.mailbox_id(), [d.vtxo], f"{ctx.idempotency_key}.mailbox"
        )
    except Exception as exc:  # best effort, as in bark: the VTXO is registered already
        ctx.log.warning("recovery mailbox post failed: %s", exc)
    svc.wallet.finish_movement(d.movement_id, MovementStatus.SUCCESSFUL)
    return d


def registration_failed(ctx: Ctx, d: Board, error: BaseException) -> fsm.Outcome:
    """bark catches every registration failure into ``last_park_error``: do the same, then
    go on to the expiry check."""
    return BoardKind.goto(attrs.evolve(d, last_park_error=str(error)), BoardKind.salvaging)


# -- salvaging ---------------------------------------------------------------------------------


async def near_expiry(ctx: Ctx, d: Board) -> bool:
    """The VTXO would expire before the registration could still happen."""
    tip = await ctx.services.chain.tip_height()
    info = await ctx.services.server.info()
    return d.vtxo.expiry_height < tip + info.required_board_confirmations


def start_exit(ctx: Ctx, d: Board) -> Board:
    """Start a unilateral exit unless one runs, and record it on the movement (both
    idempotent). Registration is still attempted while the exit is pending."""
    wallet = ctx.services.wallet
    if not wallet.exiting(d.vtxo.id):
        wallet.start_exit(d.vtxo.id)
    wallet.update_movement(d.movement_id, MovementUpdate(metadata={"exited_vtxo": d.vtxo.id}))
    return d


# -- the kind ----------------------------------------------------------------------------------


def park_on_rejection(state: State) -> fsm.RejectionHandler[Services, Board]:
    """bark's board ``on_rejection``: park the same phase, no wake, no error; never fail and
    release, because the funding tx is already committed. It never leaves ``state``."""

    def park(ctx: Ctx, d: Board, error: BaseException) -> fsm.Outcome:
        return fsm.Park(BoardKind.create(attrs.evolve(d, last_park_error=None), state))

    return park


class BoardKind(Kind[Board, Services]):
    """Broadcasting -> Confirming -> done (registered) / done (torn down)."""

    name = "board"

    broadcasting = State(initial=True, doc="store the VTXO, broadcast the funding tx")
    confirming = State.wait(after=RECHECK_SECONDS, doc="look again on a new block or a minute")
    assessing = State(doc="act on what the chain said")
    registering = State(retry=RetryPolicy(max_attempts=1), doc="register with the server")
    salvaging = State(doc="exit if the VTXO nears expiry")
    registered = State.done(doc="VTXO spendable, movement successful")
    torn_down = State.done(doc="exited or double-spent: movement failed")

    transitions = (
        broadcasting.to(confirming, effect=store_vtxo_and_broadcast),
        confirming.to(torn_down, guard=vtxo_exited, effect=finish_exited),
        confirming.to(torn_down, guard=vtxo_spent, effect=finish_torn_down),
        confirming.to(assessing, guard=new_block_or_due, effect=check_funding),
        assessing.to(torn_down, guard=double_spent, effect=tear_down),
        assessing.to(confirming, guard=undecided),
        assessing.to(registering, guard=confirmed_enough),
        assessing.to(salvaging),
        registering.to(registered, effect=register),
        salvaging.to(confirming, guard=near_expiry, effect=start_exit),
        salvaging.to(confirming),
        broadcasting.rejected(handler=park_on_rejection(broadcasting), to=()),
        confirming.rejected(handler=park_on_rejection(confirming), to=()),
        assessing.rejected(handler=park_on_rejection(assessing), to=()),
        registering.rejected(handler=registration_failed, to=salvaging),
        salvaging.rejected(handler=park_on_rejection(salvaging), to=()),
    )

    @staticmethod
    def action_id(data: Board) -> str:
        return board_id(data.funding.txid, data.vout)


# -- entry point -------------------------------------------------------------------------------


class BoardError(ValueError):
    """The funding tx cannot make a board (checked before anything is asked of the server)."""


async def start_board(services: Services, funding: Tx) -> Started[Board]:
    """bark's ``board_psbt``: check the funding tx, have the server cosign the board VTXO and
    create the movement; return the action and the resource it holds from its first
    checkpoint on. Start it with ``Executor.start(action, resources=resources)``; calling
    this again with the same funding tx gives the same action and the same movement, and
    ``start`` keeps an existing checkpoint (bark overwrote it back to Broadcasting).
    """
    info = await services.server.info()
    if len(funding.inputs) > info.max_board_inputs:
        raise BoardError(f"{len(funding.inputs)} funding inputs, at most {info.max_board_inputs}")
    vout, pubkey = _board_output(services, funding)
    gross = funding.outputs[vout].amount
    if gross < info.min_board_amount:
        raise BoardError(f"board amount {gross} below the minimum {info.min_board_amount}")
    action_id = board_id(funding.txid, vout)
    expiry = await services.chain.tip_height() + info.vtxo_expiry_delta
    fee = info.board_fee(gross)
    request = BoardRequest(funding, vout, pubkey, expiry, fee)
    # the quote is in the key: a start again after a refused stale fee quotes anew
    key = f"{action_id}.0.cosign-{expiry}-{fee}"
    vtxo = await services.server.request_board_cosign(request, key)
    if vtxo.pubkey != pubkey or vtxo.amount != gross - fee:
        raise BoardError(f"server cosigned an unexpected board VTXO {vtxo!r}")
    movement = services.wallet.get_or_create_movement(
        action_id,
        "board",
        intended_balance=gross,
        effective_balance=vtxo.amount,
        fee=gross - vtxo.amount,
        produced=[vtxo.id],
        metadata={"funding_outpoint": str(funding.outpoint(vout))},
    )
    board = Board(funding, vout, vtxo, movement.id)
    return Started(BoardKind.create(board), [vtxo_resource(vtxo.id)])


def fund_board(services: Services, amount: int, *, fee: int, signed: bool = True) -> Tx:
    """A funding tx of a board of ``amount`` sats from the on-chain wallet to a fresh key,
    for `start_board`. ``signed=False`` builds a PSBT that someone else broadcasts."""
    pubkey = services.wallet.derive_key(services.wallet.next_key_index())
    return services.onchain.build_tx([TxOut(board_address(pubkey), amount)], fee, signed=signed)


def _board_output(services: Services, funding: Tx) -> tuple[int, str]:
    """The output paying the board script of one of our keys (any index)."""
    for vout, out in enumerate(funding.outputs):
        if out.address.startswith(BOARD_PREFIX):
            pubkey = out.address.removeprefix(BOARD_PREFIX)
            if services.wallet.key_index_of(pubkey) is not None:
                return vout, pubkey
    raise BoardError(f"funding tx {funding.txid} pays no board script of this wallet")


__all__ = [
    "Board",
    "BoardError",
    "BoardKind",
    "Probe",
    "board_id",
    "fund_board",
    "start_board",
]
