"""Events: typed messages into waiting actions, and the ones fsm itself sends.

An event is an instance of an attrs class, stored through the same converter as the data
(`fsm.CONVERTER`) in the action's inbox (``fsm_event``) by `fsm.Executor.send`. A kind's
table says which states accept which events (``waiting.to(approved, on=Approved)``), and
the step that takes one consumes it in the transaction of its checkpoint.

An event type is stored under its *event name*: the class's ``__fsm_event__`` when it sets
one, else its ``__name__``. Renaming or moving the class keeps its queued events readable
as long as the name stays; two event types of one kind may not share a name.
"""

from __future__ import annotations

from typing import Any

import attrs
import orjson

from fsm.protocol import Cancellation

CANCEL = "fsm.Cancel"
"""The event name of an operator's cancel queued while a driver held the action: consumed
at the drive's next step boundary through the table's cancel routes."""


def encode_cancel(reason: str, by: str | None) -> str:
    """A queued cancel's payload (the `fsm.protocol.Cancellation` it stands for)."""
    return orjson.dumps({"reason": reason, "by": by}).decode()


def decode_cancel(payload: str) -> Cancellation:
    """The `Cancellation` a queued cancel carries (written by `encode_cancel`)."""
    body = orjson.loads(payload)
    return Cancellation(str(body["reason"]), body.get("by"))


def event_name(cls: type[Any]) -> str:
    """The name an event type is stored under (see the module's doc)."""
    name = getattr(cls, "__fsm_event__", None)
    return name if isinstance(name, str) and name else cls.__name__


@attrs.frozen
class ChildEnded:
    """Sent by fsm to a parent action when one of its children (``ctx.spawn``) ends.

    Written in the transaction that ends the child, so a parent never misses it nor gets
    it twice. ``status`` is ``done``, ``failed`` or ``stopped``; ``state`` the terminal state;
    ``error`` the failure's text (None when done).
    """

    __fsm_event__ = "fsm.ChildEnded"

    child: str
    kind: str
    status: str
    state: str
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "done"


@attrs.frozen
class Delivered:
    """A pending event as the inbox holds it: its row id (send order), name and payload."""

    id: int
    name: str
    payload: str
    key: str
    sent_at: float
