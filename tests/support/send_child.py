"""Child process for the send kinds' SIGKILL tests.

python send_child.py FOLDER arkoor|lightning|lightning-fail start|resume

``start`` funds the wallet, starts one send and drives it until done; ``FSM_DEF_CRASH`` makes
the process SIGKILL itself: ``rpc:<name>`` right after that server call returned (the effect
is applied, the checkpoint not written), ``commit:<state>`` right after the step from that
state was committed. ``resume`` reopens everything and drives every live action to its end.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import attrs
from send_support import Wallet, payee

import fsm
from fsm.store import LogEntry
from fsm_bark.arkoor_send import send_arkoor_payment
from fsm_bark.lightning_send import pay_lightning_invoice


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class KillAfter:
    """The server, but the process dies right after ``rpc`` returns."""

    def __init__(self, server: Any, rpc: str) -> None:
        self.server = server
        self.rpc = rpc

    def __getattr__(self, name: str) -> Any:
        call = getattr(self.server, name)

        async def wrapped(*args: Any, **kwargs: Any) -> Any:
            result = await call(*args, **kwargs)
            if name == self.rpc:
                die()
            return result

        return wrapped


def arm(w: Wallet) -> None:
    what, _, where = os.environ.get("FSM_DEF_CRASH", "").partition(":")
    if what == "rpc":
        w.services = attrs.evolve(w.services, server=KillAfter(w.services.server, where))
        w.executor.services = w.services
    elif what == "commit":

        def on_commit(action_id: str, entry: LogEntry) -> None:
            if entry.from_state == where:
                die()

        w.executor.on_commit = on_commit


async def start(w: Wallet, kind: str) -> None:
    w.world.fund_vtxos(w.wallet, [50_000, 30_000])
    if kind == "arkoor":
        await send_arkoor_payment(w.executor, payee(mailboxes=2), 20_000)
        return
    invoice = w.world.lightning.create_invoice(10_000, "crash test", "crash-invoice")
    w.world.lightning.set_outcome(invoice.payment_hash, fail=kind == "lightning-fail")
    await pay_lightning_invoice(w.executor, invoice, wait=True)


async def resume(w: Wallet) -> None:
    for _ in range(10):
        if not w.store.rows():
            return
        await w.executor.resume_all(fsm.DriveMode.UNTIL_DONE)


def main(folder: str, kind: str, phase: str) -> None:
    w = Wallet(Path(folder))
    if phase == "start":
        arm(w)
        asyncio.run(start(w, kind))
    else:
        asyncio.run(resume(w))
    w.close()


if __name__ == "__main__":
    main(*sys.argv[1:4])
