"""The PostgreSQL notification channel that wakes the workers of one schema.

A start or a notify tells listening workers that something came due. NOTIFY channels belong
to a whole database, not to a schema, so one fixed name would let every fsm schema of a
database wake every other schema's workers, each then claiming and polling for nothing. So
the channel is named after the schema the store's tables live in (``current_schema()``,
read once when the store opens): ``fsm_due.<schema>``. A channel name is an identifier of
at most 63 bytes; a schema name too long for that is replaced by a hash of it
(``fsm_due#<hash>``, a form no schema-named channel takes).

The name travels as a parameter to ``pg_notify``, never spliced into SQL; only ``LISTEN``
needs it as an identifier, quoted by the listener (`fsm.worker.listener`).
"""

from __future__ import annotations

import hashlib

from fsm.store.connection import WRAP_ERRORS, Link

PREFIX = "fsm_due"

MAX_BYTES = 63
"""PostgreSQL's longest identifier (NAMEDATALEN - 1); ``pg_notify`` refuses a longer one."""

NOTIFY = "SELECT pg_notify(%s, '')"
"""Wake the listeners of a channel (the first parameter); sent with the commit."""


def channel_for(schema: str) -> str:
    """The channel of the workers of ``schema``."""
    name = f"{PREFIX}.{schema}"
    if len(name.encode()) <= MAX_BYTES:
        return name
    return f"{PREFIX}#{hashlib.sha256(schema.encode()).hexdigest()[:48]}"


def current_channel(link: Link) -> str:
    """The channel of the schema ``link``'s connection creates and reads its tables in."""
    with WRAP_ERRORS:  # not a write: the test hooks on statements leave it alone
        row = link.connection().execute("SELECT current_schema()").fetchone()
    if row is None or row[0] is None:
        raise ValueError(  # pragma: no cover - the schema check refuses this store before
            "no schema of the search_path exists: fsm's tables have nowhere to live"
        )
    return channel_for(str(row[0]))
