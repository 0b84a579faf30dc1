"""Events the wallet's operations send to its live actions (`fsm.Executor.send`).

What a user or the server's mailbox tells an action from outside goes into the action's
inbox, durably, and a step of the action takes it under the action's lease, in the
transaction of its checkpoint: the sender never drives the action (so it never races a
driver, and needs no lease), and a crash between the send and the step loses nothing.

Each is taken by the row it causes, when that row's guard holds: one whose guard does not
hold yet (the server does not confirm it) stays in the inbox, is offered again at the next
step (the state's poll goes on meanwhile) and is deleted with the action when it ends.
Sends are keyed by the payment hash and the operation (`event_key`), so the same operation
sent twice is one event. The payment hash in each names the payment the sender meant; the
kinds' rows do not need it (the action's id says it too), but the inbox's record does.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class ReceiveCanceled:
    """The user canceled a lightning receive on the server (`cancel_receive`): taken by
    ``awaiting_payment`` once the server says the receive is canceled, which ends it
    ``canceled``."""

    payment_hash: str


@attrs.frozen
class ExitRequested:
    """The user asks a lightning receive whose claim keeps failing after the preimage went
    out to take its HTLCs on chain (`exit_receive`): taken by ``preimage_revealed``, before
    any claim, which ends it ``exited``."""

    payment_hash: str


@attrs.frozen
class PaymentFinished:
    """The server's mailbox says it finished a lightning payment (`lightning_send_finished`):
    taken by ``payment_initiated`` when the server's status settles the send (paid) or
    revokes it (failed, or near expiry). A send already revoking (``revocation_stuck``,
    parked) does not take it, but is made due by it: its rows settle it if the payee paid
    after all, or revoke it; the event goes with the action."""

    payment_hash: str


def event_key(payment_hash: str, operation: str) -> str:
    """The key a send is deduplicated by: ``<operation>.<payment hash>``."""
    return f"{operation}.{payment_hash}"


__all__ = ["ExitRequested", "PaymentFinished", "ReceiveCanceled", "event_key"]
