"""The demo wallet's upkeep beside its payments: a VTXO too deep to spend is refreshed in a
round of the server's, and another is taken out of the Ark by a unilateral exit, its
transactions' fees paid by CPFP from the on-chain wallet.

The demo funds both VTXOs (and a coin for the exit fees) with the rest, and starts both
actions before its plan (so no payment selects them: a deep VTXO is never selected anyway,
the exit's VTXO is marked exited at once). What was started is kept in the demo's table
(`Meta`-like: ``get``/``set``), so a resumed run starts nothing twice. The server runs a
round every demo round (`World.run_round`); the refresh joins the first one after it
registered, the exit takes a block per transaction and then the exit delta.
"""

from __future__ import annotations

from typing import Protocol

import fsm

from .exit import EXIT_TX_FEE, ExitKind, start_exit
from .model import vtxo_resource
from .refresh import RefreshKind, start_refresh
from .services import Services
from .sim import World

UPKEEP_KINDS = (RefreshKind, ExitKind)
"""The kinds the upkeep adds to the demo wallet's executor."""

DEEP_VTXO = 4_000
"""The VTXO at the depth limit: smaller than the payments' VTXOs, so no selection wants it."""
EXIT_VTXO = 6_000
EXIT_FEE_COIN = 4 * EXIT_TX_FEE
"""The on-chain coin the exit's CPFP fees come from."""


class Table(Protocol):
    def get(self, key: str) -> str | None: ...

    def set(self, key: str, value: str) -> None: ...


def fund_upkeep(world: World, svc: Services, meta: Table) -> None:
    """The deep VTXO, the VTXO to exit and the fee coin; their ids kept in ``meta``."""
    limit = world.server.info().max_arkoor_depth
    [deep] = world.fund_vtxos(svc.wallet, [DEEP_VTXO], depth=limit)
    [leaving] = world.fund_vtxos(svc.wallet, [EXIT_VTXO])
    world.fund_onchain(EXIT_FEE_COIN)
    meta.set("upkeep.refresh_vtxo", deep.id)
    meta.set("upkeep.exit_vtxo", leaving.id)


REFRESH_ATTEMPTS = 3
"""A refresh the server refused (the demo's faults) is made again, as a wallet's maintenance
would at its next round, this many times in all."""


def _refresh_again(svc: Services, ex: fsm.Executor[Services], meta: Table, deep_id: str) -> bool:
    """Whether to (re)start the refresh: never started, or ended without refreshing while
    the VTXO is still free and spendable, with attempts left."""
    last = meta.get("upkeep.refresh")
    if last is None:
        return True
    if (
        ex.store.row(last) is not None
        or int(meta.get("upkeep.refresh_attempts") or 1) >= REFRESH_ATTEMPTS
    ):
        return False
    return any(v.id == deep_id for v in svc.wallet.spendable_vtxos())


def _adopt_refresh(ex: fsm.Executor[Services], meta: Table, deep_id: str) -> None:
    """A refresh started by a run killed before it noted the start holds the deep VTXO:
    note it now (a new refresh would find its input taken, and a new key index gives it
    another id, so starting again is no answer)."""
    holder = ex.store.holder_of(vtxo_resource(deep_id))
    if holder is not None and holder != meta.get("upkeep.refresh"):
        attempts = int(meta.get("upkeep.refresh_attempts") or 0) + 1
        meta.set("upkeep.refresh_attempts", str(attempts))
        meta.set("upkeep.refresh", holder)


async def start_upkeep(svc: Services, ex: fsm.Executor[Services], meta: Table) -> list[str]:
    """Start the refresh and the exit unless started (the refresh again after a refusal);
    returns the ids started now. A start refused by a transient fault is tried again next
    round."""
    started = []
    deep_id, exit_id = meta.get("upkeep.refresh_vtxo"), meta.get("upkeep.exit_vtxo")
    if deep_id is not None:
        _adopt_refresh(ex, meta, deep_id)
    if deep_id is not None and _refresh_again(svc, ex, meta, deep_id):
        deep = svc.wallet.get_vtxo(deep_id)
        assert deep is not None  # funded with the rest
        action, resources = await start_refresh(svc, [deep])
        await ex.start(action, resources=resources)
        attempts = int(meta.get("upkeep.refresh_attempts") or 0) + 1
        meta.set("upkeep.refresh_attempts", str(attempts))
        meta.set("upkeep.refresh", action.id)
        started.append(action.id)
    if exit_id is not None and meta.get("upkeep.exit") is None:
        leaving, held = await start_exit(svc, exit_id)
        await ex.start(leaving, resources=held)
        meta.set("upkeep.exit", leaving.id)
        started.append(leaving.id)
    return started


def upkeep_starts(meta: Table, kind: str) -> int:
    """How many actions of ``kind`` (refresh, exit) the upkeep started."""
    if meta.get(f"upkeep.{kind}") is None:
        return 0
    return int(meta.get(f"upkeep.{kind}_attempts") or 1)


def upkeep_started(meta: Table) -> bool:
    return meta.get("upkeep.refresh") is not None and meta.get("upkeep.exit") is not None


def upkeep_line(world: World, svc: Services, meta: Table) -> str:
    """One summary line: the rounds the server ran, what the refresh and the exit did."""
    rounds = world.db.one("SELECT COUNT(*) FROM srv_round")
    settled = world.db.one("SELECT COUNT(*) FROM srv_round_part WHERE state = 'done'")
    parts = [f"server rounds: {rounds[0] if rounds else 0} ({settled[0] if settled else 0} "
             "participation(s) settled)"]  # fmt: skip
    for what in ("refresh", "exit"):
        action_id = meta.get(f"upkeep.{what}")
        movement = None if action_id is None else svc.wallet.movement_of(action_id)
        status = "not started" if movement is None else movement.status.value
        parts.append(f"{what}: {status}")
    parts.append(f"on chain: {svc.onchain.balance()} sats")
    return "; ".join(parts)


__all__ = [
    "UPKEEP_KINDS",
    "fund_upkeep",
    "start_upkeep",
    "upkeep_line",
    "upkeep_started",
    "upkeep_starts",
]
