"""Child process of the board/offboard crash tests: drive every live action to the end.

python onchain_child.py FOLDER commit|call N

``commit N``: SIGKILL right after the Nth committed step (the executor's ``on_commit``).
``call N``: SIGKILL right after the Nth server call returned, before its step commits: the
effect is applied, the checkpoint is not. ``N = 0``: no kill. Between rounds the world mines a
block and moves a minute on, so boards confirm and waits come due.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import attrs
from onchain_rig import Rig

import fsm


class KillingServer:
    """The world's server, killing this process after the Nth call returned."""

    def __init__(self, inner: Any, kill_after: int) -> None:
        self.inner = inner
        self.kill_after = kill_after
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            result = await method(*args, **kwargs)
            self.calls += 1
            if self.calls == self.kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
            return result

        return call


async def main(folder: Path, mode: str, kill_after: int) -> None:
    rig = Rig(folder)
    commits = 0

    def on_commit(action_id: str, entry: object) -> None:
        nonlocal commits
        commits += 1
        if mode == "commit" and commits == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    services = rig.svc
    if mode == "call" and kill_after:
        services = attrs.evolve(rig.svc, server=KillingServer(rig.svc.server, kill_after))
    ex = fsm.Executor(
        rig.store,
        services,
        registry=rig.ex.registry,
        clock=rig.world.clock.now,
        sleep=rig.sleep,
        on_commit=on_commit,
    )
    for _ in range(20):
        if not rig.store.live_ids():
            break
        await ex.resume_all()
        rig.world.mine(1)
        rig.world.advance_time(60)
    rig.close()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])))
