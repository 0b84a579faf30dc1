"""Holds a lease from another PID namespace: run as pid 1 of a fresh one (``unshare --pid``).

Usage: ``pidns_child.py URL ACTION_ID PID``. Makes the holder's pid ``PID`` inside its
namespace (``/proc/sys/kernel/ns_last_pid``), so that the test can pick a number no process
has in its own namespace: the owner then looks dead to a check that compares pids only.
The holder claims the action, prints its owner token, holds the lease until stdin closes,
then lets go of it.
"""

from __future__ import annotations

import os
import sys
import time
import traceback


def hold(url: str, action_id: str) -> None:
    import fsm
    from fsm.store import Claimed, new_owner

    store = fsm.open_store(url, lease_ttl=3600)
    owner = new_owner()
    claimed = store.claim(action_id, owner, time.time())
    assert isinstance(claimed, Claimed), claimed
    print(owner, flush=True)
    sys.stdin.read()
    store.unclaim(action_id, claimed.epoch)
    store.close()


def main() -> None:
    url, action_id, pid = sys.argv[1:]
    with open("/proc/sys/kernel/ns_last_pid", "w", encoding="ascii") as f:
        f.write(str(int(pid) - 1))
    child = os.fork()
    if child == 0:
        code = 0
        try:
            hold(url, action_id)
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        os._exit(code)
    _, status = os.waitpid(child, 0)
    sys.exit(os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    main()
