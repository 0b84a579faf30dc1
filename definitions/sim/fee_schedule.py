"""The simulated server's fee schedule over time: `DEFAULT_FEES` until a test or the demo
sets another (`World.set_fees`), each schedule in force from its time on (the world's clock),
so a fee can change between a wallet's quote and its use, as on a real server.
"""

from __future__ import annotations

from ..services.fees import FeeSchedule, FeeTier
from .db import Db, dump, load

DEFAULT_FEES = FeeSchedule(
    board=[FeeTier(None, 200)],
    lightning_send=[FeeTier(None, 10, 1_000)],
    lightning_receive=[FeeTier(None, 20)],
    offboard_fee_rate=50,
)
"""Flat fees (one open tier each): the schedule every test assumes unless it sets one."""

TIERED_FEES = FeeSchedule(
    board=[FeeTier(50_000, 200), FeeTier(None, 100, 2_000)],
    lightning_send=[FeeTier(10_000, 10, 1_000), FeeTier(100_000, 20, 800), FeeTier(None, 50, 500)],
    lightning_receive=[FeeTier(20_000, 20), FeeTier(None, 10, 500)],
    offboard_fee_rate=50,
)
"""A schedule with tiers (the demo's): small amounts pay a base, larger ones a share."""

FEES_SCHEMA = """
CREATE TABLE IF NOT EXISTS srv_fee_schedule (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    since REAL NOT NULL,
    body TEXT NOT NULL
)
"""


def fees_in_force(db: Db, now: float) -> FeeSchedule:
    """The schedule set last among those in force at ``now`` (`DEFAULT_FEES` if none)."""
    row = db.one(
        "SELECT body FROM srv_fee_schedule WHERE since <= ? ORDER BY since DESC, seq DESC LIMIT 1",
        (now,),
    )
    return DEFAULT_FEES if row is None else load(row[0], FeeSchedule)


def set_fees(db: Db, schedule: FeeSchedule, since: float) -> None:
    """Put ``schedule`` in force from ``since`` on (the caller's transaction)."""
    db.run("INSERT INTO srv_fee_schedule (since, body) VALUES (?, ?)", (since, dump(schedule)))


__all__ = ["DEFAULT_FEES", "FEES_SCHEMA", "TIERED_FEES", "fees_in_force", "set_fees"]
