"""A driver process for the control races: drives one booking once, its step held open.

    python control_child.py URL ACTION_ID

The booking's ``hold`` prints ``stepping`` and waits for a line on stdin (`StdinDesk`), so
the test acts while this process holds the action's lease, mid-step. Prints the drive's
status and state when it returns. The lease outlives any test (an hour): only the epoch, not
an expiry, may end this driver's claim.
"""

from __future__ import annotations

import asyncio
import sys

from control_kinds import BookingKind, StdinDesk

import fsm


async def main(url: str, action_id: str) -> None:
    store = fsm.open_store(url, lease_ttl=3600)
    ex = fsm.Executor(store, StdinDesk(), kinds=[BookingKind])
    result = await ex.drive(action_id)
    print(result.status.value, result.state, flush=True)
    store.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
