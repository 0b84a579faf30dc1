"""The Ark server's fee schedule, as it publishes it in its info (bark's ``ArkInfo`` fees).

Each Ark operation whose fee depends on its amount (board, lightning send, lightning receive)
has tiers: the first tier whose ``up_to`` covers the amount applies, ``base + amount * ppm /
1 000 000``. An offboard pays the on-chain fee rate (sats per input and output of its tx).
The server changes its schedule over time; a wallet quotes a fee from the schedule it read
and sends the quote with its request, and the server refuses a quote that is no longer its
schedule's ("... fee is no longer valid"), as bark's server refuses a stale fee rate.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class FeeTier:
    """Amounts up to ``up_to`` sats (``None``: any amount) pay ``base + amount * ppm / 1e6``."""

    up_to: int | None
    base: int
    ppm: int = 0

    def covers(self, amount: int) -> bool:
        return self.up_to is None or amount <= self.up_to

    def fee(self, amount: int) -> int:
        return self.base + amount * self.ppm // 1_000_000


def tiered_fee(tiers: list[FeeTier], amount: int) -> int:
    """The fee of ``amount`` under the first tier that covers it (the last tier, open-ended,
    covers the rest; an amount above every bounded tier with no open one pays the last)."""
    for tier in tiers:
        if tier.covers(amount):
            return tier.fee(amount)
    return tiers[-1].fee(amount)


@attrs.frozen
class FeeSchedule:
    """What the server charges, per operation. Tiers are in increasing ``up_to`` order."""

    board: list[FeeTier]
    lightning_send: list[FeeTier]
    lightning_receive: list[FeeTier]
    offboard_fee_rate: int
    """sats per input and per output of an offboard tx."""

    def __attrs_post_init__(self) -> None:
        for name in ("board", "lightning_send", "lightning_receive"):
            tiers: list[FeeTier] = getattr(self, name)
            if not tiers:
                raise ValueError(f"fee schedule: {name} has no tier")
            bounds = [t.up_to for t in tiers if t.up_to is not None]
            if bounds != sorted(bounds) or any(t.up_to is None for t in tiers[:-1]):
                raise ValueError(f"fee schedule: {name} tiers must rise, the open one last")

    def board_fee(self, amount: int) -> int:
        return tiered_fee(self.board, amount)

    def lightning_send_fee(self, amount: int) -> int:
        return tiered_fee(self.lightning_send, amount)

    def lightning_receive_fee(self, amount: int) -> int:
        return tiered_fee(self.lightning_receive, amount)

    def offboard_fee(self, n_inputs: int, fee_rate: int | None = None) -> int:
        """The fee of offboarding ``n_inputs`` VTXOs to one destination at ``fee_rate``
        (by default the schedule's)."""
        rate = self.offboard_fee_rate if fee_rate is None else fee_rate
        return rate * (n_inputs + 1)


__all__ = ["FeeSchedule", "FeeTier", "tiered_fee"]
