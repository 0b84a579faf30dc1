"""What an operation will cost, before the wallet starts it (bark's ``estimate_*_fee``).

Each estimate reads the server's info once and prices the operation under the fee schedule in
force (`services.fees.FeeSchedule`). It is a quote, not a promise: the schedule may change
before the action's request reaches the server, which then refuses the stale quote ("...
fee is no longer valid"). A board's starter is refused at once (start it again: it quotes
anew); a lightning send or an offboard that quoted at start fails with the server's reason on
its movement (``failure``), and paying or offboarding again quotes anew.
"""

from __future__ import annotations

from .services import Services


async def estimate_board_fee(services: Services, amount: int) -> int:
    """The fee of boarding ``amount`` sats (deducted from the board's VTXO)."""
    return (await services.server.info()).board_fee(amount)


async def estimate_offboard_fee(services: Services, n_inputs: int = 1) -> int:
    """The fee of offboarding ``n_inputs`` VTXOs at the current fee rate (a send on-chain of
    an exact amount offboards one VTXO: the default)."""
    return (await services.server.info()).offboard_fee(n_inputs)


async def estimate_lightning_send_fee(services: Services, amount: int) -> int:
    """The fee of paying ``amount`` sats over Lightning (added to the HTLC)."""
    return (await services.server.info()).lightning_send_fee(amount)


async def estimate_lightning_receive_fee(services: Services, amount: int) -> int:
    """The fee of receiving ``amount`` sats over Lightning (deducted from the HTLC)."""
    return (await services.server.info()).lightning_receive_fee(amount)


__all__ = [
    "estimate_board_fee",
    "estimate_lightning_receive_fee",
    "estimate_lightning_send_fee",
    "estimate_offboard_fee",
]
