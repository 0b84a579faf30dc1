"""Workers: drive due actions from a shared database until told to stop.

`Worker` is the loop a program embeds; `run_worker` is the ``fsm worker`` process around it
(logging, signals, exit code); `fsm.worker.services` decides the services its steps get.
"""

from fsm.worker.loop import Worker, WorkerStats
from fsm.worker.process import run_worker

__all__ = ["Worker", "WorkerStats", "run_worker"]
