"""Child process for the multi-process tests: drive every live transfer on a database.

python drive_child.py DB LEDGER [rounds]
"""

from __future__ import annotations

import asyncio
import sys

import corekinds

import fsm


async def main(db: str, ledger_path: str, rounds: int) -> None:
    store = fsm.Store.sqlite(db)
    ledger = corekinds.Ledger(ledger_path)
    ex = fsm.Executor(store, ledger, kinds=[corekinds.Transfer])
    for _ in range(rounds):
        await ex.resume_all(concurrency=4)
    store.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 1))
