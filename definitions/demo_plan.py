"""What the demo starts: one starter per kind, each making a new action and its resources.

Every starter is deterministic in the plan entry ``i`` and the seed (preimages, amounts,
destinations), so a starter retried after a transient error asks the server the same thing.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Any

import attrs

import fsm

from .arkoor_send import ArkoorSendKind, start_arkoor_send
from .board import BoardKind, start_board
from .lightning_receive import LightningReceiveKind, start_lightning_receive
from .lightning_send import LightningSendKind, start_lightning_send
from .model import ArkAddress, TxOut, board_address, digest
from .offboard import OffboardKind, send_onchain
from .services import Services

Started = tuple[fsm.Action[Services], list[str]]
Starter = Callable[[Services, int, random.Random], Awaitable[Started]]


@attrs.frozen
class KindSpec:
    """A kind of the plan and how the demo starts one action of it."""

    kind: type[Any]
    start: Starter

    @property
    def name(self) -> str:
        """The kind's own name: its entry point's, its rows' and its summary line's."""
        return str(self.kind.name)


async def _receive(svc: Services, i: int, rng: random.Random) -> Started:
    preimage = digest("demo receive", i)
    return await start_lightning_receive(svc, rng.randrange(2_000, 8_000), preimage=preimage), []


async def _arkoor(svc: Services, i: int, rng: random.Random) -> Started:
    peer = ArkAddress(digest("demo peer", i), [f"mbx-peer-{i}"])
    return start_arkoor_send(svc, peer, rng.randrange(1_000, 5_000))


async def _ln_send(svc: Services, i: int, rng: random.Random) -> Started:
    invoice = await svc.lightning.create_invoice(rng.randrange(1_000, 5_000), "", f"demo.inv.{i}")
    return await start_lightning_send(svc, invoice)


async def _board(svc: Services, i: int, rng: random.Random) -> Started:
    pubkey = svc.wallet.derive_key(svc.wallet.next_key_index())
    amount = rng.randrange(5_000, 15_000)
    funding = svc.onchain.build_tx([TxOut(board_address(pubkey), amount)], fee=300)
    return await start_board(svc, funding)


async def _offboard(svc: Services, i: int, rng: random.Random) -> Started:
    return await send_onchain(svc, f"dest:demo-{i}", rng.randrange(1_000, 4_000))


SPECS = (
    KindSpec(LightningReceiveKind, _receive),
    KindSpec(ArkoorSendKind, _arkoor),
    KindSpec(LightningSendKind, _ln_send),
    KindSpec(BoardKind, _board),
    KindSpec(OffboardKind, _offboard),
)
"""The plan cycles through these: entry ``i`` starts an action of ``SPECS[i % 5]``."""
