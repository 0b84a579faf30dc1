"""A simulated Ark world (server, chain, Lightning node) and wallet store, on SQLite.

Deterministic from a seed, persisted so it outlives a wallet process killed with SIGKILL, with
configurable faults, a ledger of every effect keyed by idempotency key, and invariant checks.
See docs/simulation.md.
"""

from .wallet_invariants import check_wallet_invariants, check_world_invariants
from .world import World, make_world
from .world_faults import Fault, Faults

__all__ = [
    "Fault",
    "Faults",
    "World",
    "check_wallet_invariants",
    "check_world_invariants",
    "make_world",
]
