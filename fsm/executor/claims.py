"""A claimed row: taking its lease, reading it, and letting it go.

`claim` is the one place a store's claim result is turned into what the executor does with
it (drive, skip a busy action, report a missing one, remove a quarantined one). `readable`
and `foreign` decide, before any step runs, whether a claimed row is driven here, left for
another driver, or quarantined.
"""

from __future__ import annotations

import logging
from typing import Any

from fsm.codec import KindCodec
from fsm.errors import DecodeError, UnknownKind
from fsm.ids import is_valid_id
from fsm.protocol import Action
from fsm.registry import Registry
from fsm.results import DriveStatus
from fsm.store import Claimed, ClaimMiss, Store

log = logging.getLogger(__name__)


def claim(store: Store, action_id: str, owner: str, now: float) -> Claimed | DriveStatus:
    """Take the lease on ``action_id``; if it cannot be taken, why: BUSY (another driver
    holds it), MISSING (no live action) or QUARANTINED (the row is set aside)."""
    return why_not(store.claim(action_id, owner, now), action_id)


def why_not(claimed: Claimed | ClaimMiss, action_id: str) -> Claimed | DriveStatus:
    """A store's claim result (`Store.claim`, `Store.claim_soon`) as the executor reads it:
    the claimed row, or why there is none (see `claim`)."""
    if isinstance(claimed, Claimed):
        return claimed
    if claimed is ClaimMiss.BUSY:
        log.debug("action %s: already being driven", action_id)
        return DriveStatus.BUSY
    if claimed is ClaimMiss.QUARANTINED:
        return DriveStatus.QUARANTINED
    return DriveStatus.MISSING


def let_go(
    store: Store,
    action_id: str,
    epoch: int,
    logger: logging.LoggerAdapter[logging.Logger] | None = None,
) -> None:
    """Release a lease without touching the checkpoint; if that fails, the lease runs out.

    ``logger``: a drive's own (`fsm.executor.drivelog.Adapter`), so the warning names the
    action's kind, state and step key too."""
    try:
        store.unclaim(action_id, epoch)
    except Exception as exc:  # the lease then expires on its own
        if logger is None:
            log.warning(
                "action %s: could not release the lease: %s",
                action_id,
                exc,
                extra={"action": action_id},
            )
        else:
            logger.warning("could not release the lease: %s", exc)


def readable(registry: Registry, claimed: Claimed) -> tuple[KindCodec, Action[Any]] | str:
    """The claimed row's kind and action, or why the row cannot be read (a quarantine reason)."""
    if not is_valid_id(claimed.id):
        return f"id {claimed.id!r} breaks the key rules"
    codec = registry.get(claimed.kind)
    try:
        action = codec.load(claimed.state, claimed.version, claimed.payload)
    except DecodeError as exc:
        return str(exc)
    if action.id != claimed.id:
        return f"payload belongs to action {action.id!r}, not to row {claimed.id!r}"
    return codec, action


def foreign(registry: Registry, claimed: Claimed) -> str | None:
    """Why this executor must leave the row to another driver, if it must.

    A kind it does not know, or a row written by a newer version of the kind (a rolling
    deploy, or one worker pool per team), is not a bad row: it is left as it is.
    """
    try:
        codec = registry.get(claimed.kind)
    except UnknownKind as exc:
        return str(exc)
    if claimed.version > codec.version:
        return (
            f"row of kind {claimed.kind!r} is v{claimed.version}, newer than this code "
            f"(v{codec.version})"
        )
    return None
