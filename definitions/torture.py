"""The bark wallet as an `fsm torture` scenario: the demo, killed at every write point.

The driver is ``fsm demo`` itself (it starts its actions on the first run and only resumes
afterwards, and exits 0 once every action is terminal and the simulated world's invariants
hold); the check reopens the world and the wallet and runs both the world's invariants and
fsm's own (`fsm.testing.check_invariants`) over the five kinds.
"""

from __future__ import annotations

import sys
from pathlib import Path

import fsm
from fsm.testing import Scenario, check_invariants

from .demo_plan import SPECS
from .sim import check_wallet_invariants, make_world

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
    store = fsm.Store.sqlite(_wallet(folder))
    try:
        world = make_world(folder / f"{_wallet(folder).name}.world", SEED)
        services = world.services(store)
        problems = list(check_wallet_invariants(world, services.wallet, store))  # type: ignore[arg-type]
        problems += check_invariants(store, KINDS)
        if store.rows():
            problems.append(f"{len(store.rows())} action(s) still live")
        return problems
    finally:
        store.close()


SCENARIO = Scenario(
    name="bark-wallet",
    setup=lambda folder: None,
    driver=_driver,
    database=lambda folder: f"sqlite:///{_wallet(folder)}",
    check=_check,
)
