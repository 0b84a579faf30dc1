"""The simulated Lightning network outside the Ark: payees of sends, payers of receives.

Payees issue BOLT11 invoices (`LightningNodeState.create_invoice`) and BOLT12 offers
(`create_offer`); an offer is paid through an invoice its node issues for each request
(`fetch_invoice`: every fetch a new invoice, with its own preimage and payment hash). How a
payment to an invoice goes is its `lightning_payments.Route`, drawn from the seeded stream
when the invoice is made (fail with rate ``Faults.ln_fail`` after up to
``Faults.ln_max_pending_polls`` pending polls; no route with rate ``Faults.ln_no_route``; up
to ``Faults.ln_max_parts`` parts) or scripted by a test (`set_outcome`, `set_offer_outcome`,
`resolve`). The server's node carries payments through `lightning_payments.Payments`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from ..model import Invoice, Network, Offer, bolt12_signature, digest, payment_hash_of
from ..services.lightning_node import PaymentStatus
from .db import Db, dump, load
from .lightning_payments import LN_PAYMENT_SCHEMA, OPEN, Part, Payments, Route
from .world_faults import FaultGate

if TYPE_CHECKING:
    from ..sim.clock import SimClock
    from ..sim.server_state import ServerState

LIGHTNING_SCHEMA = ";".join(
    [
        """
CREATE TABLE IF NOT EXISTS ln_invoice (
    payment_hash TEXT PRIMARY KEY,
    key TEXT UNIQUE NOT NULL,
    body TEXT NOT NULL,
    preimage TEXT NOT NULL,
    route TEXT NOT NULL,
    polls INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    reason TEXT
)
""",
        """
CREATE TABLE IF NOT EXISTS ln_offer (
    offer_id TEXT PRIMARY KEY,
    key TEXT UNIQUE NOT NULL,
    body TEXT NOT NULL,
    route TEXT,
    fetched INTEGER NOT NULL DEFAULT 0
)
""",
        LN_PAYMENT_SCHEMA,
    ]
)

INVOICE_TTL = 3600.0
NODE_ID = digest("sim-lightning-node")
"""The payees' node (one node stands for the whole network outside the Ark)."""


class OfferRefused(ValueError):
    """The offer's node refuses the invoice request (wrong amount, expired offer)."""


class UnknownOffer(OfferRefused):
    """No node of the network made this offer."""


class LightningNodeState:
    def __init__(self, db: Db, gate: FaultGate, clock: SimClock) -> None:
        self.db = db
        self.gate = gate
        self.clock = clock
        self.payments = Payments(db)

    def _draw_route(self) -> Route:
        """A payment's route from the seeded stream; a knob at 0 draws nothing, so worlds
        that do not use it see the stream they always saw."""
        faults = self.gate.faults
        fail = self.gate.chance(faults.ln_fail)
        polls = int(self.gate.random() * (faults.ln_max_pending_polls + 1))
        no_route = self.gate.chance(faults.ln_no_route)
        parts = lost = 0
        if faults.ln_max_parts > 1:
            parts = 1 + int(self.gate.random() * faults.ln_max_parts)
            lost = int(self.gate.random() * parts)
        return Route(fail, polls, max(parts, 1), lost, no_route)

    def create_invoice(
        self,
        amount: int,
        description: str,
        key: str,
        *,
        offer: Offer | None = None,
        route: Route | None = None,
    ) -> Invoice:
        """The payee's invoice (idempotent per ``key``); a BOLT12 one when ``offer`` issues it."""
        with self.db.transaction():
            row = self.db.one("SELECT body FROM ln_invoice WHERE key = ?", (key,))
            if row is not None:
                existing: Invoice = load(row[0], Invoice)
                return existing
            preimage = digest("ln-preimage", self.gate.seed, key)
            payment_hash = payment_hash_of(preimage)
            invoice = Invoice(
                payment_hash,
                amount,
                self.clock.now() + INVOICE_TTL,
                Network.REGTEST,
                description,
            )
            if offer is not None:
                signature = bolt12_signature(offer.node_id, offer.offer_id, payment_hash, amount)
                invoice = attrs.evolve(invoice, offer_id=offer.offer_id, signature=signature)
            route = route or self._draw_route()
            self.db.run(
                "INSERT INTO ln_invoice (payment_hash, key, body, preimage, route, state) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (payment_hash, key, dump(invoice), preimage, dump(route), OPEN),
            )
        return invoice

    def set_outcome(
        self,
        payment_hash: str,
        *,
        fail: bool,
        pending_polls: int = 0,
        parts: int = 1,
        lost_parts: int = 0,
        no_route: bool = False,
        hold: bool = False,
    ) -> None:
        """Script how paying this invoice goes (`lightning_payments.Route`)."""
        route = Route(fail, pending_polls, parts, lost_parts, no_route, hold)
        self.payments.set_route(payment_hash, route)

    def resolve(self, payment_hash: str, *, settle: bool) -> None:
        """The payee of a held payment decides: settle it, or fail it back."""
        self.payments.resolve(payment_hash, settle=settle)

    def parts(self, payment_hash: str) -> list[Part]:
        """The parts the network carried the payment in, as they are now."""
        return self.payments.parts_of(payment_hash)

    # -- offers ------------------------------------------------------------------------

    def create_offer(
        self, amount: int, description: str, key: str, expires_at: float | None = None
    ) -> Offer:
        """A payee's BOLT12 offer (idempotent per ``key``); ``amount`` 0: the payer chooses;
        no invoice is issued for it after ``expires_at`` (world time), if given."""
        with self.db.transaction():
            row = self.db.one("SELECT body FROM ln_offer WHERE key = ?", (key,))
            if row is not None:
                existing: Offer = load(row[0], Offer)
                return existing
            offer = Offer(
                digest("ln-offer", self.gate.seed, key),
                NODE_ID,
                amount,
                Network.REGTEST,
                description,
                expires_at,
            )
            self.db.run(
                "INSERT INTO ln_offer (offer_id, key, body) VALUES (?, ?, ?)",
                (offer.offer_id, key, dump(offer)),
            )
        return offer

    def set_offer_outcome(
        self,
        offer_id: str,
        *,
        fail: bool,
        pending_polls: int = 0,
        parts: int = 1,
        lost_parts: int = 0,
        no_route: bool = False,
        hold: bool = False,
    ) -> None:
        """Script how paying each invoice fetched from this offer from now on goes."""
        route = Route(fail, pending_polls, parts, lost_parts, no_route, hold)
        with self.db.transaction():
            self.db.run("UPDATE ln_offer SET route = ? WHERE offer_id = ?", (dump(route), offer_id))

    def fetch_invoice(self, offer: Offer, amount: int | None) -> Invoice:
        """The offer's node issues a new invoice for an invoice request (BOLT12): the
        offer's amount, or the payer's for an offer without one."""
        with self.db.transaction():
            row = self.db.one(
                "SELECT key, body, route, fetched FROM ln_offer WHERE offer_id = ?",
                (offer.offer_id,),
            )
            if row is None:
                raise UnknownOffer(f"unknown offer {offer.offer_id}")
            key, body, scripted, fetched = row
            made: Offer = load(body, Offer)
            if made != offer:
                raise OfferRefused(f"offer {offer.offer_id} is not the one its node made")
            if made.expires_at is not None and self.clock.now() > made.expires_at:
                raise OfferRefused(f"offer {offer.offer_id} has expired")
            if made.amount and amount is not None and amount != made.amount:
                raise OfferRefused(f"offer asks {made.amount} sats, not {amount}")
            pay = made.amount or amount or 0
            if pay <= 0:
                raise OfferRefused("an offer without an amount needs a positive amount")
            self.db.run(
                "UPDATE ln_offer SET fetched = fetched + 1 WHERE offer_id = ?", (offer.offer_id,)
            )
            route = None if scripted is None else load(scripted, Route)
            return self.create_invoice(
                pay, made.description, f"{key}.invoice.{fetched}", offer=made, route=route
            )

    # -- the server's node -------------------------------------------------------------

    def start_payment(self, payment_hash: str, amount: int) -> PaymentStatus:
        return self.payments.start_payment(payment_hash, amount)

    def route(self, payment_hash: str) -> PaymentStatus:
        """One poll of a payment the server routes to this node's invoice ``payment_hash``."""
        return self.payments.poll_payment(payment_hash)

    def abandon(self, payment_hash: str, reason: str) -> None:
        self.payments.abandon(payment_hash, reason)


class SimLightningNode:
    """`LightningNode`: creates payee invoices and offers; pays the server's (receive)
    invoices."""

    def __init__(self, state: LightningNodeState, server: ServerState) -> None:
        self.state = state
        self.server = server

    async def create_invoice(self, amount: int, description: str, idempotency_key: str) -> Invoice:
        return self.state.create_invoice(amount, description, idempotency_key)

    async def create_offer(self, amount: int, description: str, idempotency_key: str) -> Offer:
        return self.state.create_offer(amount, description, idempotency_key)

    async def pay_invoice(self, invoice: Invoice, idempotency_key: str) -> None:
        self.server.accept_payment(invoice, idempotency_key)

    async def payment_status(self, payment_hash: str) -> PaymentStatus:
        return self.server.payer_status(payment_hash)
