"""PostgreSQL notifications wake the workers of their own schema, and only those.

NOTIFY channels belong to a whole database: with one fixed channel, every start in one fsm
schema woke the workers of every other schema of the database, which then claimed and
polled for nothing (and made a test that counts a worker's claims fail whenever another
test suite ran on the same server).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from actions import one_step
from needs import PG_URL
from psycopg import sql

import fsm
from fsm.store import Claimed
from fsm.store.channel import MAX_BYTES, channel_for
from fsm.worker import Worker
from fsm.worker.listener import Listener

Alpha = one_step("alpha")

HANG = 30.0
"""Seconds after which a wait is a hung test (never a measure of speed)."""


@pytest.fixture
def two_schemas(pg_url: str, other_pg_url: str) -> Iterator[tuple[fsm.Store, fsm.Store]]:
    a, b = fsm.open_store(pg_url), fsm.open_store(other_pg_url)
    yield a, b
    a.close()
    b.close()


def schema_of(url: str) -> str:
    return url.rsplit("%3D", 1)[1]


def start(store: fsm.Store, action_id: str) -> None:
    ex: fsm.Executor[Any] = fsm.Executor(store, None, kinds=[Alpha])
    assert asyncio.run(ex.start(Alpha(action_id))).status is fsm.StartStatus.STARTED


def test_each_schema_notifies_on_a_channel_of_its_own(
    two_schemas: tuple[fsm.Store, fsm.Store], pg_url: str, other_pg_url: str
) -> None:
    a, b = two_schemas
    assert a.due_channel == channel_for(schema_of(pg_url))
    assert b.due_channel == channel_for(schema_of(other_pg_url))
    assert a.due_channel != b.due_channel
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        for channel in (a.due_channel, b.due_channel):
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(str(channel))))
        start(b, "in-b")
        start(a, "in-a")
        assert b.mark_due("in-b", b.now())
        # delivered in commit order: each on the channel of the schema that wrote it
        heard = [n.channel for n in conn.notifies(timeout=HANG, stop_after=3)]
    assert heard == [b.due_channel, a.due_channel, b.due_channel]


def test_a_channel_is_a_name_postgresql_accepts_whatever_the_schema() -> None:
    short = channel_for("team_a")
    assert short == "fsm_due.team_a"
    long_a, long_b = channel_for("a" * 63), channel_for("a" * 62 + "b")
    assert long_a != long_b
    assert all(len(c.encode()) <= MAX_BYTES for c in (short, long_a, long_b))
    assert channel_for("é" * 30) != channel_for("é" * 31)  # bytes, not characters, count


@pytest.mark.parametrize("schema", ['Odd "schema"; DROP', "x" * 63], ids=["quotes", "long"])
def test_the_listener_hears_its_channel_whatever_its_name(schema: str) -> None:
    channel = channel_for(schema)
    woken = threading.Event()

    async def scenario() -> None:
        def connect() -> Any:
            return psycopg.connect(PG_URL, autocommit=True)

        listener = Listener(woken.set, connect, channel)
        try:
            await wait_for(woken.is_set, "the listener's first wake-up (its LISTEN is in)")
            woken.clear()
            with psycopg.connect(PG_URL, autocommit=True) as conn:
                conn.execute("SELECT pg_notify(%s, '')", (channel,))
            await wait_for(woken.is_set, "the notification")
        finally:
            listener.close()

    asyncio.run(scenario())


def test_a_worker_is_woken_by_a_start_in_its_own_schema(
    two_schemas: tuple[fsm.Store, fsm.Store],
) -> None:
    a, b = two_schemas
    claims = counted_claims(a)
    done: list[str] = []

    async def scenario() -> None:
        ex: fsm.Executor[Any] = fsm.Executor(a, None, kinds=[Alpha])
        worker = Worker(ex, poll=3600, on_result=lambda r: done.append(r.id))
        running = asyncio.create_task(worker.run())
        # its first look, then the listener's wake-up once its LISTEN is in
        await wait_for(lambda: len(claims) >= 2, "the worker's first two looks")
        await asyncio.to_thread(start, b, "theirs")
        await asyncio.to_thread(start, a, "ours")
        await wait_for(lambda: done == ["ours"], "the worker to drive its own action")
        worker.stop()
        await running

    asyncio.run(scenario())
    assert [r.id for r in b.rows()] == ["theirs"]  # another schema: never seen


def counted_claims(store: fsm.Store) -> list[int]:
    """Records each of ``store``'s batch claims (how many rows it took)."""
    claims: list[int] = []
    claim_due = store.claim_due_soon

    async def counting(*args: Any, **kwargs: Any) -> list[Claimed]:
        claimed = await claim_due(*args, **kwargs)
        claims.append(len(claimed))
        return claimed

    store.claim_due_soon = counting  # type: ignore[method-assign]
    return claims


async def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Let the event loop run until ``condition`` holds; the deadline only bounds a hang."""
    deadline = time.monotonic() + HANG
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)
