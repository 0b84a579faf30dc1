"""Resources: taken and released with the checkpoint, released with the row, typed conflicts."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from actions import Script

import fsm
from fsm import DriveStatus


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def executor(store: fsm.Store, services: dict[Any, Any]) -> fsm.Executor[Any]:
    return fsm.Executor(store, services, kinds=[Script])


def test_acquire_is_written_with_the_checkpoint(store: fsm.Store) -> None:
    def take(a: Script, ctx: fsm.StepContext[Any]) -> Any:
        ctx.acquire("vtxo.1", "vtxo.2")
        assert ctx.holds("vtxo.1")
        return fsm.Park(a)

    ex = executor(store, {("a", 1): take})
    run(ex.drive(Script("a")))
    assert store.all_resources() == {"vtxo.1": "a", "vtxo.2": "a"}


def test_acquire_reads_one_holder_per_new_name_and_nothing_else(store: fsm.Store) -> None:
    """Each read is a round trip on PostgreSQL, on the event loop's thread: acquiring reads
    the holder of each name not known to be held, never the whole list of what the action
    holds (unless the step asks for it)."""
    statements: list[int] = []
    store.hooks = fsm.store.StoreHooks(statement=lambda _: statements.append(1))
    reads: list[int] = []

    def counted(acquire: Any) -> int:
        before = len(statements)
        acquire()
        return len(statements) - before

    def first(a: Script, ctx: fsm.StepContext[Any]) -> None:
        reads.append(counted(lambda: ctx.acquire("r.1", "r.2", "r.1")))
        reads.append(counted(lambda: ctx.acquire("r.2")))  # taken in this step: no read

    def second(a: Script, ctx: fsm.StepContext[Any]) -> Any:
        reads.append(counted(lambda: ctx.acquire("r.1", "r.3")))  # r.1 held since step 1
        assert ctx.resources == frozenset({"r.1", "r.2", "r.3"})
        ctx.release("r.2", "r.3")
        ctx.acquire("r.2")  # given back and taken again: no change to write
        assert ctx.resource_changes() == ((), ())  # r.3 taken and given back, r.2 kept
        return fsm.Park(a)

    ex = executor(store, {("a", 1): first, ("a", 2): second})
    run(ex.drive(Script("a")))
    assert reads == [2, 0, 2]
    assert store.all_resources() == {"r.1": "a", "r.2": "a"}


def test_release_then_done_leaves_nothing(store: fsm.Store) -> None:
    def take(a: Script, ctx: fsm.StepContext[Any]) -> None:
        ctx.acquire("r.keep", "r.drop")

    def drop(a: Script, ctx: fsm.StepContext[Any]) -> Any:
        ctx.release("r.drop", "never-held")
        assert ctx.resources == frozenset({"r.keep"})
        return fsm.Park(a)

    ex = executor(store, {("a", 1): take, ("a", 2): drop})
    run(ex.drive(Script("a")))
    assert store.all_resources() == {"r.keep": "a"}
    ex2 = executor(store, {})
    assert run(ex2.drive("a")).status is DriveStatus.DONE
    assert store.all_resources() == {}


def test_failed_releases_everything_in_the_same_transaction(store: fsm.Store) -> None:
    ex = executor(store, {("a", 2): lambda a, c: fsm.Failed("no route")})
    run(ex.start(Script("a"), resources=["x.1", "x.2"]))
    result = run(ex.drive("a"))
    assert result.status is DriveStatus.FAILED
    assert store.all_resources() == {} and store.row("a") is None


def test_conflict_is_typed_at_acquire_and_routed_to_retry(store: fsm.Store) -> None:
    seen: list[BaseException] = []

    def take(a: Script, ctx: fsm.StepContext[Any]) -> None:
        ctx.acquire("coin.7")

    def on_retry(a: Script, ctx: fsm.StepContext[Any], attempts: int, error: BaseException) -> Any:
        seen.append(error)
        return fsm.Failed(error)

    ex = executor(store, {("b", 0): take, ("b", "retry"): on_retry})
    run(ex.start(Script("a"), resources=["coin.7"]))
    result = run(ex.drive(Script("b")))
    assert result.status is DriveStatus.FAILED
    (error,) = seen
    assert isinstance(error, fsm.ResourceConflict)
    assert (error.resource, error.holder, error.wanted_by) == ("coin.7", "a", "b")
    assert store.all_resources() == {"coin.7": "a"}


def test_start_with_a_taken_resource_creates_nothing(store: fsm.Store) -> None:
    ex = executor(store, {})
    run(ex.start(Script("a"), resources=["coin.1"]))
    with pytest.raises(fsm.ResourceConflict, match="held by action 'a'"):
        run(ex.start(Script("b"), resources=["coin.2", "coin.1"]))
    assert store.row("b") is None
    assert store.all_resources() == {"coin.1": "a"}


def test_conflict_at_commit_writes_nothing(store: fsm.Store, open_store: Any) -> None:
    """Another action takes the resource after the step's check: the step is not persisted."""

    def take_late(a: Script, ctx: fsm.StepContext[Any]) -> None:
        ctx.acquire("coin.9")
        open_store().insert("z", "script", "s0", 1, '{"label": "z"}', ["coin.9"], 0.0)

    ex = executor(store, {("a", 1): take_late})
    result = asyncio.run(ex.drive(Script("a")))
    assert result.status is DriveStatus.ERROR
    assert isinstance(result.error, fsm.ResourceConflict)
    row = store.row("a")
    assert row is not None and row.state == "s1" and row.lease_owner is None
    assert store.all_resources() == {"coin.9": "z"}
