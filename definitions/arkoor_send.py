"""Arkoor send: an out-of-round payment to an Ark address (bark's ``ArkoorSend``, reference 2.3).

The inputs are spent into the destination output plus change pieces with the server's
cosignature, the outputs' transactions are registered, the destination VTXOs are posted to
the recipient's mailboxes, and the change is stored in the wallet::

    cosigning -> registration -> delivery -> finalizing -> sent
                                         \\-> salvaging  -> undelivered

Differences from bark, each named in docs/definitions/arkoor_send.md: the inputs are fsm
resources written with the first checkpoint (`start_arkoor_send` returns them for
``Executor.start``), so a crash can never leave them locked; the salvage path is reachable
(a delivery refused by every mailbox, or failing for ``DELIVERY_ATTEMPTS`` attempts, keeps the
change and fails the movement instead of retrying forever); the inputs are marked spent as
soon as the server has spent them.
"""

from __future__ import annotations

import attrs

import fsm
from fsm import Kind, RetryPolicy, State, StepContext

from .answers import check_outputs
from .calls import call_key
from .model import (
    ArkAddress,
    MovementStatus,
    MovementUpdate,
    PubkeyPolicy,
    Vtxo,
    VtxoRequest,
    VtxoState,
    change_pieces,
    digest,
    vtxo_resource,
)
from .services import Services
from .services.ark_records import RecoveryPost
from .services.ark_server import ServerUnavailable
from .started import Started

DELIVERY_ATTEMPTS = 30
"""Consecutive failed deliveries (one a minute) before the send is salvaged."""

DELIVERY_RETRY = RetryPolicy(base=60.0, cap=60.0, max_attempts=DELIVERY_ATTEMPTS)
"""bark parks a failed delivery for 60 s, forever; fsm gives up after the budget."""

SPENDABLE_ONLY = frozenset({VtxoState.SPENDABLE})

Ctx = StepContext[Services]


@attrs.frozen
class ArkoorSend:
    """The checkpoint. Everything up to ``change_pieces`` is fixed at creation; the cosigned
    outputs are filled in by the cosign step (the change exists only here until finalizing)."""

    id: str
    destination: ArkAddress
    amount: int
    input_ids: list[str]
    """Sorted, so the checkpoint and the cosign request are the same on every run."""
    change_key_index: int
    change_pieces: list[int]
    movement_id: int | None = None
    destination_vtxos: list[Vtxo] = attrs.Factory(list)
    change_vtxos: list[Vtxo] = attrs.Factory(list)


def arkoor_send_id(mailbox_id: str, change_key_index: int) -> str:
    """The send's id, derived from the wallet's mailbox and the change key it reserved."""
    return digest("arkoor_send", mailbox_id, change_key_index)[:32]


# -- steps -------------------------------------------------------------------------------------


async def cosign(ctx: Ctx, d: ArkoorSend) -> ArkoorSend:
    """Spend the inputs with the server; the same inputs and change key replay the same spend.
    The server posts the change to the wallet's own mailbox with the spend, so a wallet
    restored from its seed finds it even when this send never finishes.

    The inputs are marked spent right away (bark waits for finalizing): the server has spent
    them, so the wallet must not show them as spendable a moment longer.
    """
    wallet = ctx.services.wallet
    payee = PubkeyPolicy(d.destination.pubkey)
    change_policy = PubkeyPolicy(wallet.derive_key(d.change_key_index))
    outputs = [VtxoRequest(d.amount, payee)]
    outputs += [VtxoRequest(piece, change_policy) for piece in d.change_pieces]
    change = RecoveryPost(wallet.mailbox_id(), list(range(1, len(outputs))))
    vtxos = await ctx.services.server.request_arkoor_cosign(
        d.input_ids, outputs, ctx.idempotency_key, change if d.change_pieces else None
    )
    check_outputs(f"arkoor send {d.id}", outputs, vtxos)
    wallet.set_vtxo_state(d.input_ids, VtxoState.SPENT, allowed_from=SPENDABLE_ONLY)
    movement = wallet.get_or_create_movement(
        d.id,
        "arkoor_send",
        intended_balance=-d.amount,
        effective_balance=-d.amount,
        fee=0,
        consumed=d.input_ids,
        metadata={"sent_to": d.destination.pubkey},
    )
    return attrs.evolve(
        d,
        movement_id=movement.id,
        destination_vtxos=[v for v in vtxos if v.policy == payee],
        change_vtxos=[v for v in vtxos if v.policy != payee],
    )


async def spend_made(ctx: Ctx, d: ArkoorSend) -> bool:
    """After a refused cosign: did the server spend the inputs anyway (a first attempt whose
    answer was lost)? Then the spend is adopted, never cancelled. Errors propagate: giving up
    waits until the server can say no."""
    return bool(await ctx.services.server.spent_vtxos(d.input_ids))


async def register_outputs(ctx: Ctx, d: ArkoorSend) -> ArkoorSend:
    """Register the outputs' transactions, so the recipient (and we) can exit from them."""
    vtxos = d.destination_vtxos + d.change_vtxos
    if vtxos:
        await ctx.services.server.register_vtxo_transactions(vtxos, ctx.idempotency_key)
    return d


async def deliver(ctx: Ctx, d: ArkoorSend) -> ArkoorSend:
    """Post the destination VTXOs to every mailbox of the address; one acceptance suffices.

    When none accepts: a refusal by every mailbox is a rejection (the salvage route); any
    transient failure among them is retried, up to `DELIVERY_ATTEMPTS`.
    """
    server = ctx.services.server
    errors: list[Exception] = []
    for n, mailbox in enumerate(d.destination.mailbox_ids):
        try:
            await server.post_to_mailbox(
                mailbox, d.destination_vtxos, call_key(ctx, f"mailbox-{n}")
            )
        except (ServerUnavailable, fsm.Rejected) as exc:
            errors.append(exc)
        else:
            return d
    summary = "; ".join(f"{type(e).__name__}: {e}" for e in errors) or "no mailbox"
    if errors and all(isinstance(e, fsm.Rejected) for e in errors):
        first = errors[0]
        assert isinstance(first, fsm.Rejected)
        raise fsm.Rejected(f"every mailbox refused the delivery: {summary}", code=first.code)
    raise ServerUnavailable(f"no mailbox accepted the delivery: {summary}")


def _finalize(ctx: Ctx, d: ArkoorSend, status: MovementStatus) -> ArkoorSend:
    wallet = ctx.services.wallet
    wallet.set_vtxo_state(d.input_ids, VtxoState.SPENT, allowed_from=SPENDABLE_ONLY)
    for vtxo in d.change_vtxos:
        wallet.insert_vtxo(vtxo, VtxoState.SPENDABLE)
    assert d.movement_id is not None  # set by the cosign step, before any finalizing
    if d.change_vtxos:
        produced = [v.id for v in d.change_vtxos]
        wallet.update_movement(d.movement_id, MovementUpdate(produced=produced))
    wallet.finish_movement(d.movement_id, status)
    return d


def finalize_delivered(ctx: Ctx, d: ArkoorSend) -> ArkoorSend:
    """Store the change as spendable; the movement succeeded."""
    return _finalize(ctx, d, MovementStatus.SUCCESSFUL)


def finalize_undelivered(ctx: Ctx, d: ArkoorSend) -> ArkoorSend:
    """Salvage: store the change all the same; the movement failed (the recipient was not
    told, though the destination VTXOs exist and are registered)."""
    return _finalize(ctx, d, MovementStatus.FAILED)


# -- the kind ----------------------------------------------------------------------------------


class ArkoorSendKind(Kind[ArkoorSend, Services]):
    name = "arkoor_send"

    cosigning = State(initial=True, doc="inputs held; cosign the spend")
    cosign_refused = State(doc="adopt the spend if the server made it, else cancel")
    registration = State(doc="register the outputs' transactions")
    delivery = State(retry=DELIVERY_RETRY, doc="post to the recipient's mailboxes")
    finalizing = State(doc="delivered: store the change")
    salvaging = State(doc="not delivered: store the change anyway")
    sent = State.done()
    undelivered = State.done(doc="movement failed; change kept")
    cancelled = State.failed(doc="cosign refused; inputs released")

    transitions = (
        cosigning.to(registration, effect=cosign),
        cosign_refused.to(registration, guard=spend_made, effect=cosign),
        cosign_refused.to(cancelled),
        registration.to(delivery, effect=register_outputs),
        delivery.to(finalizing, effect=deliver),
        finalizing.to(sent, effect=finalize_delivered),
        salvaging.to(undelivered, effect=finalize_undelivered),
        # bark's on_rejection table. Cosigning: ask the server whether the inputs were spent
        # anyway (a lost answer), adopt the spend if so, else fail (fsm releases the inputs);
        # a refused adopting replay holds. Registration: deliver anyway, the recipient can
        # exit from the signed chain. Delivery (and its spent retry budget): salvage the change.
        cosigning.rejected(to=cosign_refused),
        cosign_refused.rejected(park=True),
        registration.rejected(to=delivery),
        delivery.rejected(to=salvaging),
    )

    @staticmethod
    def action_id(data: ArkoorSend) -> str:
        return data.id


# -- entry point -------------------------------------------------------------------------------


async def start_arkoor_send(
    services: Services, destination: ArkAddress, amount: int
) -> Started[ArkoorSend]:
    """A new arkoor send and the resources it must hold from its first checkpoint.

    Validates the address, selects inputs (skipping VTXOs held by other actions, at the
    server's depth limit or expired: `InsufficientFunds` says so), reserves the
    change key and splits the change. Start it with ``executor.start(action,
    resources=resources)``: the inputs are taken in the transaction that writes the first
    checkpoint, or not at all (`fsm.ResourceConflict` if another action took one meanwhile).
    """
    if amount <= 0:
        raise ValueError(f"amount must be positive, got {amount}")
    if destination.network is not services.config.network:
        raise ValueError(
            f"address is for {destination.network.value}, the wallet is on "
            f"{services.config.network.value}"
        )
    if not destination.mailbox_ids:
        raise ValueError("the address has no mailbox to deliver to")
    wallet = services.wallet
    info = await services.server.info()
    tip = await services.chain.tip_height()
    inputs = wallet.select_coins(amount, max_depth=info.max_arkoor_depth, tip=tip)
    change = sum(v.amount for v in inputs) - amount
    index = wallet.next_key_index()
    if wallet.derive_key(index) == destination.pubkey:
        raise ValueError("the destination is this wallet's change key")
    d = ArkoorSend(
        id=arkoor_send_id(wallet.mailbox_id(), index),
        destination=destination,
        amount=amount,
        input_ids=sorted(v.id for v in inputs),
        change_key_index=index,
        change_pieces=change_pieces(change, amount, services.config.change_vtxo_split_factor),
    )
    return Started(ArkoorSendKind.create(d), [vtxo_resource(i) for i in d.input_ids])


__all__ = [
    "DELIVERY_ATTEMPTS",
    "ArkoorSend",
    "ArkoorSendKind",
    "arkoor_send_id",
    "start_arkoor_send",
]
