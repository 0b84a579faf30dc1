"""Tools to prove an fsm program loses nothing: crash enumeration, soaks, invariants.

Use them in your own pytest suite (see docs/testing-your-kinds.md):

* `check_invariants(store, kinds, effects=...)`: the database-level invariants;
* `Scenario` + `enumerate_crashes` / `soak`: SIGKILL a real driver process at every write
  point, or at random, and check after each run;
* double-drive mode: ``fsm.Executor(..., double_drive=True)`` or ``FSM_DOUBLE_DRIVE=1``;
* `step_context` and `run_twice` (`fsm.testing.steps`): one step in a unit test, and one
  step run twice from the same state;
* database faults: ``fsm.Store(..., hooks=DatabaseFaults(rate, seed).hooks())`` or
  ``FSM_DB_FAULTS=RATE:SEED``;
* ``fsm.Store(..., hooks=kill_after_commits(n))``: a child process that dies right after
  its n-th committed step.
"""

from fsm.store.hooks import NO_HOOKS, WRITE_POINTS
from fsm.testing.crash import CrashReport, Scenario, enumerate_crashes, soak
from fsm.testing.faults import DatabaseFaults, all_points, kill_after_commits
from fsm.testing.invariants import check_invariants
from fsm.testing.steps import TwoRuns, outcome_of, run_twice, step_context

__all__ = [
    "NO_HOOKS",
    "WRITE_POINTS",
    "CrashReport",
    "DatabaseFaults",
    "Scenario",
    "TwoRuns",
    "all_points",
    "check_invariants",
    "enumerate_crashes",
    "kill_after_commits",
    "outcome_of",
    "run_twice",
    "soak",
    "step_context",
]
