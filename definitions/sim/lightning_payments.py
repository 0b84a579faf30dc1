"""How the simulated Lightning network carries a payment to one of its payees' invoices.

The Ark server's node pays an invoice (`start_payment`, when a send is initiated) and polls it
(`poll_payment`, each time the server's status of the send is read). What happens is the
invoice's `Route`, drawn when the invoice is made or scripted by a test:

* no route: the node finds no path to the payee; the payment fails at once, with the reason;
* parts: the node splits the payment into ``parts`` (multi-part payment); the first
  ``lost_parts`` fail on their first route and are retried on another, which gets through
  unless the payment is to fail;
* pending: the payee holds the parts it has for ``pending_polls`` polls (or, ``hold``, until a
  test resolves it), then releases the preimage for all of them, or fails all of them back
  (as a payee does whose missing parts never arrive).

The payment is atomic, as in Lightning: the payee releases the preimage only once every part
arrived, and then every part settles; a failure fails every part back. A part never settles
alone, so the payer's status is pending, succeeded (the preimage) or failed (a reason), never
"partly paid". The parts are recorded (`parts_of`) for tests to see what the network did.
"""

from __future__ import annotations

import attrs

from ..services.lightning_node import PaymentState, PaymentStatus
from .db import Db, dump, load

LN_PAYMENT_SCHEMA = """
CREATE TABLE IF NOT EXISTS ln_part (
    payment_hash TEXT NOT NULL,
    part INTEGER NOT NULL,
    amount INTEGER NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    PRIMARY KEY (payment_hash, part)
)
"""

OPEN = "open"
ROUTING = "routing"
SETTLED = "settled"
FAILED = "failed"

IN_FLIGHT = "in_flight"
RETRYING = "retrying"
ARRIVED = "arrived"

NO_ROUTE = "no route to the payee"
UNKNOWN_PAYEE = "no route: the payee is unknown"


@attrs.frozen
class Route:
    """How a payment to one invoice goes (see the module's docstring)."""

    fail: bool = False
    pending_polls: int = 0
    parts: int = 1
    lost_parts: int = 0
    no_route: bool = False
    hold: bool = False

    def __attrs_post_init__(self) -> None:
        if self.parts < 1 or not 0 <= self.lost_parts <= self.parts:
            raise ValueError(f"a route of {self.parts} parts cannot lose {self.lost_parts}")


@attrs.frozen
class Part:
    """One part of a payment: its amount, where it is, how many routes it took."""

    part: int
    amount: int
    state: str
    attempts: int


def split(amount: int, parts: int) -> list[int]:
    """Equal parts, the remainder on the last (what a node's splitter might do)."""
    base = amount // parts
    return [base] * (parts - 1) + [amount - base * (parts - 1)]


class Payments:
    """The payments the server's node makes, over the invoices of ``ln_invoice``."""

    def __init__(self, db: Db) -> None:
        self.db = db

    def _row(self, payment_hash: str) -> tuple[Route, str, int, str, str | None] | None:
        row = self.db.one(
            "SELECT route, state, polls, preimage, reason FROM ln_invoice WHERE payment_hash = ?",
            (payment_hash,),
        )
        if row is None:
            return None
        return load(row[0], Route), str(row[1]), int(row[2]), str(row[3]), row[4]

    def _set(self, payment_hash: str, state: str, reason: str | None = None) -> None:
        self.db.run(
            "UPDATE ln_invoice SET state = ?, reason = ? WHERE payment_hash = ?",
            (state, reason, payment_hash),
        )

    def _parts_to(self, payment_hash: str, state: str) -> None:
        self.db.run("UPDATE ln_part SET state = ? WHERE payment_hash = ?", (state, payment_hash))

    def set_route(self, payment_hash: str, route: Route) -> None:
        """Script how the next (or the current) payment of this invoice goes; the polls count
        again from zero."""
        with self.db.transaction():
            self.db.run(
                "UPDATE ln_invoice SET route = ?, polls = 0 WHERE payment_hash = ?",
                (dump(route), payment_hash),
            )

    def start_payment(self, payment_hash: str, amount: int) -> PaymentStatus:
        """The server's node starts paying the invoice: fails at once when it finds no route,
        else sends the parts. A payment in flight or settled is left as it is; a failed one
        is a new attempt (the payer revoked and pays again)."""
        with self.db.transaction():
            row = self._row(payment_hash)
            if row is None:
                return PaymentStatus(PaymentState.FAILED, error=UNKNOWN_PAYEE)
            route, state, _, preimage, _ = row
            if state == SETTLED:
                return PaymentStatus(PaymentState.SUCCEEDED, preimage)
            if state == ROUTING:
                return PaymentStatus(PaymentState.PENDING)
            self.db.run("DELETE FROM ln_part WHERE payment_hash = ?", (payment_hash,))
            self.db.run("UPDATE ln_invoice SET polls = 0 WHERE payment_hash = ?", (payment_hash,))
            if route.no_route:
                self._set(payment_hash, FAILED, NO_ROUTE)
                return PaymentStatus(PaymentState.FAILED, error=NO_ROUTE)
            for n, part_amount in enumerate(split(amount, route.parts)):
                self.db.run(
                    "INSERT INTO ln_part (payment_hash, part, amount, state, attempts) "
                    "VALUES (?, ?, ?, ?, 1)",
                    (payment_hash, n, part_amount, IN_FLIGHT),
                )
            self._set(payment_hash, ROUTING)
        return PaymentStatus(PaymentState.PENDING)

    def poll_payment(self, payment_hash: str) -> PaymentStatus:
        """One poll of the payment: the parts move on, and the payee decides once its
        pending polls are over (not while it holds)."""
        with self.db.transaction():
            row = self._row(payment_hash)
            if row is None:
                return PaymentStatus(PaymentState.FAILED, error=UNKNOWN_PAYEE)
            route, state, polls, preimage, reason = row
            if state == SETTLED:
                return PaymentStatus(PaymentState.SUCCEEDED, preimage)
            if state == FAILED:
                return PaymentStatus(PaymentState.FAILED, error=reason)
            if state == OPEN:
                return PaymentStatus(PaymentState.PENDING)
            self.db.run(
                "UPDATE ln_invoice SET polls = polls + 1 WHERE payment_hash = ?", (payment_hash,)
            )
            parts = self._advance(payment_hash, route)
            if route.hold or polls < route.pending_polls:
                return PaymentStatus(PaymentState.PENDING)
            if route.fail:
                arrived = sum(p.state == ARRIVED for p in parts)
                why = f"the payee failed the payment back ({arrived} of {len(parts)} parts arrived)"
                self._parts_to(payment_hash, FAILED)
                self._set(payment_hash, FAILED, why)
                return PaymentStatus(PaymentState.FAILED, error=why)
            if any(p.state != ARRIVED for p in parts):
                return PaymentStatus(PaymentState.PENDING)  # a retried part is on its way
            self._parts_to(payment_hash, SETTLED)
            self._set(payment_hash, SETTLED)
        return PaymentStatus(PaymentState.SUCCEEDED, preimage)

    def _advance(self, payment_hash: str, route: Route) -> list[Part]:
        """Each part not arrived takes one step: a lost part fails its first route and is
        retried; a retried part arrives, or fails when the payment is to fail (and is tried
        again if the payee changes its mind)."""
        parts = self.parts_of(payment_hash)
        moved = []
        for p in parts:
            if p.state == IN_FLIGHT and p.part < route.lost_parts:
                p = attrs.evolve(p, state=RETRYING, attempts=p.attempts + 1)
            elif p.state == IN_FLIGHT:
                p = attrs.evolve(p, state=ARRIVED)
            elif p.state in (RETRYING, FAILED) and not route.fail:
                p = attrs.evolve(p, state=ARRIVED, attempts=p.attempts + (p.state == FAILED))
            elif p.state == RETRYING:
                p = attrs.evolve(p, state=FAILED)
            self.db.run(
                "UPDATE ln_part SET state = ?, attempts = ? WHERE payment_hash = ? AND part = ?",
                (p.state, p.attempts, payment_hash, p.part),
            )
            moved.append(p)
        return moved

    def resolve(self, payment_hash: str, *, settle: bool) -> None:
        """The payee stops holding: at the next poll it settles (once every part arrived) or
        fails the payment back."""
        with self.db.transaction():
            row = self._row(payment_hash)
            if row is None:
                raise KeyError(payment_hash)
            route = attrs.evolve(row[0], hold=False, fail=not settle, pending_polls=0)
            self.db.run(
                "UPDATE ln_invoice SET route = ? WHERE payment_hash = ?",
                (dump(route), payment_hash),
            )

    def abandon(self, payment_hash: str, reason: str) -> None:
        """The server gave up on the payment (its HTLC expired): every part is failed back,
        so the payee can no longer settle it."""
        with self.db.transaction():
            row = self._row(payment_hash)
            if row is not None and row[1] == ROUTING:
                self._parts_to(payment_hash, FAILED)
                self._set(payment_hash, FAILED, reason)

    def state_of(self, payment_hash: str) -> str | None:
        row = self._row(payment_hash)
        return None if row is None else row[1]

    def parts_of(self, payment_hash: str) -> list[Part]:
        return [
            Part(int(n), int(a), str(s), int(t))
            for n, a, s, t in self.db.all(
                "SELECT part, amount, state, attempts FROM ln_part WHERE payment_hash = ? "
                "ORDER BY part",
                (payment_hash,),
            )
        ]


__all__ = ["LN_PAYMENT_SCHEMA", "Part", "Payments", "Route", "split"]
