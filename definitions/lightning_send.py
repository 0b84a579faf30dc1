"""Lightning send: pay an invoice through the Ark server (bark's ``LightningSend``, ref. 2.4).

The inputs become a server-HTLC VTXO (plus change), the server is asked to pay, and the
payment ends one of three ways: paid (the preimage settles it), revoked (the server gives
the HTLC back), or exited (revocation is stuck, the user opted in, the HTLC is near expiry)::

    start -> htlc_received -> payment_initiated -> paid
      |            \\                 \\
      v             `-----------------> revocable -> revoked
    abandoning -> not_sent                 |            ^
                                  revocation_stuck -----'
                                           |
                                        exiting -> exited

(revocable and revocation_stuck also end in paid when the payee paid after all.)

"Near expiry" is bark's rule: tip > ``htlc_expiry`` - ``vtxo_refresh_expiry_threshold``. bark
applies it in ``on_retry``; here it is a guard checked before each attempt (a retry is the next
attempt), so it shows in the table and the diagram.

Differences from bark, each named in docs/definitions/lightning_send.md: the inputs are fsm
resources from the first checkpoint; the movement is created by the first step and finished
``failed`` when the send cannot start (bark leaves it pending forever); giving up at ``start``
first asks the server whether it cosigned the HTLC, and adopts the HTLC if it did, so inputs
the server has spent are never released; ``revocable`` tolerates a few transient errors
before it counts as stuck; a payment that succeeds while it is being revoked (pending past
near expiry, the server refusing to revoke it in flight) is settled, never revoked; a failed
send's movement carries the reason; and the mailbox "payment finished" path is an event
(`events.PaymentFinished`, sent by `lightning_send_ops.lightning_send_finished`) taken by
``payment_initiated`` under the action's lease, never a settle around it. The
starter is in `lightning_send_start`, the user's operations (paying an invoice, paying a
BOLT12 offer through a fetched invoice: `lightning_offer`) in `lightning_send_ops`.
"""

from __future__ import annotations

import attrs

import fsm
from fsm import Kind, RetryPolicy, State, StepContext

from .answers import check_outputs
from .calls import call_key
from .events import PaymentFinished
from .model import (
    Invoice,
    Movement,
    MovementStatus,
    MovementUpdate,
    Offer,
    PubkeyPolicy,
    ServerHtlcSendPolicy,
    Vtxo,
    VtxoRequest,
    VtxoState,
    payment_hash_of,
)
from .services import Services
from .services.ark_records import HtlcSendRequest, RecoveryPost
from .services.ark_server import ServerUnavailable
from .services.lightning_node import PaymentState, PaymentStatus

POLL_SECONDS = 2.0
"""How often a waiting payment is polled (bark: park 2 s)."""

REVOCATION_ATTEMPTS = 3
"""Transient revocation failures before the send counts as stuck (bark: the first one)."""

SPENDABLE_ONLY = frozenset({VtxoState.SPENDABLE})

NEAR_EXPIRY = "the HTLC is near expiry and the payment has not finished"

Ctx = StepContext[Services]


@attrs.frozen
class LightningSend:
    """The checkpoint. All fields but the last four are fixed at creation.

    ``htlc_key`` owns the HTLC and the change; ``revocation_key`` receives revoked HTLCs
    (both reserved at creation, so every re-run builds the same requests).
    """

    invoice: Invoice
    amount: int
    fee: int
    input_ids: list[str]
    change_pieces: list[int]
    htlc_key: str
    revocation_key: str
    htlc_expiry: int
    allow_exit_of_htlcs: bool = False
    movement_id: int | None = None
    htlc_ids: list[str] = attrs.Factory(list)
    mailbox_id: str | None = None
    refusal: str | None = None
    """Why the send failed, for its movement (``failure``): the server's refusal of the HTLC
    cosign (a stale fee quote, ...) or of the payment, the payment's failure as the server
    reports it (no route, the payee failed it back, ...), or the HTLC's expiry."""
    offer: Offer | None = None
    """The BOLT12 offer the invoice was fetched from (bark's original payment method), for
    the movement; ``None`` for an invoice paid as is."""

    @property
    def payment_hash(self) -> str:
        return self.invoice.payment_hash


def lightning_send_id(payment_hash: str) -> str:
    """``ln_pay.<hash>``: at most one send of a payment hash in flight."""
    return f"ln_pay.{payment_hash}"


# -- reads -------------------------------------------------------------------------------------


async def near_expiry(ctx: Ctx, d: LightningSend) -> bool:
    """bark's rule: the HTLC expires within the wallet's refresh threshold."""
    tip = await ctx.services.chain.tip_height()
    return tip > d.htlc_expiry - ctx.services.config.vtxo_refresh_expiry_threshold


async def _status(ctx: Ctx, d: LightningSend) -> PaymentStatus:
    """The server's view, read once per step so its guards and its effect decide on the same
    answer (and one poll is one poll); errors read as "pending" (bark never fails on it)."""
    status: PaymentStatus | None = ctx.memo.get(_status)
    if status is not None:
        return status
    try:
        status = await ctx.services.server.check_lightning_payment(d.payment_hash)
    except (ServerUnavailable, fsm.Rejected) as exc:
        ctx.log.info("payment status unavailable, assuming pending: %s", exc)
        status = PaymentStatus(PaymentState.PENDING)
    ctx.memo[_status] = status
    return status


async def _preimage(ctx: Ctx, d: LightningSend) -> str | None:
    """The verified preimage: from the paid-invoice fact, else from the server."""
    known = ctx.services.wallet.paid_invoice(d.payment_hash)
    if known is not None:
        return known
    status = await _status(ctx, d)
    if status.state is PaymentState.SUCCEEDED and status.preimage is not None:
        if payment_hash_of(status.preimage) == d.payment_hash:
            return status.preimage
        ctx.log.warning("server reported a preimage that does not match the payment hash")
    return None


def _movement(ctx: Ctx, d: LightningSend) -> Movement:
    """The send's movement, created pending the first time, keyed by the action id and the
    incarnation: paying a hash again after a revoked or refused attempt is a new movement.
    It is sent to the offer when the invoice came from one (bark's original payment
    method), with the invoice beside it."""
    metadata = {"payment_hash": d.payment_hash, "sent_to": d.invoice.encoded}
    if d.offer is not None:
        metadata |= {"sent_to": d.offer.encoded, "invoice": d.invoice.encoded}
    return ctx.services.wallet.get_or_create_movement(
        ctx.action_id,
        "lightning_send",
        intended_balance=-d.amount,
        effective_balance=-(d.amount + d.fee),
        fee=d.fee,
        consumed=d.input_ids,
        metadata=metadata,
        attempt=ctx.incarnation,
    )


async def _failure(ctx: Ctx, d: LightningSend) -> str | None:
    """Why the revoked payment failed: the server's reason when it reports the payment
    failed now (the payee failed it back after all, its HTLC expired, ...), else the one
    kept on the way here."""
    status = await _status(ctx, d)
    if status.state is PaymentState.FAILED and status.error is not None:
        return status.error
    return d.refusal


async def _register_best_effort(ctx: Ctx, vtxos: list[Vtxo]) -> None:
    try:
        await ctx.services.server.register_vtxo_transactions(vtxos, call_key(ctx, "outputs"))
    except (ServerUnavailable, fsm.Rejected) as exc:
        ctx.log.warning("could not register outputs (best effort): %s", exc)


# -- guards ------------------------------------------------------------------------------------


async def htlc_cosigned(ctx: Ctx, d: LightningSend) -> bool:
    """Did the server cosign an HTLC for this payment (so it spent our inputs)?

    Errors propagate: giving up must wait until the server can say no.
    """
    status = await ctx.services.server.check_lightning_payment(d.payment_hash)
    return status.state in (PaymentState.PENDING, PaymentState.SUCCEEDED)


async def payment_succeeded(ctx: Ctx, d: LightningSend) -> bool:
    return await _preimage(ctx, d) is not None


async def payment_failed_or_near_expiry(ctx: Ctx, d: LightningSend) -> bool:
    """Failed, or not settled while the HTLC is near (or past) expiry: revoke."""
    status = await _status(ctx, d)
    return status.state is PaymentState.FAILED or await near_expiry(ctx, d)


async def finished_paid(ctx: Ctx, d: LightningSend, event: PaymentFinished) -> bool:
    """The mailbox's "finished" is taken as paid when the server gives the preimage."""
    return await payment_succeeded(ctx, d)


async def finished_unpaid(ctx: Ctx, d: LightningSend, event: PaymentFinished) -> bool:
    """The mailbox's "finished" is taken as failed when the server says so (or the HTLC is
    near expiry). Neither (the status unreadable, which reads as pending): it stays in the
    inbox for the next poll."""
    return await payment_failed_or_near_expiry(ctx, d)


async def may_exit(ctx: Ctx, d: LightningSend) -> bool:
    """Exit the HTLC on chain: only if the user opted in and it is near expiry."""
    return d.allow_exit_of_htlcs and await near_expiry(ctx, d)


# -- effects -----------------------------------------------------------------------------------


async def request_htlc(ctx: Ctx, d: LightningSend) -> LightningSend:
    """Turn the inputs into the HTLC (amount + fee) and change; the server replays an
    identical request, so this is also how ``abandoning`` adopts an HTLC it finds. The
    request names the wallet's mailbox in a recovery post: the server posts the change there
    with the spend, lists the send there until it settles or is revoked, and posts a
    revocation's output there (`recovery`: a wallet restored from its seed finds them)."""
    wallet = ctx.services.wallet
    movement = _movement(ctx, d)
    change = [VtxoRequest(p, PubkeyPolicy(d.htlc_key)) for p in d.change_pieces]
    htlc_request = VtxoRequest(
        d.amount + d.fee, ServerHtlcSendPolicy(d.htlc_key, d.payment_hash, d.htlc_expiry)
    )
    recovery = RecoveryPost(wallet.mailbox_id(), list(range(1, 1 + len(change))))
    request = HtlcSendRequest(
        d.input_ids, d.invoice, d.amount, d.htlc_key, d.htlc_expiry, change, d.fee, recovery
    )
    outputs = await ctx.services.server.request_lightning_pay_htlc_cosign(
        request, ctx.idempotency_key
    )
    check_outputs(f"htlc of {d.payment_hash}", [htlc_request, *change], outputs)
    htlc, change_vtxos = outputs[0], outputs[1:]
    await _register_best_effort(ctx, outputs)
    ctx.acquire(htlc.resource)
    wallet.insert_vtxo(htlc, VtxoState.SPENDABLE)
    wallet.set_vtxo_state(d.input_ids, VtxoState.SPENT, allowed_from=SPENDABLE_ONLY)
    for vtxo in change_vtxos:
        wallet.insert_vtxo(vtxo, VtxoState.SPENDABLE)
    wallet.update_movement(
        movement.id,
        MovementUpdate(
            effective_balance=-htlc.amount,
            produced=[v.id for v in change_vtxos],
            metadata={"htlc_vtxos": htlc.id},
        ),
    )
    return attrs.evolve(
        d, movement_id=movement.id, htlc_ids=[htlc.id], mailbox_id=wallet.mailbox_id()
    )


def fail_movement(ctx: Ctx, d: LightningSend) -> LightningSend:
    """Nothing was cosigned: the movement failed, moving nothing, with the server's reason
    when it refused (fsm releases the inputs)."""
    wallet = ctx.services.wallet
    movement = _movement(ctx, d).id
    if d.refusal is not None:
        wallet.update_movement(movement, MovementUpdate(metadata={"failure": d.refusal}))
    wallet.finish_movement(movement, MovementStatus.FAILED, effective_balance=0)
    return d


def cosign_refused(ctx: Ctx, d: LightningSend, error: BaseException) -> fsm.Outcome:
    """A refused HTLC cosign keeps the server's reason (a fee quote the schedule no longer
    gives, ...), then abandons: which asks whether the server cosigned anyway."""
    refused = attrs.evolve(d, refusal=str(error))
    return LightningSendKind.goto(refused, LightningSendKind.abandoning)


async def note_failure(ctx: Ctx, d: LightningSend) -> LightningSend:
    """On the way to revocation: keep why (the server's reason for a failed payment, or the
    HTLC's expiry) for the movement."""
    status = await _status(ctx, d)
    if status.state is PaymentState.FAILED:
        return attrs.evolve(d, refusal=status.error or "the payment failed")
    return attrs.evolve(d, refusal=NEAR_EXPIRY)


async def note_failure_finished(
    ctx: Ctx, d: LightningSend, event: PaymentFinished
) -> LightningSend:
    """`note_failure`, in the step that takes the mailbox's "finished"."""
    return await note_failure(ctx, d)


def note_near_expiry(ctx: Ctx, d: LightningSend) -> LightningSend:
    """The HTLC neared its expiry before the payment was initiated."""
    return attrs.evolve(d, refusal=NEAR_EXPIRY)


def payment_refused(ctx: Ctx, d: LightningSend, error: BaseException) -> fsm.Outcome:
    """A refused initiation (or status): revoke, keeping the server's reason."""
    return LightningSendKind.goto(attrs.evolve(d, refusal=str(error)), LightningSendKind.revocable)


async def initiate_payment(ctx: Ctx, d: LightningSend) -> LightningSend:
    """Ask the server to pay the invoice with the HTLC; it notifies our mailbox when done."""
    assert d.mailbox_id is not None  # set with the HTLC
    await ctx.services.server.initiate_lightning_payment(
        d.invoice, d.htlc_ids, d.amount, d.mailbox_id, ctx.idempotency_key
    )
    return d


async def settle_finished(ctx: Ctx, d: LightningSend, event: PaymentFinished) -> LightningSend:
    """`settle`, in the step that takes the mailbox's "finished"."""
    return await settle(ctx, d)


async def settle(ctx: Ctx, d: LightningSend) -> LightningSend:
    """Paid: record the fact (it outlives the checkpoint), the HTLC is spent, movement done."""
    preimage = await _preimage(ctx, d)
    if preimage is None:
        raise ServerUnavailable("the payment's preimage is no longer available; retrying")
    wallet = ctx.services.wallet
    wallet.record_paid_invoice(d.payment_hash, preimage, d.amount)
    wallet.set_vtxo_state(d.htlc_ids, VtxoState.SPENT, allowed_from=SPENDABLE_ONLY)
    movement = _movement(ctx, d)
    wallet.update_movement(movement.id, MovementUpdate(metadata={"preimage": preimage}))
    wallet.finish_movement(movement.id, MovementStatus.SUCCESSFUL)
    return d


async def revoke(ctx: Ctx, d: LightningSend) -> LightningSend:
    """Have the server give the HTLC back to the revocation key; the movement failed."""
    wallet = ctx.services.wallet
    outputs = await ctx.services.server.request_lightning_pay_htlc_revocation(
        d.htlc_ids, d.revocation_key, ctx.idempotency_key
    )
    back = VtxoRequest(d.amount + d.fee, PubkeyPolicy(d.revocation_key))
    check_outputs(f"revocation of {d.payment_hash}", [back], outputs)
    await _register_best_effort(ctx, outputs)
    movement = _movement(ctx, d)
    why = await _failure(ctx, d)
    failure = {} if why is None else {"failure": why}
    wallet.update_movement(
        movement.id,
        MovementUpdate(effective_balance=0, produced=[v.id for v in outputs], metadata=failure),
    )
    for vtxo in outputs:
        wallet.insert_vtxo(vtxo, VtxoState.SPENDABLE)
    wallet.set_vtxo_state(d.htlc_ids, VtxoState.SPENT, allowed_from=SPENDABLE_ONLY)
    wallet.finish_movement(movement.id, MovementStatus.FAILED)
    return d


def exit_htlcs(ctx: Ctx, d: LightningSend) -> LightningSend:
    """Request the unilateral exit of the HTLC (the `exit` kind plays it out on chain); the
    movement failed."""
    wallet = ctx.services.wallet
    exited = [v for i in d.htlc_ids if (v := wallet.get_vtxo(i)) is not None]
    for htlc_id in d.htlc_ids:
        wallet.start_exit(htlc_id)
    wallet.set_vtxo_state(d.htlc_ids, VtxoState.EXITED, allowed_from=SPENDABLE_ONLY)
    movement = _movement(ctx, d)
    effective = -(d.amount + d.fee) + sum(v.amount for v in exited)
    exits = {"exited_vtxos": ",".join(d.htlc_ids)}
    wallet.update_movement(movement.id, MovementUpdate(effective_balance=effective, metadata=exits))
    wallet.finish_movement(movement.id, MovementStatus.FAILED)
    return d


async def revocation_refused(ctx: Ctx, d: LightningSend, error: BaseException) -> fsm.Outcome:
    """bark's ``RevocationStuck`` rejection: exit if opted in and near expiry, else park
    with the error, no wake-up (a notify, a resume or the next sync tries again)."""
    if await may_exit(ctx, d):
        return LightningSendKind.goto(d, LightningSendKind.exiting)
    here = LightningSendKind.create(d, LightningSendKind.revocation_stuck)
    return fsm.Park(here, error=error)


# -- the kind ----------------------------------------------------------------------------------


class LightningSendKind(Kind[LightningSend, Services]):
    name = "lightning_send"
    events = (PaymentFinished,)
    unaccepted = "queue"
    """A "payment finished" that arrives before ``payment_initiated`` is checkpointed (the
    server may finish before the initiate's checkpoint is written) waits for it."""

    start = State(initial=True, doc="inputs held; get the HTLC cosigned")
    abandoning = State(doc="cannot start: adopt the HTLC if the server made it, else give up")
    htlc_received = State(doc="ask the server to pay")
    payment_initiated = State.wait(after=POLL_SECONDS, doc="poll the payment every 2 s")
    revocable = State(
        retry=RetryPolicy(max_attempts=REVOCATION_ATTEMPTS), doc="get the HTLC revoked"
    )
    revocation_stuck = State(doc="revocation failed; keep trying")
    exiting = State(doc="exit the HTLC on chain")
    paid = State.done()
    revoked = State.done(doc="HTLC given back; movement failed")
    exited = State.done(doc="HTLC exiting; movement failed")
    not_sent = State.failed(doc="nothing cosigned; inputs released, movement failed")

    transitions = (
        start.to(abandoning, guard=near_expiry),
        start.to(htlc_received, effect=request_htlc),
        abandoning.to(htlc_received, guard=htlc_cosigned, effect=request_htlc),
        abandoning.to(not_sent, effect=fail_movement),
        htlc_received.to(revocable, guard=near_expiry, effect=note_near_expiry),
        htlc_received.to(payment_initiated, effect=initiate_payment),
        # the mailbox's "payment finished" (an event): bark's mailbox path, taken under the
        # lease; the 2 s poll below reaches the same ends without it
        payment_initiated.to(paid, on=PaymentFinished, guard=finished_paid, effect=settle_finished),
        payment_initiated.to(
            revocable, on=PaymentFinished, guard=finished_unpaid, effect=note_failure_finished
        ),
        payment_initiated.to(paid, guard=payment_succeeded, effect=settle),
        payment_initiated.to(revocable, guard=payment_failed_or_near_expiry, effect=note_failure),
        # a payment pending past near expiry may still succeed while the server refuses to
        # revoke it (in flight): the preimage settles it, never a revocation
        revocable.to(paid, guard=payment_succeeded, effect=settle),
        revocable.to(revoked, effect=revoke),
        revocation_stuck.to(paid, guard=payment_succeeded, effect=settle),
        revocation_stuck.to(exiting, guard=may_exit),
        revocation_stuck.to(revoked, effect=revoke),
        exiting.to(exited, effect=exit_htlcs),
        # bark's on_rejection table: a refused cosign changed nothing (abandoning confirms it
        # and fails the movement); a refused payment is revoked; a refused (or repeatedly
        # failing) revocation is stuck; a refused retry of a stuck one parks or exits.
        start.rejected(handler=cosign_refused, to=abandoning),
        htlc_received.rejected(handler=payment_refused, to=revocable),
        payment_initiated.rejected(handler=payment_refused, to=revocable),
        revocable.rejected(to=revocation_stuck),
        revocation_stuck.rejected(handler=revocation_refused, to=exiting),
    )

    @staticmethod
    def action_id(data: LightningSend) -> str:
        return lightning_send_id(data.payment_hash)


__all__ = [
    "LightningSend",
    "LightningSendKind",
    "lightning_send_id",
]
