"""A synchronous face of the executor, for scripts, the CLI and plain test code.

Everything in fsm is asyncio-native; this runs the same coroutines on one private event loop
so a caller without one can write ``SyncExecutor(store, kinds=[Pay]).drive(action)``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, Generic

from fsm.executor import Controls, DriveResult, Executor, ResumeReport, StartResult
from fsm.protocol import Action, DriveMode, S
from fsm.results import SendResult
from fsm.store import ActionReport, Store


class SyncExecutor(Generic[S]):
    """`Executor` with blocking methods; close it (or use ``with``) to end its event loop."""

    def __init__(self, store: Store, services: S = None, **kwargs: Any) -> None:  # type: ignore[assignment]
        self.executor: Executor[S] = Executor(store, services, **kwargs)
        self._runner = asyncio.Runner()

    def start(
        self, action: Action[S], *, resources: Sequence[str] = (), again: bool = False
    ) -> StartResult:
        return self._runner.run(self.executor.start(action, resources=resources, again=again))

    def drive(
        self, target: str | Action[S], mode: DriveMode = DriveMode.UNTIL_PARK_OR_DONE
    ) -> DriveResult:
        return self._runner.run(self.executor.drive(target, mode))

    def notify(self, action_id: str, mode: DriveMode = DriveMode.UNTIL_PARK_OR_DONE) -> DriveResult:
        return self._runner.run(self.executor.notify(action_id, mode))

    def send(self, action_id: str, event: object, *, key: str) -> SendResult:
        return self._runner.run(self.executor.send(action_id, event, key=key))

    def update(self, action_id: str, change: Callable[[Action[S]], Action[S]]) -> Action[S]:
        return self._runner.run(self.executor.update(action_id, change))

    def delete(self, action_id: str) -> bool:
        return self._runner.run(self.executor.delete(action_id))

    def inspect(self, action_id: str, *, history: int = 1000) -> ActionReport | None:
        return self._runner.run(self.executor.inspect(action_id, history=history))

    @property
    def controls(self) -> Controls:
        """The operator's controls (`fsm.Controls`; already synchronous)."""
        return self.executor.controls

    def resume_all(
        self,
        mode: DriveMode = DriveMode.UNTIL_PARK_OR_DONE,
        *,
        concurrency: int = 1,
        keep_results: bool = False,
    ) -> ResumeReport:
        return self._runner.run(
            self.executor.resume_all(mode, concurrency=concurrency, keep_results=keep_results)
        )

    def run_due(
        self,
        mode: DriveMode = DriveMode.UNTIL_PARK_OR_DONE,
        *,
        concurrency: int = 1,
        keep_results: bool = False,
    ) -> ResumeReport:
        return self._runner.run(
            self.executor.run_due(mode, concurrency=concurrency, keep_results=keep_results)
        )

    def close(self) -> None:
        self._runner.close()

    def __enter__(self) -> SyncExecutor[S]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
