"""The bark wallet as an `fsm torture` scenario: the demo, killed at every write point.

The driver is ``fsm demo`` itself (it starts its actions on the first run and only resumes
afterwards, and exits 0 once every action is terminal and the simulated world's invariants
hold); the check reopens the world and both wallets (the demo's and its peer's) and runs
the world's invariants across them and fsm's own (`fsm.testing.check_invariants`) over each
wallet's fsm store.
"""

from __future__ import annotations

import sys
from pathlib import Path

import fsm
from fsm.testing import Scenario, check_invariants

from .demo_plan import PEER, SPECS, peer_store_path
from .sim import check_world_invariants, make_world
from .sim.wallet_store import SqliteWalletStore

KINDS = tuple(spec.kind for spec in SPECS)
SEED = 3
ACTIONS = 6
FAULTS = 0.1


def _wallet(folder: Path) -> Path:
    return folder / "wallet.sqlite"


def _driver(folder: Path) -> list[str]:
    return [
        sys.executable, "-m", "fsm", "demo", "--db", str(_wallet(folder)),
        "--actions", str(ACTIONS), "--seed", str(SEED), "--faults", str(FAULTS),
    ]  # fmt: skip


def _check(folder: Path) -> list[str]:
    world_folder = folder / f"{_wallet(folder).name}.world"
    store = fsm.Store.sqlite(_wallet(folder))
    peer_store = fsm.Store.sqlite(peer_store_path(world_folder))
    try:
        world = make_world(world_folder, SEED)
        wallets: list[tuple[SqliteWalletStore, fsm.Store]] = [
            (world.wallet_store(store.holder_of), store),
            (world.wallet_store(peer_store.holder_of, PEER), peer_store),
        ]
        problems = check_world_invariants(world, wallets)
        for fsm_store in (store, peer_store):
            problems += check_invariants(fsm_store, KINDS)
            if fsm_store.rows():
                problems.append(f"{len(fsm_store.rows())} action(s) still live")
        return problems
    finally:
        peer_store.close()
        store.close()


SCENARIO = Scenario(
    name="bark-wallet",
    setup=lambda folder: None,
    driver=_driver,
    database=lambda folder: f"sqlite:///{_wallet(folder)}",
    check=_check,
)
