"""The lightning send's starter: `start_lightning_send` checks the invoice against the wallet
(not paid yet, its network, its amount), selects the inputs for amount + the server's fee,
reserves the keys and fixes the HTLC expiry, and returns the action with its inputs to hold
(`started.Started`). Nothing is written here: the movement is created by the first step.
"""

from __future__ import annotations

from .lightning_offer import check_issuance
from .lightning_send import LightningSend, LightningSendKind
from .model import Invoice, Offer, change_pieces, vtxo_resource
from .services import Services
from .started import Started


class AlreadyPaid(ValueError):
    """The paid-invoice fact says this payment hash was paid already."""


async def start_lightning_send(
    services: Services,
    invoice: Invoice,
    amount: int | None = None,
    *,
    allow_exit_of_htlcs: bool = False,
    offer: Offer | None = None,
) -> Started[LightningSend]:
    """A new lightning send and the resources (its inputs) to start it with.

    ``amount`` is required for an amountless invoice (``invoice.amount == 0``) and must match
    the invoice otherwise. Selects inputs for amount + the server's fee, reserves the HTLC and
    revocation keys, and fixes the HTLC expiry at tip + the server's delta. Nothing else is
    written: the movement is created by the first step. Start it with ``executor.start(action,
    resources=resources)``. ``offer``: the BOLT12 offer ``invoice`` was fetched from
    (`lightning_offer.fetch_offer_invoice`), checked again here and kept for the movement.
    """
    wallet = services.wallet
    if wallet.paid_invoice(invoice.payment_hash) is not None:
        raise AlreadyPaid(f"invoice {invoice.payment_hash} is already paid")
    if invoice.network is not services.config.network:
        raise ValueError(
            f"invoice is for {invoice.network.value}, the wallet is on "
            f"{services.config.network.value}"
        )
    if offer is not None:
        check_issuance(offer, invoice, amount)
    if invoice.amount and amount is not None and amount != invoice.amount:
        raise ValueError(f"invoice asks {invoice.amount} sats, not {amount}")
    pay = invoice.amount or amount or 0
    if pay <= 0:
        raise ValueError("an amountless invoice needs a positive amount")
    info = await services.server.info()
    fee = info.lightning_send_fee(pay)
    tip = await services.chain.tip_height()
    inputs = wallet.select_coins(pay + fee, max_depth=info.max_arkoor_depth, tip=tip)
    change = sum(v.amount for v in inputs) - pay - fee
    d = LightningSend(
        invoice=invoice,
        amount=pay,
        fee=fee,
        input_ids=sorted(v.id for v in inputs),
        change_pieces=change_pieces(change, pay, services.config.change_vtxo_split_factor),
        htlc_key=wallet.derive_key(wallet.next_key_index()),
        revocation_key=wallet.derive_key(wallet.next_key_index()),
        htlc_expiry=tip + info.htlc_send_expiry_delta,
        allow_exit_of_htlcs=allow_exit_of_htlcs,
        offer=offer,
    )
    return Started(LightningSendKind.create(d), [vtxo_resource(i) for i in d.input_ids])


__all__ = ["AlreadyPaid", "start_lightning_send"]
