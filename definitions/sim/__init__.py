"""A simulated Ark world (server, chain, Lightning node) and wallet store, on SQLite.

Deterministic from a seed, persisted so it outlives a wallet process killed with SIGKILL, with
configurable faults, a ledger of every effect keyed by idempotency key, and invariant checks.
See docs/simulation.md.
"""

from definitions.sim.faults import Fault, Faults
from definitions.sim.invariants import check_invariants
from definitions.sim.world import World, make_world

__all__ = ["Fault", "Faults", "World", "check_invariants", "make_world"]
