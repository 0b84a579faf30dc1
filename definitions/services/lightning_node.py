"""`LightningNode`: the Lightning network outside the Ark, and the status of a payment.

The kinds never call the node (the Ark server is their gateway); demos and tests use it as the
payee of sends (invoices and BOLT12 offers) and the payer of receives. `PaymentStatus` is
also what the server reports for a lightning send.
"""

from __future__ import annotations

import enum
from typing import Protocol

import attrs

from ..model import Invoice, Offer


class PaymentState(enum.Enum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    UNKNOWN = "unknown"


@attrs.frozen
class PaymentStatus:
    """A payment as its payer sees it. A payment is atomic: however the payer's node splits
    it (several parts, each retried on other routes), it is pending until the payee releases
    the preimage for all of it (succeeded) or every part is failed back (failed, with the
    node's reason in ``error``: no route, the payee gave up waiting for the missing parts,
    ...)."""

    state: PaymentState
    preimage: str | None = None
    error: str | None = None


class LightningNode(Protocol):
    """The Lightning network seen from outside the Ark: the payee of sends, payer of receives."""

    async def create_invoice(
        self, amount: int, description: str, idempotency_key: str
    ) -> Invoice: ...

    async def create_offer(self, amount: int, description: str, idempotency_key: str) -> Offer:
        """A BOLT12 offer of a payee (``amount`` 0: any amount)."""
        ...

    async def pay_invoice(self, invoice: Invoice, idempotency_key: str) -> None:
        """Pay an invoice of the Ark server (a wallet's receive): the server accepts the HTLC."""
        ...

    async def payment_status(self, payment_hash: str) -> PaymentStatus: ...
