"""`LightningNode`: the Lightning network outside the Ark, and the status of a payment.

The kinds never call the node (the Ark server is their gateway); demos and tests use it as the
payee of sends and the payer of receives. `PaymentStatus` is also what the server reports for
a lightning send.
"""

from __future__ import annotations

import enum
from typing import Protocol

import attrs

from ..model import Invoice


class PaymentState(enum.Enum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    UNKNOWN = "unknown"


@attrs.frozen
class PaymentStatus:
    state: PaymentState
    preimage: str | None = None


class LightningNode(Protocol):
    """The Lightning network seen from outside the Ark: the payee of sends, payer of receives."""

    async def create_invoice(
        self, amount: int, description: str, idempotency_key: str
    ) -> Invoice: ...

    async def pay_invoice(self, invoice: Invoice, idempotency_key: str) -> None:
        """Pay an invoice of the Ark server (a wallet's receive): the server accepts the HTLC."""
        ...

    async def payment_status(self, payment_hash: str) -> PaymentStatus: ...
