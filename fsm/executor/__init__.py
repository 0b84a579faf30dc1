"""The executor: the seed's drive loop, with its state on the row instead of in memory.

One drive claims the action (a lease on its row), then loops: run one step, turn its result
or its exception into an outcome, persist that outcome in one transaction, and go on or
return as the outcome and the `DriveMode` say. Differences from the seed, all deliberate:

* ``attempts``, ``last_error`` and ``wake_at`` live on the row, so backoff and wake-ups
  survive a restart and `run_due` finds due actions with one indexed query.
* The per-action lock is the row's lease, so it also holds across processes; a lease held by
  a certainly dead process (same host, boot and PID namespace) is taken over at once.
* Resources change in the checkpoint's transaction and are released with the row.
* Each step has an idempotency key, ``<id>~<incarnation>.<seq>``: ``seq`` counts checkpoint
  changes, the incarnation is minted at every start, so a key is never seen twice.
* Three kinds of failure end three ways: a rejection follows the kind's route; a transient
  error is retried with backoff; an error that means the kind's code is wrong parks the
  action as *broken* (visible, budget untouched) until a fix and a notify. Never a hot loop.
* The end of an action is kept (`Store.outcome`), so a start delivered again is recognised.
* Rows that cannot be read are quarantined and reported; the other actions keep running.

The store is synchronous and runs on the event loop's thread: a SQLite step commit takes
tens of microseconds (WAL, synchronous=NORMAL), less than a hop to a worker thread would cost.
``benchmarks/step.py`` measures both the step cost and the longest stall it causes other tasks.

The parts, each depending only on those below it:

* `fsm.executor.executor`: `Executor`, its settings and the calls a program makes (start,
  drive, notify, update, delete, resume, run due, stop).
* `fsm.executor.controls`: `Controls`, the operator's controls (retry, notify, cancel, stop,
  unquarantine), each written under the action's lease like a step.
* `fsm.executor.observed`: the drive loop of an executor with an observer (`fsm.observer`):
  each step timed and reported; chosen once per drive, so the plain loop pays nothing.
* `fsm.executor.many`: many drives at a bounded concurrency (resume all, run due), tallied.
* `fsm.executor.ready`: a claimed row made ready to drive (or left, or quarantined);
* `fsm.executor.drive`: the drive loop, a thin shell around the step and the plan;
  `fsm.executor.drivelog`, its logger (action, kind, state and step key on every record).
* `fsm.executor.naps`: the drives asleep in a park, for a notify or a stop to wake.
* `fsm.executor.step`: one step run under its timeout, its result checked, its errors
  handed to the kind's handlers.
* `fsm.executor.claims`: taking, reading and releasing a claimed row.
* `fsm.executor.plan`: the pure rules of what a step's outcome writes (sequence, attempts,
  wake-up, lease, cause), tested without a database.
"""

from fsm.executor.controls import Controls
from fsm.executor.executor import (
    DEFAULT_REDELIVERY_WINDOW,
    DEFAULT_STEP_TIMEOUT,
    DOUBLE_DRIVE_ENV,
    Executor,
)
from fsm.executor.plan import RUN_NOW
from fsm.results import (
    Controlled,
    DriveResult,
    DriveStatus,
    ResumeReport,
    StartResult,
    StartStatus,
)

__all__ = [
    "DEFAULT_REDELIVERY_WINDOW",
    "DEFAULT_STEP_TIMEOUT",
    "DOUBLE_DRIVE_ENV",
    "RUN_NOW",
    "Controlled",
    "Controls",
    "DriveResult",
    "DriveStatus",
    "Executor",
    "ResumeReport",
    "StartResult",
    "StartStatus",
]
