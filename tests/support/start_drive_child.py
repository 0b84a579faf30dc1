"""Start transfer ``t1`` by driving it (`Executor.drive` of a new action), against a ledger.

    python start_drive_child.py DB LEDGER

Dies as ``FSM_CRASH`` says: at ``start.after:1`` the row is committed already claimed by
this process, and nothing else has happened.
"""

from __future__ import annotations

import asyncio
import sys

from actions import Ledger, Transfer

import fsm


async def main(db: str, ledger_path: str) -> None:
    store = fsm.Store.sqlite(db)
    ex = fsm.Executor(store, Ledger.on_file(ledger_path), kinds=[Transfer])
    await ex.drive(Transfer("t1"))
    store.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
