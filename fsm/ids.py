"""Action ids: the seed's key rules, checked once at `start`.

An id is both the checkpoint's primary key and its lock key, so it must be stable, short and
safe in any lock namespace: ASCII letters, digits, ``-``, ``_`` and ``.``, starting and ending
with a letter or digit, at most 200 bytes. Bark uses ``.`` as separator (``ln_pay.<hash>``)
because ``:`` is not allowed.
"""

from __future__ import annotations

import re
import secrets

from fsm.errors import InvalidActionId

MAX_ID_BYTES = 200
_ID = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")


def check_id(action_id: object) -> str:
    """Return ``action_id`` if it follows the key rules, else raise `InvalidActionId`."""
    if not isinstance(action_id, str):
        raise InvalidActionId(f"action id must be a str, got {type(action_id).__name__}")
    if not action_id:
        raise InvalidActionId("action id is empty")
    if len(action_id) > MAX_ID_BYTES:
        raise InvalidActionId(
            f"action id {action_id[:40]!r}... is {len(action_id)} bytes, at most "
            f"{MAX_ID_BYTES} allowed"
        )
    if not _ID.fullmatch(action_id):
        raise InvalidActionId(
            f"action id {action_id!r} breaks the key rules: use ASCII letters, digits, '-', '_' "
            "and '.', starting and ending with a letter or digit (use '.' instead of ':')"
        )
    return action_id


def is_valid_id(action_id: object) -> bool:
    """True when `check_id` would accept ``action_id``."""
    try:
        check_id(action_id)
    except InvalidActionId:
        return False
    return True


INCARNATION_MARK = "~"
"""Separates an action id from its incarnation in idempotency keys (``~`` is never in an id,
so the id can always be read back from a key)."""


def new_incarnation() -> str:
    """A token naming one incarnation of an id: minted at `start`, kept on the row.

    Folded into every idempotency key, so an id reused after its action ended never repeats a
    key the outside world has already seen. 48 random bits: two incarnations of the same id
    sharing one is not a concern.
    """
    return secrets.token_hex(6)


def idempotency_key(action_id: str, incarnation: str, seq: int) -> str:
    """``<id>~<incarnation>.<seq>``; rows from before incarnations existed keep ``<id>.<seq>``."""
    if incarnation:
        return f"{action_id}{INCARNATION_MARK}{incarnation}.{seq}"
    return f"{action_id}.{seq}"


def action_of_key(key: str) -> str:
    """The action id inside an idempotency key made by `idempotency_key` (new form only)."""
    return key.partition(INCARNATION_MARK)[0]
