"""`Executor.send`: an event into an action's inbox, durably, without driving it.

The event is checked against the kind's table inside the transaction that stores it (the
action's kind and state are read there, so the answer cannot be stale), stored under its
key, and the action made due; a worker on any host takes it (PostgreSQL NOTIFY wakes one at
once). The caller needs no services and never runs the action's code: a web handler, a
webhook or a child's end can send.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import attrs

from fsm.codec import encode
from fsm.converter import CONVERTER
from fsm.events import CANCEL, encode_cancel, event_name
from fsm.ids import check_id
from fsm.protocol import Cancellation
from fsm.registry import Registry
from fsm.results import SendResult, SendStatus
from fsm.store import Store
from fsm.store.inbox import Verdict

if TYPE_CHECKING:
    from fsm.executor.executor import Executor

MAX_KEY_BYTES = 255
"""The longest event key (the inbox's column)."""
MAX_PAYLOAD_BYTES = 1 << 20
"""The largest event, encoded: an inbox is read by every step of a waiting state."""


async def send(ex: Executor[Any], action_id: str, event: object, key: str) -> SendResult:
    """See `fsm.Executor.send`."""
    check_id(action_id)
    if not isinstance(key, str) or not key or len(key.encode()) > MAX_KEY_BYTES:
        raise ValueError(
            f"an event's key must be a non-empty string of at most {MAX_KEY_BYTES} bytes "
            f"(it deduplicates the send), got {key!r}"
        )
    cls = type(event)
    if not attrs.has(cls):
        raise TypeError(
            f"an event must be an instance of an attrs class, got {cls.__name__}. Fix: "
            "declare it with @attrs.frozen"
        )
    name = event_name(cls)
    payload = encode(CONVERTER.unstructure(event, cls), f"event {name!r}").decode()
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ValueError(
            f"event {name!r} is {len(payload)} bytes once encoded, more than "
            f"{MAX_PAYLOAD_BYTES}. Fix: send a reference to the data, not the data"
        )
    check = _checker(ex.registry, name, event)
    status, detail = await ex.store.send_event(action_id, name, payload, key, ex.clock(), check)
    if status == "sent":
        ex._heard(action_id)
    return SendResult(action_id, SendStatus(status), key, detail)


def queue_cancel(
    store: Store, registry: Registry, action_id: str, cancel: Cancellation, now: float
) -> tuple[str, str | None]:
    """An operator's cancel of an action a driver holds: queued as the built-in event
    `fsm.events.CANCEL`, taken at that drive's next step boundary (`Drive.cancel_queued`)
    through the cancel route of the state it is in then. Refused now when the state it is
    in has no cancel route. The same cancel (who and why) queued twice is one event."""
    text = cancel.text
    key = "fsm.cancel:" + hashlib.sha256(text.encode()).hexdigest()[:24]

    def check(kind: str, state: str) -> Verdict:
        compiled = getattr(registry.get(kind), "compiled", None) if kind in registry else None
        if compiled is not None and compiled.states[state].cancel is None:
            return "refuse", f"state {state!r} of kind {kind!r} has no cancel route"
        return "accept", None

    return store.send_event_now(
        action_id, CANCEL, encode_cancel(cancel.reason, cancel.by), key, now, check
    )


def _checker(registry: Registry, name: str, event: object) -> Any:
    """The check the inbox runs on the action's (kind, state): does it take this event?"""

    def check(kind: str, state: str) -> Verdict:
        if kind not in registry:
            return "refuse", f"kind {kind!r} is not registered with this executor"
        compiled = getattr(registry.get(kind), "compiled", None)
        if compiled is None:
            return "refuse", f"kind {kind!r} is a hand-written action: its table takes no events"
        if name not in compiled.event_types:
            takes = ", ".join(sorted(compiled.event_types)) or "none"
            return "refuse", f"kind {kind!r} has no row taking event {name!r} (it takes: {takes})"
        if any(isinstance(event, t) for t in compiled.accepts.get(state, ())):
            return "accept", None
        policy = compiled.unaccepted
        if policy == "reject":
            return "refuse", f"state {state!r} of kind {kind!r} does not take event {name!r}"
        if policy == "drop":
            return "drop", f"state {state!r} did not take event {name!r} when it was sent"
        return "accept", None

    return check
