"""Every error fsm raises on purpose, in one place so callers can catch them by type."""

from __future__ import annotations


class FsmError(Exception):
    """Base class of every error fsm raises deliberately."""


class Rejected(FsmError):
    """The remote side refused the request and changed nothing.

    Raise it from a step to route the failure to the action's rejection handling instead of the
    retry path; any other exception is treated as transient.
    """

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class InvalidActionId(FsmError, ValueError):
    """An action id breaks the key rules (see `fsm.ids`)."""


class KindMismatch(FsmError):
    """`start` was given an id that already belongs to a live action of another kind."""


class UnknownKind(FsmError, LookupError):
    """No kind with this name is registered."""


class ResourceConflict(FsmError):
    """A resource is already held by another live action."""

    def __init__(self, resource: str, holder: str, wanted_by: str) -> None:
        super().__init__(
            f"resource {resource!r} is held by action {holder!r}, wanted by {wanted_by!r}"
        )
        self.resource = resource
        self.holder = holder
        self.wanted_by = wanted_by


class LeaseLost(FsmError):
    """Our claim on an action was taken over; the write was refused and the action dropped.

    ``str()`` names the action; ``why`` is the reason alone, for a log line that already
    names it.
    """

    def __init__(self, action_id: str, why: str) -> None:
        super().__init__(f"action {action_id}: {why}")
        self.action_id = action_id
        self.why = why


class DatabaseUnavailable(FsmError):
    """A worker gave up on its database: out of reach too long, or its SQLite file was lost."""


class DecodeError(FsmError):
    """A checkpoint row cannot be turned back into an action; the row gets quarantined."""


class SchemaError(FsmError):
    """The database schema is newer than this code, or otherwise unusable."""


class NotAnFsmDatabase(SchemaError):
    """A database opened read-only has no fsm schema (no ``fsm_meta`` table): wrong file."""


class ActionBusy(FsmError):
    """Another driver holds this action right now (`update`, `delete` and the controls raise
    it; `drive` returns `DriveStatus.BUSY`)."""


class NoSuchAction(FsmError, LookupError):
    """No live action has this id (it may have ended: see its kept outcome)."""


class ControlRefused(FsmError):
    """An operator's control cannot act on this action as it stands (it is quarantined, or
    not; its row cannot be read by this code); nothing was written."""


class NoCancelRoute(ControlRefused):
    """The action's kind declares no cancel route for the state it is in."""


class DefinitionError(FsmError):
    """A kind's definition is wrong; raised at import, naming the kind, the state and the fix."""


class DoubleDriveMismatch(FsmError):
    """Double-drive mode ran a step twice from the same state and got different results."""


class KindError(FsmError, TypeError):
    """A kind's code did something fsm cannot accept: the action is parked as *broken*.

    Raised by fsm itself when a step returns something that is not an outcome, changes the
    action's id, or produces a checkpoint that cannot be stored. Like every error that means
    the kind's code is wrong, it is never retried on its own: the action waits, with the
    error on its row, for a fix and a notify (see `fsm.RetryPolicy.never_retry`).
    """


class EncodeError(KindError):
    """A checkpoint cannot be stored as JSON (an int beyond 64 bits, inf or nan, too deep)."""


class StepTimeout(FsmError):
    """A step ran past its timeout and was cancelled; retried like any transient error."""


class DatabaseNotFound(FsmError):
    """A database opened read-only does not exist; nothing was created (the message names it)."""
