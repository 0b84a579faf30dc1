"""User operations on lightning sends: pay an invoice or an offer, and the mailbox's "payment
finished".

`pay_lightning_invoice` is bark's ``make_lightning_payment``, built on the kind's starter:
it resumes the send of the hash if one is in flight and starts a new one otherwise.
`pay_lightning_offer` is bark's ``pay_lightning_offer``: it fetches a new invoice for the
offer (`lightning_offer`) and pays it.
`lightning_send_finished` is bark's mailbox path, which here sends the action an event
(`events.PaymentFinished`) instead of settling around the action's lease.
"""

from __future__ import annotations

import fsm

from .events import PaymentFinished, event_key
from .lightning_offer import fetch_offer_invoice
from .lightning_send import lightning_send_id
from .lightning_send_start import start_lightning_send
from .model import Invoice, Offer
from .services import Services


async def pay_lightning_invoice(
    executor: fsm.Executor[Services],
    invoice: Invoice,
    amount: int | None = None,
    *,
    wait: bool = False,
    allow_exit_of_htlcs: bool = False,
) -> fsm.DriveResult:
    """bark's ``make_lightning_payment``: resume the send of this hash if one is in flight,
    else start one; drive it (until done if ``wait``).

    Paying an invoice whose earlier send ended (revoked, refused) is a deliberate new attempt:
    a new incarnation of ``ln_pay.<hash>`` (``again=True``), whose steps get keys of their own,
    so the server never sees a known key with a different request.
    """
    return await _pay(executor, invoice, amount, wait, allow_exit_of_htlcs, None)


async def pay_lightning_offer(
    executor: fsm.Executor[Services],
    offer: Offer,
    amount: int | None = None,
    *,
    wait: bool = False,
    allow_exit_of_htlcs: bool = False,
) -> tuple[Invoice, fsm.DriveResult]:
    """bark's ``pay_lightning_offer``: fetch a new invoice for ``offer`` (``amount`` for an
    offer without one) through the server, check it was issued for the offer, and pay it
    with a send of its own. Returns the invoice (its payment hash names the send) and the
    drive's result.

    Each call is a new payment, with a new invoice and payment hash: an offer is paid as
    often as it is asked to be. A fetch refused or lost raises before any send exists.
    """
    invoice = await fetch_offer_invoice(executor.services, offer, amount)
    result = await _pay(executor, invoice, None, wait, allow_exit_of_htlcs, offer)
    return invoice, result


async def _pay(
    executor: fsm.Executor[Services],
    invoice: Invoice,
    amount: int | None,
    wait: bool,
    allow_exit_of_htlcs: bool,
    offer: Offer | None,
) -> fsm.DriveResult:
    action_id = lightning_send_id(invoice.payment_hash)
    if executor.store.row(action_id) is None:
        action, resources = await start_lightning_send(
            executor.services,
            invoice,
            amount,
            allow_exit_of_htlcs=allow_exit_of_htlcs,
            offer=offer,
        )
        await executor.start(action, resources=resources, again=True)
    mode = fsm.DriveMode.UNTIL_DONE if wait else fsm.DriveMode.UNTIL_PARK_OR_DONE
    return await executor.drive(action_id, mode)


async def lightning_send_finished(
    executor: fsm.Executor[Services], payment_hash: str
) -> fsm.SendResult | None:
    """The mailbox says the server finished this payment: tell the send.

    bark settles right here, around the action lock, racing any running drive. fsm sends a
    `PaymentFinished` into the send's inbox (the same notification twice is one event) and
    returns: the send's next step, a worker's, takes it under the lease, and
    ``payment_initiated`` reads the preimage from the server and settles (or revokes) as its
    table says. Returns ``None`` when the payment is already recorded as paid.
    """
    if executor.services.wallet.paid_invoice(payment_hash) is not None:
        return None
    event = PaymentFinished(payment_hash)
    key = event_key(payment_hash, "finished")
    return await executor.send(lightning_send_id(payment_hash), event, key=key)


__all__ = ["lightning_send_finished", "pay_lightning_invoice", "pay_lightning_offer"]
