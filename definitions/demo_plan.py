"""What the demo starts: one starter per kind, each the kind's own `start_<kind>` with the
demo's arguments.

Every starter is deterministic in the plan entry ``i`` and the seed (preimages, amounts,
destinations, offboard ids), so a starter retried after a transient error asks the server
the same thing, and two runs of one seed do the same.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Any

import attrs

from .arkoor_send import ArkoorSendKind, start_arkoor_send
from .board import BoardKind, fund_board, start_board
from .lightning_receive import LightningReceiveKind
from .lightning_receive_start import start_lightning_receive
from .lightning_send import LightningSendKind
from .lightning_send_start import start_lightning_send
from .model import ArkAddress, digest
from .offboard import OffboardKind
from .offboard_start import start_offboard
from .services import Services
from .started import Started

Starter = Callable[[Services, int, random.Random], Awaitable[Started[Any]]]


@attrs.frozen
class KindSpec:
    """A kind of the plan and how the demo starts one action of it."""

    kind: type[Any]
    start: Starter

    @property
    def name(self) -> str:
        """The kind's own name: its entry point's, its rows' and its summary line's."""
        return str(self.kind.name)


async def _receive(svc: Services, i: int, rng: random.Random) -> Started[Any]:
    preimage = digest("demo receive", i)
    return await start_lightning_receive(svc, rng.randrange(2_000, 8_000), preimage=preimage)


async def _arkoor(svc: Services, i: int, rng: random.Random) -> Started[Any]:
    peer = ArkAddress(digest("demo peer", i), [f"mbx-peer-{i}"])
    return await start_arkoor_send(svc, peer, rng.randrange(1_000, 5_000))


async def _ln_send(svc: Services, i: int, rng: random.Random) -> Started[Any]:
    invoice = await svc.lightning.create_invoice(rng.randrange(1_000, 5_000), "", f"demo.inv.{i}")
    return await start_lightning_send(svc, invoice)


async def _board(svc: Services, i: int, rng: random.Random) -> Started[Any]:
    return await start_board(svc, fund_board(svc, rng.randrange(5_000, 15_000), fee=300))


async def _offboard(svc: Services, i: int, rng: random.Random) -> Started[Any]:
    amount = rng.randrange(1_000, 4_000)
    return await start_offboard(
        svc, f"dest:demo-{i}", amount=amount, offboard_id=digest("demo offboard", i)[:32]
    )


SPECS = (
    KindSpec(LightningReceiveKind, _receive),
    KindSpec(ArkoorSendKind, _arkoor),
    KindSpec(LightningSendKind, _ln_send),
    KindSpec(BoardKind, _board),
    KindSpec(OffboardKind, _offboard),
)
"""The plan cycles through these: entry ``i`` starts an action of ``SPECS[i % 5]``."""
