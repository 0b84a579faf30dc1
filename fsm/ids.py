"""Action ids: the seed's key rules, checked once at `start`.

An id is both the checkpoint's primary key and its lock key, so it must be stable, short and
safe in any lock namespace: ASCII letters, digits, ``-``, ``_`` and ``.``, starting and ending
with a letter or digit, at most 200 bytes. Bark uses ``.`` as separator (``ln_pay.<hash>``)
because ``:`` is not allowed.
"""

from __future__ import annotations

import re

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
