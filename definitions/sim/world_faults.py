"""The simulated world's faults: seeded random faults by rate, and scripted faults for tests.

These are the faults of the outside world a wallet talks to (server calls, mempool, Lightning
outcomes); the faults of fsm's own database are `fsm`'s testing tools, not these.

Every draw comes from ``random.Random(f"{seed}:{n}")`` where ``n`` is a counter persisted in
the world's database, so the same seed and the same sequence of calls give the same faults,
across restarts of the wallet process too. Scripted faults ("fail the next 2 calls of
``finish_offboard`` with LOSE_RESPONSE") are persisted as well and take precedence.
"""

from __future__ import annotations

import enum
import random

import attrs

from .db import Db


class Fault(enum.Enum):
    DROP_REQUEST = "drop_request"
    """The request never reaches the server: nothing applied, the caller sees a transient error."""
    LOSE_RESPONSE = "lose_response"
    """The server applies the request, then the response is lost: transient error."""
    REJECT_INVALID_ARGUMENT = "reject_invalid_argument"
    """The server refuses with ``InvalidArgument`` and changes nothing."""
    REJECT_NOT_FOUND = "reject_not_found"
    """The server refuses with ``NotFound`` and changes nothing."""
    RESTART = "restart"
    """The server restarts: it forgets its sessions (offboard finish sessions) and this request
    fails with a transient error."""
    FAKE_SUCCESS = "fake_success"
    """The proxy lies: it answers success to a call whose answer is a bare acknowledgement
    (a registration, a mailbox post, a payment initiation, a cancel) without forwarding it,
    so nothing is applied. An answer the server signs cannot be forged: such a call is
    forwarded untouched."""
    REWRITE = "rewrite"
    """The proxy lies: the server applies the request (and keeps its true answer for
    replays), and one field of the answer is rewritten on the way back (`lies.rewrite`)."""


@attrs.frozen
class Faults:
    """Rates (0..1) of each fault per server call, and of chain faults per mempool tx per block.

    ``ln_fail``, ``ln_max_pending_polls``, ``ln_no_route`` and ``ln_max_parts`` shape the
    outcome of payments to invoices of the simulated Lightning node (drawn once per invoice).
    """

    drop_request: float = 0.0
    lose_response: float = 0.0
    reject_invalid_argument: float = 0.0
    reject_not_found: float = 0.0
    restart: float = 0.0
    fake_success: float = 0.0
    rewrite: float = 0.0
    evict: float = 0.0
    """A mempool tx is evicted instead of being mined."""
    conflict: float = 0.0
    """A mempool tx spending wallet coins is replaced by a mined conflicting spend."""
    ln_fail: float = 0.0
    ln_max_pending_polls: int = 0
    ln_no_route: float = 0.0
    """A payee invoice the server's node finds no route to: its payments fail at once."""
    ln_max_parts: int = 1
    """Payments to a payee invoice go in 1 to this many parts, some lost on their first
    route and retried (`lightning_payments.Route`)."""

    def server_rates(self) -> list[tuple[Fault, float]]:
        return [
            (Fault.DROP_REQUEST, self.drop_request),
            (Fault.LOSE_RESPONSE, self.lose_response),
            (Fault.REJECT_INVALID_ARGUMENT, self.reject_invalid_argument),
            (Fault.REJECT_NOT_FOUND, self.reject_not_found),
            (Fault.RESTART, self.restart),
            (Fault.FAKE_SUCCESS, self.fake_success),
            (Fault.REWRITE, self.rewrite),
        ]


FAULTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS fault_script (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    rpc TEXT NOT NULL,
    fault TEXT NOT NULL,
    remaining INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS fault_log (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    rpc TEXT NOT NULL,
    fault TEXT NOT NULL
)
"""


class FaultGate:
    """Decides, call by call, whether a fault happens (and records each one in ``fault_log``)."""

    def __init__(self, db: Db, seed: int, faults: Faults) -> None:
        self.db = db
        self.seed = seed
        self.faults = faults

    def random(self) -> float:
        """The next number of the seeded stream (the counter commits with the caller's tx)."""
        with self.db.transaction():
            n = int(self.db.meta("rng_counter", "0"))
            self.db.set_meta("rng_counter", str(n + 1))
        return random.Random(f"{self.seed}:{n}").random()

    def chance(self, rate: float) -> bool:
        return rate > 0 and self.random() < rate

    def script(self, rpc: str, fault: Fault, times: int = 1) -> None:
        """Make the next ``times`` calls of ``rpc`` (``"*"``: any server call) fail so."""
        with self.db.transaction():
            self.db.run(
                "INSERT INTO fault_script (rpc, fault, remaining) VALUES (?, ?, ?)",
                (rpc, fault.value, times),
            )

    def draw(self, rpc: str) -> Fault | None:
        """The fault for this call of ``rpc``, if any: a scripted one first, else by rate."""
        with self.db.transaction():
            fault = self._scripted(rpc) or self._by_rate()
            if fault is not None:
                self.db.run("INSERT INTO fault_log (rpc, fault) VALUES (?, ?)", (rpc, fault.value))
        return fault

    def _scripted(self, rpc: str) -> Fault | None:
        row = self.db.one(
            "SELECT id, fault FROM fault_script WHERE rpc IN (?, '*') AND remaining > 0 "
            "ORDER BY id LIMIT 1",
            (rpc,),
        )
        if row is None:
            return None
        self.db.run("UPDATE fault_script SET remaining = remaining - 1 WHERE id = ?", (row[0],))
        return Fault(row[1])

    def _by_rate(self) -> Fault | None:
        rates = self.faults.server_rates()
        if not any(rate > 0 for _, rate in rates):
            return None
        x = self.random()
        for fault, rate in rates:
            if x < rate:
                return fault
            x -= rate
        return None

    def log(self) -> list[tuple[str, Fault]]:
        """Every fault that happened, in order (for determinism checks and reports)."""
        return [
            (str(r), Fault(f))
            for r, f in self.db.all("SELECT rpc, fault FROM fault_log ORDER BY n")
        ]
