"""`ChainSource`: the bitcoin backend (tip, tx status, broadcast, spends), and its records."""

from __future__ import annotations

import enum
from typing import Protocol

import attrs

from ..model import OutPoint, Tx


class ChainRejected(Exception):
    """The chain backend refused a broadcast.

    ``missing_inputs``: an input is missing or already spent (bark: the board conflict probe's
    "Fatal"); otherwise the reason is something else (bark: "Undecided").
    """

    def __init__(self, message: str, *, missing_inputs: bool) -> None:
        super().__init__(message)
        self.missing_inputs = missing_inputs


class TxState(enum.Enum):
    CONFIRMED = "confirmed"
    MEMPOOL = "mempool"
    NOT_FOUND = "not_found"


@attrs.frozen
class TxStatus:
    state: TxState
    height: int | None = None
    """The block height, when confirmed."""

    def confirmations(self, tip: int) -> int:
        """tip - height + 1, saturating at 0; 0 when not confirmed (bark's board arithmetic)."""
        if self.state is not TxState.CONFIRMED or self.height is None:
            return 0
        return max(0, tip - self.height + 1)


@attrs.frozen
class SpendInfo:
    """Who spends an outpoint: the spending txid and its height (``None``: in the mempool)."""

    txid: str
    height: int | None


class ChainSource(Protocol):
    """The bitcoin backend."""

    async def tip_height(self) -> int: ...

    async def tx_status(self, txid: str) -> TxStatus: ...

    async def get_tx(self, txid: str) -> Tx | None: ...

    async def broadcast(self, tx: Tx) -> None:
        """Accept ``tx`` into the mempool; a tx already known is accepted again silently.
        Raises `ChainRejected` (unsigned, missing or spent inputs, ...)."""
        ...

    async def spent_by(self, outpoint: OutPoint) -> SpendInfo | None: ...
