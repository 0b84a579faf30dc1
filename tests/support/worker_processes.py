"""`fsm worker` processes on the transfers of `actions`, and what tests do with them.

`spawn_worker` starts one (its stderr in a log file), `freeze_while_holding` SIGSTOPs it at
a moment it holds leases, `finish_and_stop` waits for every action to end and stops them
all, and `check_ledger` says that every effect was applied under one key.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from actions import Ledger, plain_keys
from processes import child_env

import fsm


def spawn_worker(
    url: str, *extra: str, log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``fsm worker`` on the transfers of `actions`, ``env`` added to its environment.

    The ledger's table is made first, so that workers started together do not race to.
    """
    store = fsm.open_store(url)
    Ledger.in_store(store)
    store.close()
    command = [sys.executable, "-m", "fsm.cli", "worker", "--db", url]
    command += ["--module", "actions", "--services", "actions:services", *extra]
    return subprocess.Popen(
        command, env=child_env(env), stdout=subprocess.DEVNULL, stderr=log.open("wb")
    )


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll ``condition`` until it holds; the timeout only bounds a hung test."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def held_by(store: fsm.Store, pid: int) -> list[str]:
    return [r.id for r in store.rows() if r.lease_owner and f":{pid}:" in r.lease_owner]


def freeze_while_holding(store: fsm.Store, proc: subprocess.Popen[bytes]) -> list[str]:
    """SIGSTOP ``proc`` at a moment it holds leases; returns the actions it holds."""
    for _ in range(200):
        wait_for(lambda: bool(held_by(store, proc.pid)), f"worker {proc.pid} to claim actions")
        proc.send_signal(signal.SIGSTOP)
        held = held_by(store, proc.pid)  # frozen: this cannot change under us
        if held:
            return held
        proc.send_signal(signal.SIGCONT)
    raise AssertionError(f"worker {proc.pid} never held a lease while stopped")


def finish_and_stop(
    procs: list[subprocess.Popen[bytes]], store: fsm.Store, timeout: float = 120.0
) -> None:
    wait_for(lambda: not store.rows(), "every action to finish", timeout=timeout)
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        p.wait(timeout=60)


def check_ledger(store: fsm.Store, n: int) -> dict[str, int]:
    calls = plain_keys(Ledger.in_store(store).effects())
    expected = {f"t{i:04d}.{s}" for i in range(n) for s in range(3)}
    assert set(calls) == expected  # nothing lost, nothing extra: each effect under one key
    assert store.all_resources() == {}
    return calls
