"""User operations on lightning receives: read, cancel, exit, status (bark §2.5 "Other paths").

Cancel and exit are events (`events`) sent into the action's inbox: the action is never
driven, nor its checkpoint changed, in the caller's process. A worker (or the next drive)
takes the event under the action's lease, through the kind's table: ``awaiting_payment``
ends ``canceled`` on a `ReceiveCanceled` once the server says so; ``preimage_revealed``
ends ``exited`` on an `ExitRequested` (the sim has no unilateral exits and the table must
not exit on its own: receives never auto-exit), so an exit never interleaves with a claim.
"""

from __future__ import annotations

import enum

import fsm

from .events import ExitRequested, ReceiveCanceled, event_key
from .lightning_receive import LightningReceive, LightningReceiveKind, lightning_receive_id
from .services import Services


class ReceiveNotInState(fsm.FsmError):
    """The operation needs the receive in another state (or the receive does not exist)."""


class ReceiveOutcome(enum.Enum):
    SETTLED = "settled"
    PENDING = "pending"
    GONE = "gone"
    """Neither settled nor in flight: expired, canceled, abandoned or refused."""


def read_receive(store: fsm.Store, payment_hash: str) -> tuple[str, LightningReceive] | None:
    """The live receive's state and data as last committed (None: no such action)."""
    try:
        action = fsm.read_action(store, LightningReceiveKind, lightning_receive_id(payment_hash))
    except fsm.DecodeError as exc:
        raise ReceiveNotInState(f"receive {payment_hash}: {exc}") from None
    return None if action is None else (action.state, action.data)


def _require(store: fsm.Store, payment_hash: str, state: str) -> LightningReceive:
    found = read_receive(store, payment_hash)
    if found is None or found[0] != state:
        now = "no such receive" if found is None else f"it is in {found[0]}"
        raise ReceiveNotInState(f"receive {payment_hash} must be in {state}; {now}")
    return found[1]


async def cancel_receive(executor: fsm.Executor[Services], payment_hash: str) -> fsm.SendResult:
    """Cancel an unpaid receive: the server first (a refusal, e.g. the HTLCs are already
    granted, raises ``fsm.Rejected`` and changes nothing), then a `ReceiveCanceled` into the
    action's inbox, which ends it ``canceled`` at its next step (a worker's, or a drive's).

    The server's cancel is the user's act, answered here; the event only tells the action.
    A falsy result says the action ended or moved on in between (``status`` and ``detail``
    say how): the kind refuses events its current state does not take.
    """
    _require(executor.store, payment_hash, LightningReceiveKind.awaiting_payment.name)
    action_id = lightning_receive_id(payment_hash)
    await executor.services.server.cancel_lightning_receive(payment_hash, f"{action_id}.cancel")
    event = ReceiveCanceled(payment_hash)
    return await executor.send(action_id, event, key=event_key(payment_hash, "cancel"))


async def exit_receive(executor: fsm.Executor[Services], payment_hash: str) -> fsm.SendResult:
    """After the preimage is out but the claim keeps failing: ask the action to exit.

    An `ExitRequested` into the action's inbox: its next step (a worker's, or a drive's;
    the event makes a receive parked without a wake-up due) takes it before any claim,
    takes the HTLCs on chain and ends ``exited``. Sent while a driver holds the action, it
    waits for that driver's next step. If a claim succeeds first, the receive settles and
    the event is deleted with it. A falsy result says the action ended or moved on in
    between (``status`` and ``detail`` say how): nothing was queued.
    """
    _require(executor.store, payment_hash, LightningReceiveKind.preimage_revealed.name)
    event = ExitRequested(payment_hash)
    key = event_key(payment_hash, "exit")
    return await executor.send(lightning_receive_id(payment_hash), event, key=key)


def receive_outcome(store: fsm.Store, services: Services, payment_hash: str) -> ReceiveOutcome:
    """Settled (the fact table), pending (a live action) or gone: always an answer, never an
    error for a receive that ended without settling."""
    if services.wallet.settled_receive(payment_hash) is not None:
        return ReceiveOutcome.SETTLED
    if store.row(lightning_receive_id(payment_hash)) is not None:
        return ReceiveOutcome.PENDING
    return ReceiveOutcome.GONE
