"""Paying a BOLT12 offer starts with an invoice for it (bark's ``pay_lightning_offer``).

An offer is a reusable payment code, not a payment: the wallet asks the server to fetch an
invoice from the offer's node (`fetch_offer_invoice`, bark's ``fetch_bolt12_invoice``), checks
that the invoice was issued for that offer (bark's ``validate_issuance``: the offer's node
signed it, for the offer's amount or the payer's), and pays that invoice as any other. Every
fetch is a new invoice with a payment hash of its own, so paying an offer again is a new
payment (a new ``ln_pay.<hash>`` action), and a fetch whose answer is lost costs only an
invoice nobody pays.

The fetch happens before the send exists, as in bark: the send's id is the invoice's
payment hash.
"""

from __future__ import annotations

from .model import Invoice, Offer, bolt12_signature
from .services import Services


class InvalidOfferInvoice(ValueError):
    """The invoice fetched for an offer was not issued for it (a lying proxy rewrote it, or
    another node answered): nothing is paid."""


def check_issuance(offer: Offer, invoice: Invoice, amount: int | None) -> None:
    """bark's ``validate_issuance``: the invoice names the offer, its node signed it, it asks
    the offer's amount (or the payer's, for an offer without one) on the offer's network."""
    if invoice.offer_id != offer.offer_id:
        raise InvalidOfferInvoice(f"the invoice was not issued for offer {offer.offer_id}")
    expected = bolt12_signature(offer.node_id, offer.offer_id, invoice.payment_hash, invoice.amount)
    if invoice.signature != expected:
        raise InvalidOfferInvoice(f"the invoice is not signed by the node of {offer.offer_id}")
    asked = offer.amount or amount
    if asked is not None and invoice.amount != asked:
        raise InvalidOfferInvoice(f"the invoice asks {invoice.amount} sats, not {asked}")
    if invoice.network is not offer.network:
        raise InvalidOfferInvoice(f"the invoice is for {invoice.network.value}")


async def fetch_offer_invoice(services: Services, offer: Offer, amount: int | None) -> Invoice:
    """A new invoice for ``offer``, checked (`check_issuance`). ``amount`` is required for an
    offer without one and must match the offer's otherwise. The server's refusals
    (``fsm.Rejected``) and its unavailability propagate: nothing exists yet, so the caller
    simply tries again (a new fetch)."""
    if offer.network is not services.config.network:
        raise ValueError(
            f"offer is for {offer.network.value}, the wallet is on {services.config.network.value}"
        )
    if offer.amount and amount is not None and amount != offer.amount:
        raise ValueError(f"offer asks {offer.amount} sats, not {amount}")
    if not offer.amount and (amount is None or amount <= 0):
        raise ValueError("an offer without an amount needs a positive amount")
    invoice = await services.server.fetch_bolt12_invoice(offer, amount)
    check_issuance(offer, invoice, amount)
    return invoice


__all__ = ["InvalidOfferInvoice", "check_issuance", "fetch_offer_invoice"]
