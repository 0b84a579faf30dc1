"""What the demo starts: one starter per kind, each the kind's own `start_<kind>` with the
demo's arguments.

Two wallets share the server: the demo's wallet starts the plan, and its arkoor sends pay
the peer wallet (`Peer`: its own store and executor) at a fresh address of the peer's;
every other lightning send pays an invoice of a receive the peer starts (an intra-Ark
payment through the one server), the others pay invoices of the outside node.

Every starter is deterministic in the plan entry ``i`` and the seed (preimages, amounts,
destinations, offboard ids), so a starter retried after a transient error asks the server
the same thing, and two runs of one seed do the same.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs

import fsm

from .arkoor_send import ArkoorSendKind, start_arkoor_send
from .board import BoardKind, fund_board, start_board
from .lightning_receive import LightningReceiveKind
from .lightning_receive_start import start_lightning_receive
from .lightning_send import LightningSendKind
from .lightning_send_start import start_lightning_send
from .model import Invoice, digest
from .offboard import OffboardKind
from .offboard_start import start_offboard
from .services import Services
from .started import Started


@attrs.frozen
class Peer:
    """The second wallet: paid by arkoor and over Lightning, it runs its own receives."""

    services: Services
    executor: fsm.Executor[Services]


PEER = "peer"
"""The peer wallet's name in the world (its wallet store ``wallet-peer.sqlite``)."""


def peer_store_path(world_folder: Path) -> Path:
    """The peer's fsm store, in the world's folder beside its wallet store."""
    return world_folder / f"fsm-{PEER}.sqlite"


Starter = Callable[[Services, Peer, int, random.Random], Awaitable[Started[Any]]]


@attrs.frozen
class KindSpec:
    """A kind of the plan and how the demo starts one action of it."""

    kind: type[Any]
    start: Starter

    @property
    def name(self) -> str:
        """The kind's own name: its entry point's, its rows' and its summary line's."""
        return str(self.kind.name)


async def _receive(svc: Services, peer: Peer, i: int, rng: random.Random) -> Started[Any]:
    preimage = digest("demo receive", i)
    return await start_lightning_receive(svc, rng.randrange(2_000, 8_000), preimage=preimage)


async def _arkoor(svc: Services, peer: Peer, i: int, rng: random.Random) -> Started[Any]:
    amount = rng.randrange(1_000, 5_000)
    to = peer.services.wallet.new_address(peer.services.config.network)
    return await start_arkoor_send(svc, to, amount)


async def _peer_invoice(peer: Peer, i: int, amount: int) -> Invoice:
    """An invoice of a receive the peer starts (once: its preimage is fixed by ``i``)."""
    preimage = digest("demo peer receive", i)
    started = await start_lightning_receive(peer.services, amount, preimage=preimage)
    if peer.executor.store.row(started.action.id) is None:
        await peer.executor.start(started.action)
    return started.action.data.invoice


async def _ln_send(svc: Services, peer: Peer, i: int, rng: random.Random) -> Started[Any]:
    amount = rng.randrange(1_000, 5_000)
    if (i // len(SPECS)) % 2 == 0:
        invoice = await _peer_invoice(peer, i, amount)
    else:
        invoice = await svc.lightning.create_invoice(amount, "", f"demo.inv.{i}")
    return await start_lightning_send(svc, invoice)


async def _board(svc: Services, peer: Peer, i: int, rng: random.Random) -> Started[Any]:
    return await start_board(svc, fund_board(svc, rng.randrange(5_000, 15_000), fee=300))


async def _offboard(svc: Services, peer: Peer, i: int, rng: random.Random) -> Started[Any]:
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
