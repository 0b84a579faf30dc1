"""A drive's logger: every record says which action, kind, state and step key it is about.

The drive's own lines and its steps' ``ctx.log`` go through `Adapter`, so ``fsm worker
--log-format json`` prints those four fields on every line about an action, whatever wrote it.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from fsm.ids import idempotency_key


class At(Protocol):
    """Where an action stands, as a log record tells it (a `Drive`, or a `Claimed` row)."""

    @property
    def id(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def state(self) -> str: ...

    @property
    def incarnation(self) -> str: ...

    @property
    def seq(self) -> int: ...


class Adapter(logging.LoggerAdapter[logging.Logger]):
    """A drive's logger (and its steps' ``ctx.log``): every record says which action, kind,
    state and step key it is about, in its text and as the record's fields ``action``,
    ``kind``, ``state`` and ``key`` (``fsm worker --log-format json`` prints them).

    Read from the drive when a record is emitted, so a step that logs nothing pays nothing;
    the key is the step the action stands at (the one running, or the next to run).
    """

    def __init__(self, logger: logging.Logger, at: At) -> None:
        super().__init__(logger)
        self.at = at

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        at = self.at
        kwargs["extra"] = {
            **kwargs.get("extra", {}),
            "action": at.id,
            "kind": at.kind,
            "state": at.state,
            "key": idempotency_key(at.id, at.incarnation, at.seq),
        }
        return f"action {at.id}: {msg}", kwargs
