"""The checkpoint store: one row per live action, written once per step, fenced by a lease.

`Store` is the store over one database (`open_store` from a URL); the records it takes and
returns are plain attrs classes. The package's modules, one concern each:

* `store`: `Store`, the writes on a step's path;
* `schema`: the tables (peewee models), their version, creation and migration;
* `statements`: the hot-path SQL, built once per database;
* `records`: `Claimed`, `ClaimMiss`, `Bookkeeping`, `LogEntry`, `LoggedStep`, `RowInfo`,
  `KeptOutcome`;
* `connection`: one connection kept usable, transactions, which errors are transient;
* `leases`: claims, lease owners and whether one is certainly dead, renewals;
* `resources`: named resources held by live actions;
* `hooks`: the write points and `StoreHooks`, where the testing tools plug in;
* `opening` and `files`: URLs, SQLite files (owner-only, read-only, never created by a read);
* `inspection`: the cold reads and the operator's writes;
* `operations`, `reports`, `listing`, `report`, `pruning`: what an operator reads (a filtered
  keyset listing, one action's report and history) and the prune of old history;
* `clock`: the database's clock.
"""

from fsm.store.census import StateCensus
from fsm.store.connection import is_transient
from fsm.store.hooks import NO_HOOKS, WRITE_POINTS, StoreHooks
from fsm.store.leases import new_owner
from fsm.store.opening import open_store
from fsm.store.records import (
    Bookkeeping,
    Checkpoint,
    Claimed,
    ClaimMiss,
    KeptOutcome,
    LogEntry,
    LoggedStep,
    RowInfo,
)
from fsm.store.reports import (
    ActionFilter,
    ActionReport,
    ActionStatus,
    ActionSummary,
    Cursor,
    PruneResult,
)
from fsm.store.schema import SCHEMA_VERSION
from fsm.store.store import Store

__all__ = [
    "NO_HOOKS",
    "SCHEMA_VERSION",
    "WRITE_POINTS",
    "ActionFilter",
    "ActionReport",
    "ActionStatus",
    "ActionSummary",
    "Bookkeeping",
    "Checkpoint",
    "ClaimMiss",
    "Claimed",
    "Cursor",
    "KeptOutcome",
    "LogEntry",
    "LoggedStep",
    "PruneResult",
    "RowInfo",
    "StateCensus",
    "Store",
    "StoreHooks",
    "is_transient",
    "new_owner",
    "open_store",
]
