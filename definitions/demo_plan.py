"""What the demo starts: one starter per kind, each making a new action and its resources.

Every starter is deterministic in the plan entry ``i`` and the seed (preimages, amounts,
destinations), so a starter retried after a transient error asks the server the same thing.
Kinds whose module is missing are left out of the plan (the demo runs with what exists).
"""

from __future__ import annotations

import importlib
import random
from collections.abc import Awaitable, Callable
from typing import Any

import attrs

import fsm
from definitions.model import ArkAddress, TxOut, board_address, digest
from definitions.services import Services

Started = tuple[fsm.Action[Services], list[str]]
Starter = Callable[[Services, int, random.Random], Awaitable[Started]]


@attrs.frozen
class KindSpec:
    name: str
    module: str
    cls: str
    start: Starter


async def _receive(svc: Services, i: int, rng: random.Random) -> Started:
    from definitions.lightning_receive import start_lightning_receive

    preimage = digest("demo receive", i)
    return await start_lightning_receive(svc, rng.randrange(2_000, 8_000), preimage=preimage), []


async def _arkoor(svc: Services, i: int, rng: random.Random) -> Started:
    mod: Any = importlib.import_module("definitions.arkoor_send")
    peer = ArkAddress(digest("demo peer", i), [f"mbx-peer-{i}"])
    started: Started = mod.start_arkoor_send(svc, peer, rng.randrange(1_000, 5_000))
    return started


async def _ln_send(svc: Services, i: int, rng: random.Random) -> Started:
    mod: Any = importlib.import_module("definitions.lightning_send")
    invoice = await svc.lightning.create_invoice(rng.randrange(1_000, 5_000), "", f"demo.inv.{i}")
    started: Started = await mod.start_lightning_send(svc, invoice)
    return started


async def _board(svc: Services, i: int, rng: random.Random) -> Started:
    mod: Any = importlib.import_module("definitions.board")
    pubkey = svc.wallet.derive_key(svc.wallet.next_key_index())
    amount = rng.randrange(5_000, 15_000)
    funding = svc.onchain.build_tx([TxOut(board_address(pubkey), amount)], fee=300)
    started: Started = await mod.start_board(svc, funding)
    return started


async def _offboard(svc: Services, i: int, rng: random.Random) -> Started:
    mod: Any = importlib.import_module("definitions.offboard")
    started: Started = await mod.send_onchain(svc, f"dest:demo-{i}", rng.randrange(1_000, 4_000))
    return started


SPECS = (
    KindSpec(
        "lightning_receive", "definitions.lightning_receive", "LightningReceiveKind", _receive
    ),
    KindSpec("arkoor_send", "definitions.arkoor_send", "ArkoorSendKind", _arkoor),
    KindSpec("lightning_send", "definitions.lightning_send", "LightningSendKind", _ln_send),
    KindSpec("board", "definitions.board", "BoardKind", _board),
    KindSpec("offboard", "definitions.offboard", "OffboardKind", _offboard),
)


def available() -> list[tuple[KindSpec, type]]:
    """The specs whose module imports, with their kind class."""
    found = []
    for spec in SPECS:
        try:
            module = importlib.import_module(spec.module)
        except ImportError:
            continue
        found.append((spec, getattr(module, spec.cls)))
    return found
