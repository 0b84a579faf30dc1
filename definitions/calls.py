"""Idempotency keys for a step that makes more than one state-changing call.

A step's own key (``ctx.idempotency_key``, ``<action id>~<incarnation>.<seq>``) goes to its
main call. A second call in the same step (a best-effort registration, one post per mailbox)
needs a key of its own, because a server refuses one key for two different requests; it must
still be the same on every re-run of the step, so it is derived from the step's key:
``<action id>~<incarnation>.<seq>.<call>`` (the sim's ledger files it under the action, see
`sim.ledger.action_of`).
"""

from __future__ import annotations

from typing import Any

from fsm import StepContext


def call_key(ctx: StepContext[Any], call: str) -> str:
    """The idempotency key of the step's call named ``call`` (not all digits)."""
    if call.isdigit():
        raise ValueError(f"call name {call!r} must not be all digits: it would read as a seq")
    return f"{ctx.idempotency_key}.{call}"
