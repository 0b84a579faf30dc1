"""Lightning receive (bark reference §2.5) as a declarative fsm kind.

The wallet asks the Ark server for an invoice (`lightning_receive_start`, before the action
exists, as bark does: an unused invoice just expires). The action then waits for the payer's
HTLC, takes the server's grant of HTLC-recv VTXOs, checkpoints the decision to reveal the
preimage, claims the HTLCs with it, and for an external destination delivers the claimed VTXO
to the destination's mailbox::

    awaiting_payment -> htlcs_ready -> preimage_revealed -> (delivering) -> settled

Each step's main server call uses ``ctx.idempotency_key`` (the claim's output registration and
the mailbox posts use keys derived from it, `calls.call_key`), so a re-run after a
crash or a lost response is a replay on the server. The reference's defects this kind fixes
are listed in docs/definitions/lightning_receive.md; `lightning_receive_grant` has what the
grant request pins and which grant is accepted, `lightning_receive_ops` the user operations
(cancel, exit, status): cancel and exit reach the action as events (`events`), taken by the
rows with ``on=``.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

import fsm
from fsm import Kind, RetryPolicy, State, StepContext

from .answers import check_outputs
from .calls import call_key
from .events import ExitRequested, ReceiveCanceled
from .lightning_receive_grant import GrantRequest, grant_problem, pin
from .model import (
    ArkAddress,
    HtlcRecvPolicy,
    Invoice,
    MovementStatus,
    MovementUpdate,
    PubkeyPolicy,
    Vtxo,
    VtxoRequest,
    VtxoState,
)
from .services import Services
from .services.ark_records import ReceiveState, ReceiveStatus
from .services.ark_server import INVALID_ARGUMENT, ServerUnavailable

Ctx = StepContext[Services]

INVOICE_EXPIRY_GRACE = 60.0
"""Seconds after the invoice's expiry before an unpaid receive is dropped (bark: 60 s)."""
CLAIM_BACKOFF = RetryPolicy()
"""The wait between two claim attempts (the executor's default curve)."""
CLAIM_RETRY = RetryPolicy(max_attempts=1)
"""Every transient claim error goes to `keep_pending`, which counts it against the wallet's
own budget (``WalletConfig.lightning_receive_claim_retries``): a policy is fixed when the
kind is defined, the configuration only when a wallet runs it. The attempts count is on the
row, so the budget holds across drives and restarts."""
SPENDABLE = frozenset({VtxoState.SPENDABLE})


@attrs.frozen
class LightningReceive:
    """The checkpoint. Fixed at creation: ``invoice`` to ``claim_destination``; filled in as
    the action goes: the pinned grant request, the HTLCs and movement, the claim outputs
    (external destination only: they exist nowhere else until delivered)."""

    invoice: Invoice
    preimage: str
    cltv_delta: int
    key_index: int
    anti_dos_token: str | None = None
    claim_destination: ArkAddress | None = None
    grant_request: GrantRequest | None = None
    htlc_vtxo_ids: list[str] = attrs.Factory(list)
    movement_id: int | None = None
    claim_outputs: list[Vtxo] = attrs.Factory(list)
    exit_requested: bool = False
    """Only in checkpoints written before exits were events: `exit_receive` then set it
    through `fsm.Executor.update`. Still honoured, so such a request is not lost; new
    requests are `ExitRequested` events and leave it False."""

    @property
    def payment_hash(self) -> str:
        return self.invoice.payment_hash


def lightning_receive_id(payment_hash: str) -> str:
    return f"ln_recv.{payment_hash}"


def _movement(d: LightningReceive) -> int:
    if d.movement_id is None:
        raise ValueError(f"receive {d.payment_hash} has HTLCs but no movement")
    return d.movement_id


# -- the server's view of the receive: one read per step ------------------------------------


async def _status(ctx: Ctx, d: LightningReceive) -> ReceiveStatus:
    """The server's receive status, read once per step (kept in the step's memo) so every
    guard of the step decides on the same answer."""
    status: ReceiveStatus | None = ctx.memo.get(_status)
    if status is None:
        status = await ctx.services.server.check_lightning_receive(d.payment_hash)
        ctx.memo[_status] = status
    return status


# -- awaiting_payment -------------------------------------------------------------------------


def grant_request_pinned(ctx: Ctx, d: LightningReceive) -> bool:
    return d.grant_request is not None


async def grant_request_stale(ctx: Ctx, d: LightningReceive) -> bool:
    """The tip moved so far since pinning that the requested expiry no longer leaves room for
    a unilateral claim: pin again (a new step, so a new key). If the old request did reach
    the server, the server answers with its first grant and the grant is rejected."""
    if d.grant_request is None:
        return False
    tip = await ctx.services.chain.tip_height()
    return tip + d.cltv_delta - 2 > d.grant_request.htlc_expiry


async def receive_canceled(ctx: Ctx, d: LightningReceive) -> bool:
    return (await _status(ctx, d)).state is ReceiveState.CANCELED


async def cancel_confirmed(ctx: Ctx, d: LightningReceive, event: ReceiveCanceled) -> bool:
    """The user's cancel is taken once the server says the receive is canceled (the same
    status read as the step's other guards). A cancel the server never applied (a lying
    answer) is not taken: the receive goes on waiting, and the event dies with it."""
    return await receive_canceled(ctx, d)


async def payment_arrived(ctx: Ctx, d: LightningReceive) -> bool:
    """The payer's HTLC is there. ``SETTLED`` counts too: the grant and the claim are replays
    on the server, so the action walks forward to its end instead of retrying forever."""
    state = (await _status(ctx, d)).state
    return state in (ReceiveState.ACCEPTED, ReceiveState.HTLCS_READY, ReceiveState.SETTLED)


async def invoice_expired(ctx: Ctx, d: LightningReceive) -> bool:
    if (await _status(ctx, d)).state is not ReceiveState.CREATED:
        return False
    return ctx.services.clock.now() - INVOICE_EXPIRY_GRACE > d.invoice.expires_at


async def pin_grant_request(ctx: Ctx, d: LightningReceive) -> LightningReceive:
    """Fix the HTLC expiry and the anti-DoS proof (`lightning_receive_grant.pin`)."""
    pinned = await pin(ctx.services, d.payment_hash, d.cltv_delta, d.anti_dos_token)
    return attrs.evolve(d, grant_request=pinned)


async def take_grant(ctx: Ctx, d: LightningReceive) -> LightningReceive:
    """Ask for the HTLC-recv VTXOs, check them, record the movement, hold and store them."""
    svc = ctx.services
    req = d.grant_request
    assert req is not None
    grant = await svc.server.prepare_lightning_receive_claim(
        d.payment_hash,
        svc.wallet.derive_key(d.key_index),
        req.htlc_expiry,
        req.proof,
        ctx.idempotency_key,
    )
    problem = await grant_problem(svc, req, d.payment_hash, d.key_index, d.invoice.amount, grant)
    if problem is not None:
        _give_up_earlier_take(svc, ctx.action_id, grant.htlc_vtxos)
        raise fsm.Rejected(f"grant rejected: {problem}", code=INVALID_ARGUMENT)
    htlcs = sorted(grant.htlc_vtxos, key=lambda v: v.id)
    total = sum(v.amount for v in htlcs)
    movement = svc.wallet.get_or_create_movement(
        ctx.action_id,
        "lightning_receive",
        intended_balance=d.invoice.amount,
        effective_balance=total,
        fee=max(0, grant.amount - total),
        metadata={
            "payment_hash": d.payment_hash,
            "received_on": d.invoice.encoded,
            "htlc_vtxos": ",".join(v.id for v in htlcs),
            "preimage": d.preimage,
        },
    )
    ctx.acquire(*(v.resource for v in htlcs))
    for v in htlcs:
        svc.wallet.insert_vtxo(v, VtxoState.SPENDABLE)
    return attrs.evolve(d, htlc_vtxo_ids=[v.id for v in htlcs], movement_id=movement.id)


def _give_up_earlier_take(svc: Services, action_id: str, htlcs: Sequence[Vtxo]) -> None:
    """A grant refused now may have been taken by an earlier attempt of this step, whose
    effects ran but whose checkpoint was never written (a kill, a lost write): that attempt
    stored the HTLC VTXOs as spendable and opened the movement, and the check now fails only
    because time moved on (the HTLC expires too soon). They are given up as `abandon` gives
    them up, or the wallet would show as spendable what the server takes back when the HTLC
    expires."""
    wallet = svc.wallet
    stored = [v.id for v in htlcs if wallet.get_vtxo(v.id) is not None]
    if stored:
        wallet.set_vtxo_state(stored, VtxoState.SPENT, allowed_from=SPENDABLE)
    movement = wallet.movement_of(action_id)
    if movement is not None:
        wallet.finish_movement(movement.id, MovementStatus.CANCELED, effective_balance=0)


# -- htlcs_ready ----------------------------------------------------------------------------


async def htlc_near_expiry(ctx: Ctx, d: LightningReceive) -> bool:
    """The tip is within the refresh threshold of the first HTLC's expiry: too late to claim."""
    first = ctx.services.wallet.get_vtxo(d.htlc_vtxo_ids[0])
    if first is None or not isinstance(first.policy, HtlcRecvPolicy):
        raise ValueError(f"HTLC {d.htlc_vtxo_ids[0]} is not in the wallet")
    tip = await ctx.services.chain.tip_height()
    threshold = ctx.services.config.vtxo_refresh_expiry_threshold
    return tip > first.policy.expiry_height - threshold


def abandon(ctx: Ctx, d: LightningReceive) -> LightningReceive:
    """Give up before revealing: the payer's HTLC times out and the money goes back."""
    wallet = ctx.services.wallet
    wallet.set_vtxo_state(d.htlc_vtxo_ids, VtxoState.SPENT, allowed_from=SPENDABLE)
    wallet.finish_movement(_movement(d), MovementStatus.CANCELED, effective_balance=0)
    return d


# -- preimage_revealed ------------------------------------------------------------------------


def _local_target(ctx: Ctx, d: LightningReceive) -> PubkeyPolicy | None:
    """Where a claim to this wallet goes; None when the destination is someone else's."""
    wallet = ctx.services.wallet
    dest = d.claim_destination
    if dest is None:
        return PubkeyPolicy(wallet.derive_key(d.key_index))
    if wallet.key_index_of(dest.pubkey) is not None:
        return PubkeyPolicy(dest.pubkey)
    return None


def claims_to_wallet(ctx: Ctx, d: LightningReceive) -> bool:
    return _local_target(ctx, d) is not None


async def _claim(ctx: Ctx, d: LightningReceive, target: PubkeyPolicy) -> list[Vtxo]:
    """Reveal the preimage for the HTLCs, check the outputs (before registering them: the
    registration's key must only ever carry the true outputs), register them."""
    server = ctx.services.server
    key = ctx.idempotency_key
    ids = sorted(d.htlc_vtxo_ids)
    outputs = await server.claim_lightning_receive(d.payment_hash, d.preimage, ids, target, key)
    htlc_total = sum(v.amount for i in ids if (v := ctx.services.wallet.get_vtxo(i)) is not None)
    check_outputs(f"claim of {d.payment_hash}", [VtxoRequest(htlc_total, target)], outputs)
    await server.register_vtxo_transactions(outputs, call_key(ctx, "register"))
    ctx.services.wallet.set_vtxo_state(ids, VtxoState.SPENT, allowed_from=SPENDABLE)
    return sorted(outputs, key=lambda v: v.id)


async def claim_to_wallet(ctx: Ctx, d: LightningReceive) -> LightningReceive:
    target = _local_target(ctx, d)
    assert target is not None
    outputs = await _claim(ctx, d, target)
    wallet = ctx.services.wallet
    for v in outputs:
        wallet.insert_vtxo(v, VtxoState.SPENDABLE)
    total = sum(v.amount for v in outputs)
    movement = _movement(d)
    wallet.update_movement(movement, MovementUpdate(produced=[v.id for v in outputs]))
    wallet.finish_movement(movement, MovementStatus.SUCCESSFUL, effective_balance=total)
    wallet.record_settled_receive(d.payment_hash, d.preimage, total)
    return d


async def claim_for_destination(ctx: Ctx, d: LightningReceive) -> LightningReceive:
    assert d.claim_destination is not None
    outputs = await _claim(ctx, d, PubkeyPolicy(d.claim_destination.pubkey))
    return attrs.evolve(d, claim_outputs=outputs)


# -- delivering -------------------------------------------------------------------------------


class DeliveryFailed(ServerUnavailable):
    """No mailbox of the destination accepted the claimed VTXOs (transient: retried)."""


async def deliver(ctx: Ctx, d: LightningReceive) -> LightningReceive:
    """Post the claimed VTXOs to the destination's mailboxes (one acceptance suffices)."""
    dest = d.claim_destination
    assert dest is not None
    errors: list[Exception] = []
    for i, mailbox in enumerate(dest.mailbox_ids):
        try:
            key = call_key(ctx, f"post{i}")
            await ctx.services.server.post_to_mailbox(mailbox, d.claim_outputs, key)
        except (ServerUnavailable, fsm.Rejected) as exc:
            errors.append(exc)
    if len(errors) == len(dest.mailbox_ids):
        rejected = [e for e in errors if isinstance(e, fsm.Rejected)]
        if errors and len(rejected) == len(errors):
            raise rejected[0]
        raise DeliveryFailed(f"no mailbox accepted the claim of {d.payment_hash}: {errors}")
    wallet = ctx.services.wallet
    movement = _movement(d)
    wallet.update_movement(movement, MovementUpdate(metadata={"sent_to": dest.pubkey}))
    wallet.finish_movement(movement, MovementStatus.SUCCESSFUL, effective_balance=0)
    wallet.record_settled_receive(d.payment_hash, d.preimage, d.invoice.amount)
    return d


# -- the user's exit -----------------------------------------------------------------------------


def exit_requested(ctx: Ctx, d: LightningReceive) -> bool:
    """A request written into the checkpoint by the exit of before events (see the field)."""
    return d.exit_requested


def exit_on_request(ctx: Ctx, d: LightningReceive, event: ExitRequested) -> LightningReceive:
    """The user's `ExitRequested`: `exit_htlcs`, in the step that takes the event."""
    return exit_htlcs(ctx, d)


def exit_htlcs(ctx: Ctx, d: LightningReceive) -> LightningReceive:
    """Take the HTLCs on chain (the wallet marks them exited), record them on the movement
    and fail it (as board and lightning send do), keep the preimage as the settled record (the
    exit needs it). Every call is a no-op when repeated."""
    wallet = ctx.services.wallet
    for vtxo_id in d.htlc_vtxo_ids:
        wallet.start_exit(vtxo_id)
    wallet.set_vtxo_state(d.htlc_vtxo_ids, VtxoState.EXITED, allowed_from=SPENDABLE)
    if d.movement_id is not None:
        exits = MovementUpdate(metadata={"exited_vtxos": ",".join(d.htlc_vtxo_ids)})
        wallet.update_movement(d.movement_id, exits)
        wallet.finish_movement(d.movement_id, MovementStatus.FAILED)
    amount = sum(v.amount for i in d.htlc_vtxo_ids if (v := wallet.get_vtxo(i)) is not None)
    wallet.record_settled_receive(d.payment_hash, d.preimage, amount)
    return d


# -- after a rejection or a spent claim budget ---------------------------------------------


def keep_pending(ctx: Ctx, d: LightningReceive, error: BaseException) -> fsm.Outcome:
    """The preimage is out: never give up. A transient error within the wallet's claim budget
    waits the usual backoff; past it, or on a rejection, park with the error and no wake-up:
    the next drive (a sync, a notify) tries again, or the user exits
    (`lightning_receive_ops`)."""
    state = (
        LightningReceiveKind.delivering
        if d.claim_outputs
        else LightningReceiveKind.preimage_revealed
    )
    here = LightningReceiveKind.create(d, state)
    rejected = isinstance(error, fsm.Rejected)
    if not rejected and ctx.attempts < ctx.services.config.lightning_receive_claim_retries:
        return fsm.Park(here, wake_after=CLAIM_BACKOFF.delay(ctx.attempts))
    note = "rejected" if rejected else "retry budget exhausted"
    return fsm.Park(here, error=ServerUnavailable(f"{note}: {error}"))


class LightningReceiveKind(Kind[LightningReceive, Services]):
    """bark's lightning receive: wait for the payer, take the HTLCs, claim, deliver."""

    name = "lightning_receive"
    events = (ReceiveCanceled, ExitRequested)
    unaccepted = "reject"
    """A cancel or an exit is for one state; sent when the receive has moved on (a race with
    the check the operation makes first), it is refused, so the caller knows it was not
    taken, rather than queued to be deleted unread with the action."""

    awaiting_payment = State.wait(after=4.0, initial=True, doc="poll the server every 4 s")
    htlcs_ready = State(doc="HTLCs held; preimage not revealed; abandonable")
    preimage_revealed = State(retry=CLAIM_RETRY, doc="point of no return: claim")
    delivering = State(retry=CLAIM_RETRY, doc="claim outputs only in the checkpoint")
    settled = State.done()
    expired = State.done(doc="invoice expired unpaid")
    abandoned = State.done(doc="HTLC near expiry before the reveal")
    exited = State.done(doc="HTLCs taken on chain at the user's request")
    canceled = State.failed(doc="canceled on the server")
    refused = State.failed(doc="server rejection or grant rejected")

    transitions = (
        awaiting_payment.to(awaiting_payment, guard=grant_request_stale, effect=pin_grant_request),
        awaiting_payment.to(canceled, on=ReceiveCanceled, guard=cancel_confirmed),
        awaiting_payment.to(htlcs_ready, guard=grant_request_pinned, effect=take_grant),
        awaiting_payment.to(canceled, guard=receive_canceled),
        awaiting_payment.to(awaiting_payment, guard=payment_arrived, effect=pin_grant_request),
        awaiting_payment.to(expired, guard=invoice_expired),
        htlcs_ready.to(abandoned, guard=htlc_near_expiry, effect=abandon),
        htlcs_ready.to(preimage_revealed),
        preimage_revealed.to(exited, on=ExitRequested, effect=exit_on_request),
        preimage_revealed.to(exited, guard=exit_requested, effect=exit_htlcs),
        preimage_revealed.to(settled, guard=claims_to_wallet, effect=claim_to_wallet),
        preimage_revealed.to(delivering, effect=claim_for_destination),
        delivering.to(settled, effect=deliver),
        awaiting_payment.rejected(to=refused),
        preimage_revealed.rejected(handler=keep_pending, to=()),
        delivering.rejected(handler=keep_pending, to=()),
    )

    @staticmethod
    def action_id(data: LightningReceive) -> str:
        return lightning_receive_id(data.payment_hash)


__all__ = [
    "LightningReceive",
    "LightningReceiveKind",
    "lightning_receive_id",
]
