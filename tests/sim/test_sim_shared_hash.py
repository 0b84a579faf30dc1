"""A receive and a send with one payment hash are separate things on the simulated server:
what happens to one (a cancel, a revocation) leaves the other alone, unless the send pays
that very receive (an intra-Ark payment, linked when the send is initiated)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from wallet_rig import Rig

import fsm
from fsm_bark.lightning_send import lightning_send_id
from fsm_bark.lightning_send_ops import pay_lightning_invoice
from fsm_bark.model import Invoice, MovementStatus
from fsm_bark.services.ark_records import ReceiveState

AMOUNT = 10_000


@pytest.fixture
def w(tmp_path: Path) -> Iterator[Rig]:
    rig = Rig(tmp_path)
    rig.world.fund_vtxos(rig.wallet, [50_000])
    yield rig
    rig.close()


def send_in_flight(w: Rig, *, fail: bool) -> Invoice:
    """A send to an outside payee, initiated and still pending on its route."""
    inv = w.world.lightning.create_invoice(AMOUNT, "coffee", "outside")
    w.world.lightning.set_outcome(inv.payment_hash, fail=fail, pending_polls=2)
    r = asyncio.run(pay_lightning_invoice(w.executor, inv))
    assert (r.status, r.state) == (fsm.DriveStatus.PARKED, "payment_initiated")
    return inv


def other_receive(w: Rig, payment_hash: str) -> None:
    """Someone else's receive on the same server, for the same hash (not linked to the send)."""
    server = w.services.server
    asyncio.run(server.start_lightning_receive(payment_hash, AMOUNT, 40, "mbx-other", "", "o.1"))


def finish(w: Rig, inv: Invoice) -> fsm.DriveResult:
    action_id = lightning_send_id(inv.payment_hash)
    return asyncio.run(w.executor.notify(action_id, fsm.DriveMode.UNTIL_DONE))


def test_cancelling_a_receive_does_not_fail_a_send_of_the_same_hash(w: Rig) -> None:
    inv = send_in_flight(w, fail=False)
    other_receive(w, inv.payment_hash)
    asyncio.run(w.services.server.cancel_lightning_receive(inv.payment_hash, "o.cancel"))
    assert finish(w, inv).status is fsm.DriveStatus.DONE
    m = w.wallet.movement_of(lightning_send_id(inv.payment_hash))
    assert m is not None and m.status is MovementStatus.SUCCESSFUL  # paid, not revoked
    assert w.wallet.paid_invoice(inv.payment_hash) is not None
    assert w.problems() == []


def test_revoking_a_send_does_not_cancel_a_receive_of_the_same_hash(w: Rig) -> None:
    inv = send_in_flight(w, fail=True)
    other_receive(w, inv.payment_hash)
    assert finish(w, inv).state == "revoked"
    status = asyncio.run(w.services.server.check_lightning_receive(inv.payment_hash))
    assert status.state is ReceiveState.CREATED
    assert w.problems() == []
