"""Child process for the lightning receive SIGKILL test.

python lnrecv_child.py FOLDER [KILL_AFTER]: start (once) a receive, have it paid, and drive it
to the end; with KILL_AFTER the process SIGKILLs itself right after that many committed steps.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import fsm
from fsm_bark.lightning_receive import LightningReceiveKind, start_lightning_receive
from fsm_bark.lightning_receive_ops import read_receive
from fsm_bark.model import digest, payment_hash_of
from fsm_bark.sim import make_world

PREIMAGE = digest("child receive")


async def main(folder: Path, kill_after: int | None) -> None:
    world = make_world(folder / "world", seed=5)
    store = fsm.Store.sqlite(folder / "fsm.sqlite")
    svc = world.services(store)
    commits = 0

    def on_commit(action_id: str, entry: object) -> None:
        nonlocal commits
        commits += 1
        if kill_after is not None and commits >= kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    async def sleep(seconds: float) -> None:
        world.advance_time(seconds)

    ex = fsm.Executor(
        store, svc, kinds=[LightningReceiveKind], clock=world.clock.now, sleep=sleep,
        on_commit=on_commit,
    )  # fmt: skip
    h = payment_hash_of(PREIMAGE)
    if world.db.meta("child_started", "") == "":
        if not svc.wallet.vtxos():
            world.fund_vtxos(svc.wallet, [40_000])
        action = await start_lightning_receive(svc, 15_000, preimage=PREIMAGE)
        await ex.start(action)
        with world.db.transaction():
            world.db.set_meta("child_started", "1")
    found = read_receive(store, h)
    if found is not None:
        await svc.lightning.pay_invoice(found[1].invoice, "child.payer")
    await ex.resume_all(fsm.DriveMode.UNTIL_DONE)
    store.close()


if __name__ == "__main__":
    kill = int(sys.argv[2]) if len(sys.argv) > 2 else None
    asyncio.run(main(Path(sys.argv[1]), kill))
