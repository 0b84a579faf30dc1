"""A driver of the events' crash tests, killed at every write point by `fsm.testing`'s runner.

    python events_child.py MODE FOLDER [SECONDS]

The store is at the URL in ``FOLDER/db.url``, the outside world's ledger in
``FOLDER/ledger.sqlite`` (see `crash_event_kinds`); what `setup` started is there. Modes:

* ``ballot``: send every vote of `VOTES` to every ballot (each send under its own key, so a
  driver restarted after a kill sends them again and the inbox says DUPLICATE), driving
  every live action after each round of sends; exits 0 once every action has ended.
* ``fanout``: drive every live action until none is left (the batches spawn their jobs, the
  jobs end, each end reaches its batch); exits 0 once every action has ended.
* ``offer``: start the offer ``o0`` unless it exists and drive it ``UNTIL_DONE``: its first
  step parks it until its deadline, so the driver stays up, asleep in the park; it prints
  ``parked`` once that park is committed (the test then kills it).
* ``later SECONDS``: drive every live action once with a clock ``SECONDS`` ahead of the
  database's, as an executor started that much later would; print the offer's state.

A send the inbox answers with anything but SENT, DUPLICATE or FINISHED exits 3. The store
takes its hooks from the environment (``FSM_CRASH``, ``FSM_CRASH_TRACE``), so the runner
can kill this process at any write point.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from actions import Ledger
from crash_event_kinds import KINDS, Offer, OfferKind, Vote

import fsm

VOTES = ("e0", "e1")
ROUNDS = 10
"""A driver gives up (exit 1) after this many rounds with actions still live."""
SENT = {fsm.SendStatus.SENT, fsm.SendStatus.DUPLICATE, fsm.SendStatus.FINISHED}


def services(store: fsm.Store) -> Ledger:
    """The ``--services`` factory of ``fsm worker``: the ledger in the worker's database."""
    return Ledger.in_store(store)


def url_of(folder: Path) -> str:
    return (folder / "db.url").read_text().strip()


def ledger_of(folder: Path) -> Ledger:
    return Ledger.on_file(folder / "ledger.sqlite")


def vote_key(voter: str) -> str:
    return f"vote-{voter}"


async def ballot(ex: fsm.Executor[Any], store: fsm.Store) -> int:
    for voter in VOTES:
        for action_id in store.live_ids():
            sent = await ex.send(action_id, Vote(voter), key=vote_key(voter))
            if sent.status not in SENT:
                print(f"{action_id}: {sent}", file=sys.stderr)
                return 3
        await ex.resume_all()
    return await until_ended(ex, store)


async def until_ended(ex: fsm.Executor[Any], store: fsm.Store) -> int:
    for _ in range(ROUNDS):
        if not store.live_ids():
            return 0
        await ex.resume_all()
    return 0 if not store.live_ids() else 1


async def offer(ex: fsm.Executor[Any], store: fsm.Store) -> int:
    await ex.drive(OfferKind.create(Offer("o0")), fsm.DriveMode.UNTIL_DONE)
    return 0 if not store.live_ids() else 1


async def later(ex: fsm.Executor[Any], store: fsm.Store) -> int:
    await ex.resume_all()
    for action_id in ("o0",):
        row = store.row(action_id)
        print(f"{action_id} {row.state if row else 'ended'}")
    return 0


async def main(mode: str, folder: Path, ahead: float) -> int:
    store = fsm.open_store(url_of(folder))
    on_commit = None
    if mode == "offer":

        def on_commit(action_id: str, entry: fsm.LogEntry) -> None:
            if entry.outcome == "park":
                print("parked", flush=True)

    clock = (lambda: store.clock() + ahead) if ahead else None
    ex: fsm.Executor[Any] = fsm.Executor(
        store, ledger_of(folder), kinds=KINDS, clock=clock, on_commit=on_commit
    )
    try:
        if mode == "ballot":
            return await ballot(ex, store)
        if mode == "fanout":
            return await until_ended(ex, store)
        if mode == "offer":
            return await offer(ex, store)
        if mode == "later":
            return await later(ex, store)
        raise SystemExit(f"unknown mode {mode!r}")
    finally:
        store.close()


if __name__ == "__main__":
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    raise SystemExit(asyncio.run(main(sys.argv[1], Path(sys.argv[2]), seconds)))
