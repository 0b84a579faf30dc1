"""The simulated Lightning network outside the Ark: payees of sends, payers of receives.

The node's own invoices (payees) get their outcome when created, drawn from the seeded stream:
fail with rate ``Faults.ln_fail``, else succeed, after up to ``Faults.ln_max_pending_polls``
polls reporting "pending". `set_outcome` scripts one invoice for tests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..model import Invoice, Network, digest, payment_hash_of
from ..services.lightning_node import PaymentState, PaymentStatus
from .db import Db, dump, load
from .world_faults import FaultGate

if TYPE_CHECKING:
    from ..sim.clock import SimClock
    from ..sim.server_state import ServerState

LIGHTNING_SCHEMA = """
CREATE TABLE IF NOT EXISTS ln_invoice (
    payment_hash TEXT PRIMARY KEY,
    key TEXT UNIQUE NOT NULL,
    body TEXT NOT NULL,
    preimage TEXT NOT NULL,
    fail INTEGER NOT NULL,
    pending_polls INTEGER NOT NULL,
    polls INTEGER NOT NULL DEFAULT 0
)
"""

INVOICE_TTL = 3600.0


class LightningNodeState:
    def __init__(self, db: Db, gate: FaultGate, clock: SimClock) -> None:
        self.db = db
        self.gate = gate
        self.clock = clock

    def create_invoice(self, amount: int, description: str, key: str) -> Invoice:
        with self.db.transaction():
            row = self.db.one("SELECT body FROM ln_invoice WHERE key = ?", (key,))
            if row is not None:
                existing: Invoice = load(row[0], Invoice)
                return existing
            preimage = digest("ln-preimage", self.gate.seed, key)
            invoice = Invoice(
                payment_hash_of(preimage),
                amount,
                self.clock.now() + INVOICE_TTL,
                Network.REGTEST,
                description,
            )
            fail = self.gate.chance(self.gate.faults.ln_fail)
            polls = int(self.gate.random() * (self.gate.faults.ln_max_pending_polls + 1))
            self.db.run(
                "INSERT INTO ln_invoice (payment_hash, key, body, preimage, fail, pending_polls) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (invoice.payment_hash, key, dump(invoice), preimage, int(fail), polls),
            )
        return invoice

    def set_outcome(self, payment_hash: str, *, fail: bool, pending_polls: int = 0) -> None:
        with self.db.transaction():
            self.db.run(
                "UPDATE ln_invoice SET fail = ?, pending_polls = ?, polls = 0 "
                "WHERE payment_hash = ?",
                (int(fail), pending_polls, payment_hash),
            )

    def route(self, payment_hash: str) -> PaymentStatus:
        """One poll of a payment the server routes to this node's invoice ``payment_hash``."""
        with self.db.transaction():
            row = self.db.one(
                "SELECT preimage, fail, pending_polls, polls FROM ln_invoice "
                "WHERE payment_hash = ?",
                (payment_hash,),
            )
            if row is None:
                return PaymentStatus(PaymentState.FAILED)
            preimage, fail, pending, polls = row
            self.db.run(
                "UPDATE ln_invoice SET polls = polls + 1 WHERE payment_hash = ?", (payment_hash,)
            )
        if polls < pending:
            return PaymentStatus(PaymentState.PENDING)
        if fail:
            return PaymentStatus(PaymentState.FAILED)
        return PaymentStatus(PaymentState.SUCCEEDED, str(preimage))


class SimLightningNode:
    """`LightningNode`: creates payee invoices; pays the server's (receive) invoices."""

    def __init__(self, state: LightningNodeState, server: ServerState) -> None:
        self.state = state
        self.server = server

    async def create_invoice(self, amount: int, description: str, idempotency_key: str) -> Invoice:
        return self.state.create_invoice(amount, description, idempotency_key)

    async def pay_invoice(self, invoice: Invoice, idempotency_key: str) -> None:
        self.server.accept_payment(invoice, idempotency_key)

    async def payment_status(self, payment_hash: str) -> PaymentStatus:
        return self.server.payer_status(payment_hash)
