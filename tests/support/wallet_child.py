"""The child process of the wallet kinds' SIGKILL tests: one script for all five kinds.

    python wallet_child.py FOLDER start KIND   fund the wallet, start one action, drive
    python wallet_child.py FOLDER resume       drive every live action in FOLDER to its end
    python wallet_child.py FOLDER cosign       fund a VTXO, print its id, have it cosigned

KIND is ``arkoor_send``, ``lightning_send``, ``lightning_send_fail`` (the payee's node fails
the payment), ``lightning_send_parts`` / ``lightning_send_parts_fail`` (the same, in three
parts, one lost and retried, decided after three polls) or ``lightning_receive`` (the invoice
is paid at once). Board and offboard
tests start their action in the test process and ``resume`` it here. ``cosign`` is for the
world alone: one server call, no action, so a test can kill its caller mid-call.

The rig is `wallet_rig.Rig` on FOLDER. The child dies as tests/support/processes.py plans
(``FSM_TEST_KILL``): its store gets `kill_hooks()`, and the Ark server is `dying(server)`.
Driving goes in rounds: drive every live action until it parks or ends, then the world mines
a block and moves a minute on, so confirmations arrive and waits come due.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import attrs
from processes import dying, kill_hooks
from wallet_rig import Rig, payee

from fsm_bark.arkoor_send import start_arkoor_send
from fsm_bark.lightning_receive_ops import read_receive
from fsm_bark.lightning_receive_start import start_lightning_receive
from fsm_bark.lightning_send_start import start_lightning_send
from fsm_bark.model import PubkeyPolicy, VtxoRequest, digest
from fsm_bark.started import Started

ROUNDS = 20


async def start(rig: Rig, kind: str) -> None:
    """Fund the wallet and start one action of ``kind`` (a receive is paid right away)."""
    started: Started[object]
    if kind == "lightning_receive":
        rig.world.fund_vtxos(rig.wallet, [40_000])
        started = await start_lightning_receive(
            rig.services, 15_000, preimage=digest("child receive")
        )
        await rig.start(started)
        found = read_receive(rig.store, started.action.id.removeprefix("ln_recv."))
        assert found is not None
        await rig.services.lightning.pay_invoice(found[1].invoice, "child.payer")
        return
    rig.world.fund_vtxos(rig.wallet, [50_000, 30_000])
    if kind == "arkoor_send":
        started = await start_arkoor_send(rig.services, payee(mailboxes=2), 20_000)
    else:
        lightning = rig.world.lightning
        invoice = lightning.create_invoice(10_000, "crash test", "crash-invoice")
        parts = {"parts": 3, "lost_parts": 1, "pending_polls": 3} if "parts" in kind else {}
        fail = kind.endswith("_fail")
        lightning.set_outcome(invoice.payment_hash, fail=fail, **parts)
        started = await start_lightning_send(rig.services, invoice)
    await rig.start(started)


async def cosign(rig: Rig) -> None:
    """Spend a fresh VTXO with the server under the key ``killed.1``."""
    [vtxo] = rig.world.fund_vtxos(rig.wallet, [3_000])
    print(vtxo.id, flush=True)
    outputs = [VtxoRequest(3_000, PubkeyPolicy("aa"))]
    await rig.services.server.request_arkoor_cosign([vtxo.id], outputs, "killed.1")


async def drive_all(rig: Rig) -> None:
    for _ in range(ROUNDS):
        if not rig.store.live_ids():
            return
        await rig.executor.resume_all()
        rig.world.mine(1)
        rig.world.advance_time(60)


async def main(folder: Path, command: str, *args: str) -> None:
    rig = Rig(folder, hooks=kill_hooks())
    rig.services = attrs.evolve(rig.services, server=dying(rig.services.server))
    rig.executor.services = rig.services
    if command == "start":
        await start(rig, *args)
    elif command == "cosign":
        await cosign(rig)
    elif command != "resume":
        raise SystemExit(f"unknown command {command!r}: start KIND, resume or cosign")
    await drive_all(rig)
    rig.close()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), *sys.argv[2:]))
