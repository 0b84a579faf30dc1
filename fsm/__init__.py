"""fsm: durable, crash-safe, multi-step actions written as state machines.

The public namespace; the modules behind it are private to the package layout and may move.
"""

from fsm.checkpoint import read_action
from fsm.codec import KindCodec
from fsm.converter import CONVERTER, make_converter
from fsm.errors import (
    ActionBusy,
    ControlRefused,
    DecodeError,
    DefinitionError,
    DoubleDriveMismatch,
    EncodeError,
    FsmError,
    InvalidActionId,
    KindError,
    KindMismatch,
    LeaseLost,
    NoCancelRoute,
    NoSuchAction,
    Rejected,
    ResourceConflict,
    SchemaError,
    StepTimeout,
    UnknownKind,
)
from fsm.events import ChildEnded
from fsm.executor import Controlled, Controls, Executor
from fsm.ids import check_id
from fsm.interpreter import Instance
from fsm.kind import Kind
from fsm.observer import Observer, StepEnd, StepStart, StepWatch
from fsm.protocol import (
    Action,
    Cancellation,
    Done,
    DriveMode,
    Failed,
    Next,
    Outcome,
    Park,
    StepContext,
    Upcaster,
    park_with_backoff,
)
from fsm.registry import Registry
from fsm.results import (
    DriveResult,
    DriveStatus,
    ResumeReport,
    SendResult,
    SendStatus,
    StartResult,
    StartStatus,
)
from fsm.retry import RetryPolicy
from fsm.state import CancelRoute, Rejection, RejectionHandler, State, Transition, Wake
from fsm.store import (
    ActionFilter,
    ActionReport,
    ActionStatus,
    ActionSummary,
    Cursor,
    KeptOutcome,
    LogEntry,
    LoggedStep,
    PruneResult,
    Store,
    open_store,
)
from fsm.sync import SyncExecutor
from fsm.validate import GuardedExitWarning, KindWarning, UntypedDataWarning, validate_kind
from fsm.worker import Worker

__all__ = [
    "CONVERTER",
    "Action",
    "ActionBusy",
    "ActionFilter",
    "ActionReport",
    "ActionStatus",
    "ActionSummary",
    "CancelRoute",
    "Cancellation",
    "ChildEnded",
    "ControlRefused",
    "Controlled",
    "Controls",
    "Cursor",
    "DecodeError",
    "DefinitionError",
    "Done",
    "DoubleDriveMismatch",
    "DriveMode",
    "DriveResult",
    "DriveStatus",
    "EncodeError",
    "Executor",
    "Failed",
    "FsmError",
    "GuardedExitWarning",
    "Instance",
    "InvalidActionId",
    "KeptOutcome",
    "Kind",
    "KindCodec",
    "KindError",
    "KindMismatch",
    "KindWarning",
    "LeaseLost",
    "LogEntry",
    "LoggedStep",
    "Next",
    "NoCancelRoute",
    "NoSuchAction",
    "Observer",
    "Outcome",
    "Park",
    "PruneResult",
    "Registry",
    "Rejected",
    "Rejection",
    "RejectionHandler",
    "ResourceConflict",
    "ResumeReport",
    "RetryPolicy",
    "SchemaError",
    "SendResult",
    "SendStatus",
    "StartResult",
    "StartStatus",
    "State",
    "StepContext",
    "StepEnd",
    "StepStart",
    "StepTimeout",
    "StepWatch",
    "Store",
    "SyncExecutor",
    "Transition",
    "UnknownKind",
    "UntypedDataWarning",
    "Upcaster",
    "Wake",
    "Worker",
    "check_id",
    "make_converter",
    "open_store",
    "park_with_backoff",
    "read_action",
    "validate_kind",
]
