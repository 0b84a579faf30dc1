"""Drive every live transfer of a SQLite database, ``rounds`` times, against a ledger file.

    python drive_child.py DB LEDGER [rounds]

Dies as ``FSM_TEST_KILL`` says (`processes.after_commits`, or ``after_call("apply", n)``:
right after the n-th effect, before its checkpoint). ``FSM_TEST_STEP_SECONDS`` makes each
effect take that long, so that two drivers would overlap if their leases let them.
"""

from __future__ import annotations

import asyncio
import os
import sys

from actions import Ledger, Transfer
from processes import dying, kill_hooks

import fsm


async def main(db: str, ledger_path: str, rounds: int) -> None:
    store = fsm.Store.sqlite(db, hooks=kill_hooks())
    pause = float(os.environ.get("FSM_TEST_STEP_SECONDS", "0"))
    ledger = dying(Ledger.on_file(ledger_path, pause))
    ex = fsm.Executor(store, ledger, kinds=[Transfer])
    for _ in range(rounds):
        await ex.resume_all(concurrency=4)
    store.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 1))
