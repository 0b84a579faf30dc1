"""fsm: durable, crash-safe, multi-step actions written as state machines.

The public namespace; the modules behind it are private to the package layout and may move.
"""

# Last: the testing tools' environment reader, so a driver process a crash runner spawns is
# armed by FSM_CRASH / FSM_DB_FAULTS whatever it imported (see fsm.store.hooks).
import fsm.testing.faults  # noqa: F401
from fsm.codec import CONVERTER, KindCodec, make_converter
from fsm.errors import (
    ActionBusy,
    DecodeError,
    DefinitionError,
    DoubleDriveMismatch,
    EncodeError,
    FsmError,
    InvalidActionId,
    KindError,
    KindMismatch,
    LeaseLost,
    Rejected,
    ResourceConflict,
    SchemaError,
    StepTimeout,
    UnknownKind,
)
from fsm.executor import Executor
from fsm.ids import check_id
from fsm.kind import Kind
from fsm.protocol import (
    Action,
    Done,
    DriveMode,
    Failed,
    Next,
    Outcome,
    Park,
    StepContext,
    park_with_backoff,
)
from fsm.registry import Registry
from fsm.results import DriveResult, DriveStatus, ResumeReport, StartResult, StartStatus
from fsm.retry import RetryPolicy
from fsm.state import Handled, State, Transition, Wake, handled
from fsm.store import KeptOutcome, Store, open_store
from fsm.sync import SyncExecutor
from fsm.validate import KindWarning, validate_kind

__all__ = [
    "CONVERTER",
    "Action",
    "ActionBusy",
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
    "Handled",
    "InvalidActionId",
    "KeptOutcome",
    "Kind",
    "KindCodec",
    "KindError",
    "KindMismatch",
    "KindWarning",
    "LeaseLost",
    "Next",
    "Outcome",
    "Park",
    "Registry",
    "Rejected",
    "ResourceConflict",
    "ResumeReport",
    "RetryPolicy",
    "SchemaError",
    "StartResult",
    "StartStatus",
    "State",
    "StepContext",
    "StepTimeout",
    "Store",
    "SyncExecutor",
    "Transition",
    "UnknownKind",
    "Wake",
    "check_id",
    "handled",
    "make_converter",
    "open_store",
    "park_with_backoff",
    "validate_kind",
]
