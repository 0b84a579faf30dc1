"""Refresh: swap VTXOs near their expiry (or too deep to spend out of round) for fresh ones
in the server's next round (bark's refresh, a round participation), as a declarative fsm
kind::

    registering -> awaiting_round -> refreshed
         |                      \\-> round_lost (failed: inputs released)
         \\-> register_refused -> awaiting_round (registered after all) | cancelled

A VTXO expires at its ``expiry_height``: from then on the server refuses to spend it (and
in the real protocol sweeps it), so the wallet refreshes what comes within
``WalletConfig.vtxo_refresh_expiry_threshold`` blocks of expiry (`refresh_candidates`). The
inputs are held as fsm resources from the first checkpoint; nothing is spent until the round
runs, which then spends them and issues one VTXO of their sum to a fresh key of the wallet,
at depth 0 with a new expiry.

A registration refused after a lost answer asks the server whether the participation exists
(its id is natural: `model.round_participation_id`) before giving up, so a participation
the server holds is never abandoned with its inputs released (the hazard the offboard and
arkoor send close the same way).
"""

from __future__ import annotations

import attrs

import fsm
from fsm import Kind, State, StepContext

from .answers import check_outputs
from .model import (
    MovementStatus,
    MovementUpdate,
    PubkeyPolicy,
    Vtxo,
    VtxoRequest,
    VtxoState,
    digest,
    round_participation_id,
    vtxo_resource,
)
from .services import Services
from .services.ark_records import RoundResult, RoundState
from .services.ark_server import NOT_FOUND
from .started import Started

RECHECK_SECONDS = 60.0
"""How often a registered refresh asks whether its round ran."""

SPENDABLE_ONLY = frozenset({VtxoState.SPENDABLE})

Ctx = StepContext[Services]


@attrs.frozen
class Refresh:
    """The checkpoint: the inputs and the fresh key (fixed at creation), then the result."""

    id: str
    input_ids: list[str]
    amount: int
    key_index: int
    movement_id: int | None = None
    failure: str = ""


def refresh_id(mailbox_id: str, key_index: int) -> str:
    """``refresh.<digest>``: from the wallet's mailbox and the fresh key it reserved."""
    return f"refresh.{digest('refresh', mailbox_id, key_index)[:32]}"


def _request(ctx: Ctx, d: Refresh) -> list[VtxoRequest]:
    return [VtxoRequest(d.amount, PubkeyPolicy(ctx.services.wallet.derive_key(d.key_index)))]


def _participation(ctx: Ctx, d: Refresh) -> str:
    return round_participation_id(d.input_ids, _request(ctx, d))


# -- steps -------------------------------------------------------------------------------------


def _open_movement(ctx: Ctx, d: Refresh) -> Refresh:
    movement = ctx.services.wallet.get_or_create_movement(
        d.id, "refresh", intended_balance=0, effective_balance=0, fee=0, consumed=d.input_ids
    )
    return attrs.evolve(d, movement_id=movement.id)


async def register(ctx: Ctx, d: Refresh) -> Refresh:
    """Join the next round; a retry under the same key is a replay."""
    await ctx.services.server.register_for_round(d.input_ids, _request(ctx, d), ctx.idempotency_key)
    return _open_movement(ctx, d)


async def registered_anyway(ctx: Ctx, d: Refresh) -> bool:
    """After a refused registration: does the server hold the participation (a first
    attempt whose answer was lost)? Errors propagate: giving up waits for a clear no."""
    try:
        await ctx.services.server.round_result(_participation(ctx, d))
    except fsm.Rejected as exc:
        if exc.code == NOT_FOUND:
            return False
        raise
    return True


def adopt(ctx: Ctx, d: Refresh) -> Refresh:
    return _open_movement(ctx, d)


async def _result(ctx: Ctx, d: Refresh) -> RoundResult:
    return await ctx.services.server.round_result(_participation(ctx, d))


async def round_done(ctx: Ctx, d: Refresh) -> bool:
    return (await _result(ctx, d)).state is RoundState.DONE


async def round_failed(ctx: Ctx, d: Refresh) -> bool:
    return (await _result(ctx, d)).state is RoundState.FAILED


async def take_outputs(ctx: Ctx, d: Refresh) -> Refresh:
    """The inputs are spent, the fresh VTXO is ours: store it, finish the movement."""
    result = await _result(ctx, d)
    check_outputs(f"refresh {d.id}", _request(ctx, d), result.vtxos)
    wallet = ctx.services.wallet
    wallet.set_vtxo_state(d.input_ids, VtxoState.SPENT, allowed_from=SPENDABLE_ONLY)
    for vtxo in result.vtxos:
        wallet.insert_vtxo(vtxo, VtxoState.SPENDABLE)
    assert d.movement_id is not None  # opened with the registration
    produced = [v.id for v in result.vtxos]
    wallet.update_movement(d.movement_id, MovementUpdate(produced=produced))
    wallet.finish_movement(d.movement_id, MovementStatus.SUCCESSFUL)
    return d


async def give_up(ctx: Ctx, d: Refresh) -> Refresh:
    """The round could not take the inputs (nothing was spent): the movement failed with
    the server's reason; the inputs are released with the action."""
    reason = (await _result(ctx, d)).reason
    assert d.movement_id is not None
    wallet = ctx.services.wallet
    wallet.update_movement(d.movement_id, MovementUpdate(metadata={"failure": reason}))
    wallet.finish_movement(d.movement_id, MovementStatus.FAILED)
    return attrs.evolve(d, failure=reason)


# -- the kind ----------------------------------------------------------------------------------


class RefreshKind(Kind[Refresh, Services]):
    name = "refresh"

    registering = State(initial=True, doc="inputs held; join the next round")
    register_refused = State(doc="adopt the participation if the server has it, else cancel")
    awaiting_round = State.wait(after=RECHECK_SECONDS, doc="until the round ran")
    refreshed = State.done(doc="fresh VTXO spendable; movement successful")
    round_lost = State.failed(doc="the round could not take the inputs; released")
    cancelled = State.failed(doc="registration refused; inputs released")

    transitions = (
        registering.to(awaiting_round, effect=register),
        register_refused.to(awaiting_round, guard=registered_anyway, effect=adopt),
        register_refused.to(cancelled),
        awaiting_round.to(refreshed, guard=round_done, effect=take_outputs),
        awaiting_round.to(round_lost, guard=round_failed, effect=give_up),
        registering.rejected(to=register_refused),
        register_refused.rejected(park=True),
    )

    @staticmethod
    def action_id(data: Refresh) -> str:
        return data.id


# -- entry point -------------------------------------------------------------------------------


class NothingToRefresh(ValueError):
    """No VTXO needs (or can get) a refresh."""


async def refresh_candidates(services: Services) -> list[Vtxo]:
    """Spendable VTXOs within the configured threshold of their expiry (not yet expired:
    the server no longer takes those) or at the server's depth limit."""
    tip = await services.chain.tip_height()
    info = await services.server.info()
    threshold = services.config.vtxo_refresh_expiry_threshold
    return [
        v
        for v in services.wallet.spendable_vtxos()
        if tip < v.expiry_height <= tip + threshold or v.depth >= info.max_arkoor_depth
    ]


async def start_refresh(services: Services, vtxos: list[Vtxo] | None = None) -> Started[Refresh]:
    """A refresh of ``vtxos`` (default: `refresh_candidates`) into one fresh VTXO, and the
    resources (its inputs) to start it with."""
    chosen = await refresh_candidates(services) if vtxos is None else vtxos
    if not chosen:
        raise NothingToRefresh("no VTXO to refresh")
    wallet = services.wallet
    index = wallet.next_key_index()
    d = Refresh(
        id=refresh_id(wallet.mailbox_id(), index),
        input_ids=sorted(v.id for v in chosen),
        amount=sum(v.amount for v in chosen),
        key_index=index,
    )
    return Started(RefreshKind.create(d), [vtxo_resource(i) for i in d.input_ids])


__all__ = [
    "NothingToRefresh",
    "Refresh",
    "RefreshKind",
    "refresh_candidates",
    "refresh_id",
    "start_refresh",
]
