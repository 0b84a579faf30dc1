"""User operations on lightning receives: read, cancel, exit, status (bark §2.5 "Other paths").

Cancel goes through the kind's table: the server cancels, then a notify lets the
``awaiting_payment`` guard see it and end the action in ``canceled``. Exit cannot (the sim has
no unilateral exits and the table must not exit on its own: receives never auto-exit), so it
does bark's steps under the action's lease and then stops the action.
"""

from __future__ import annotations

import enum
from typing import Any

import attrs

import fsm

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


async def cancel_receive(executor: fsm.Executor[Services], payment_hash: str) -> fsm.DriveResult:
    """Cancel an unpaid receive: the server first (a refusal, e.g. the HTLCs are already
    granted, raises ``fsm.Rejected`` and changes nothing), then the action ends ``canceled``."""
    _require(executor.store, payment_hash, LightningReceiveKind.awaiting_payment.name)
    key = f"{lightning_receive_id(payment_hash)}.cancel"
    await executor.services.server.cancel_lightning_receive(payment_hash, key)
    return await executor.notify(lightning_receive_id(payment_hash))


async def exit_receive(executor: fsm.Executor[Services], payment_hash: str) -> fsm.DriveResult:
    """After the preimage is out but the claim keeps failing: ask the action to exit.

    The request is written into the checkpoint under the action's lease
    (`fsm.Executor.update`), then the action is driven: its table takes the HTLCs on chain
    and ends in ``exited``, so a concurrent driver can never interleave with the exit.
    Raises `fsm.ActionBusy` if it is being driven right now.
    """
    _require(executor.store, payment_hash, LightningReceiveKind.preimage_revealed.name)

    def request_exit(action: Any) -> Any:
        data = attrs.evolve(action.data, exit_requested=True)
        return LightningReceiveKind.create(data, LightningReceiveKind.preimage_revealed)

    action_id = lightning_receive_id(payment_hash)
    await executor.update(action_id, request_exit)
    return await executor.notify(action_id)


def receive_outcome(store: fsm.Store, services: Services, payment_hash: str) -> ReceiveOutcome:
    """Settled (the fact table), pending (a live action) or gone: always an answer, never an
    error for a receive that ended without settling."""
    if services.wallet.settled_receive(payment_hash) is not None:
        return ReceiveOutcome.SETTLED
    if store.row(lightning_receive_id(payment_hash)) is not None:
        return ReceiveOutcome.PENDING
    return ReceiveOutcome.GONE
