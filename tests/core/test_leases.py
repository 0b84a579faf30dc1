"""Leases mean what they say (issue 10): renewal, certain death, fencing, one clock, kinds.

Each test is a fault that let two drivers run one step at once, or left an action undriven:
a worker renewing a lease its drive had left behind, a live worker of another container taken
for dead, a release that left the old owner's writes valid, a host clock running ahead, a
worker claiming kinds it cannot drive.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import attrs
import pytest
from actions import Gate, Held, one_step
from processes import dead_owner, spawn_child

import fsm
from fsm.executor import DriveResult, DriveStatus
from fsm.store import Claimed, ClaimMiss, new_owner
from fsm.store.leases import HOST
from fsm.worker import Worker

Alpha = one_step("alpha")
"""Team A's kind, version 1."""
AlphaV2 = one_step("alpha", version=2, upcasters={1: lambda payload: payload})
"""Team A's kind after a release: version 2 reads version 1 rows unchanged."""
Beta = one_step("beta")
"""Team B's kind."""
OpenStore = Callable[..., fsm.Store]


@pytest.fixture
def stores(store_url: str) -> Iterator[OpenStore]:
    """Opens stores with options on this test's database; closes them all at the end."""
    opened: list[fsm.Store] = []

    def make(url: str = store_url, **kwargs: Any) -> fsm.Store:
        s = fsm.open_store(url, **kwargs)
        opened.append(s)
        return s

    yield make
    for s in opened:
        s.close()


async def until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Let the event loop run until ``condition`` holds; the timeout only bounds a hung test."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def lease_expires(store: fsm.Store, action_id: str) -> float:
    p = store.db.param
    sql = f"SELECT lease_expires FROM fsm_action WHERE id = {p}"
    return float(store.db.execute_sql(sql, (action_id,)).fetchone()[0])


def dead_pid_here() -> int:
    """A pid no process has in this PID namespace right now."""
    for pid in range(30000, 1000, -1):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            continue
    raise AssertionError("no free pid found")


def rewrite(store: fsm.Store, claimed: Claimed, lease: float | None) -> None:
    """A checkpoint write under ``claimed``'s epoch; ``lease=None`` lets go of the lease."""
    was = claimed.bookkeeping
    store.write(
        claimed.id,
        claimed.epoch,
        state=claimed.state,
        payload=claimed.payload,
        seq=claimed.seq + 1,
        was=was,
        new=attrs.evolve(was, lease_expires=lease),
        acquired=(),
        released=(),
        entry=None,
        now=time.time(),
    )


def started(store: fsm.Store, *actions: fsm.Action[Any]) -> None:
    """Start ``actions``, each by an executor of its own version (as rolling deploys do)."""

    async def start_all() -> None:
        for action in actions:
            ex: fsm.Executor[Any] = fsm.Executor(store, None, kinds=[type(action)])
            await ex.start(action)

    asyncio.run(start_all())


# -- 1. a worker renews only the leases of the drives in flight ---------------------------


def test_a_lease_left_by_an_ended_drive_runs_out_while_its_worker_lives(
    stores: OpenStore,
) -> None:
    store = stores(lease_ttl=0.5)
    started(store, Alpha("orphan"))

    async def scenario() -> None:
        ex: fsm.Executor[Any] = fsm.Executor(store, None, kinds=[Alpha])
        # A drive of this worker ended in an error and its release failed: the row keeps a
        # lease in the worker's name that no drive of it will ever use.
        assert isinstance(store.claim("orphan", ex.owner, ex.clock()), Claimed)
        worker = Worker(ex, poll=0.05)
        running = asyncio.create_task(worker.run())
        await until(lambda: store.row("orphan") is None, "the orphaned action to be driven")
        worker.stop()
        await running

    asyncio.run(scenario())
    assert [t.outcome for t in store.transitions("orphan")] == ["done"]


@pytest.mark.slow
def test_the_lease_of_a_drive_in_flight_is_kept_alive(stores: OpenStore) -> None:
    ttl = 2.0
    store = stores(lease_ttl=ttl)
    other = stores(lease_ttl=ttl)
    started(store, Held("long"))

    async def scenario() -> None:
        gate = Gate()
        ex: fsm.Executor[Any] = fsm.Executor(store, gate, kinds=[Held])
        worker = Worker(ex, poll=0.05)
        running = asyncio.create_task(worker.run())
        await gate.entered.wait()
        assert ex.driving == frozenset({"long"})
        first = lease_expires(store, "long")
        await until(lambda: time.time() > first + ttl / 2, "the first lease time to pass")
        assert lease_expires(store, "long") > time.time()  # renewed meanwhile
        assert other.claim("long", new_owner(), time.time()) is ClaimMiss.BUSY
        gate.open.set()
        await until(lambda: store.row("long") is None, "the drive to finish")
        worker.stop()
        await running

    asyncio.run(scenario())


# -- 2. an owner is dead only when certainly so; every release moves the epoch ------------


@pytest.mark.parametrize("form", ["another namespace", "token without a namespace"])
def test_a_live_lease_of_another_pid_namespace_is_not_taken(stores: OpenStore, form: str) -> None:
    """Containers sharing a hostname: a pid dead here may be alive in the owner's namespace."""
    store = stores()
    started(store, Alpha("a"))
    pid = dead_pid_here()
    owner = f"{HOST}:{pid}:0badf00d" + (":0123456789ab" if form == "another namespace" else "")
    assert isinstance(store.claim("a", owner, time.time()), Claimed)

    assert store.release_dead_leases() == 0
    assert store.claim("a", new_owner(), time.time()) is ClaimMiss.BUSY
    ex: fsm.Executor[Any] = fsm.Executor(store, None, kinds=[Alpha])
    assert asyncio.run(ex.drive("a")).status is DriveStatus.BUSY
    row = store.row("a")
    assert row is not None and row.lease_owner == owner


def test_a_dead_owner_of_this_namespace_is_taken_over_at_once(stores: OpenStore) -> None:
    store = stores(lease_ttl=3600)
    started(store, Alpha("a"), Alpha("b"))
    owner = dead_owner()
    for action_id in ("a", "b"):
        assert isinstance(store.claim(action_id, owner, time.time()), Claimed)
    assert store.release_dead_leases() == 2
    assert len(store.claim_due(new_owner(), time.time(), 10)) == 2


def test_a_dead_owner_is_taken_over_by_a_single_drive(stores: OpenStore) -> None:
    store = stores(lease_ttl=3600)
    started(store, Alpha("a"))
    assert isinstance(store.claim("a", dead_owner(), time.time()), Claimed)
    ex: fsm.Executor[Any] = fsm.Executor(store, None, kinds=[Alpha])
    assert asyncio.run(ex.drive("a")).status is DriveStatus.DONE


UNSHARE_PIDS = ("unshare", "--pid", "--fork", "--mount-proc")


def _can_unshare_pids() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run([*UNSHARE_PIDS, "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _can_unshare_pids(), reason="needs unshare --pid (root)")
def test_a_worker_in_another_real_pid_namespace_keeps_its_lease(pg_url: str) -> None:
    """A real holder in a fresh PID namespace, with a pid no process has out here."""
    store = fsm.open_store(pg_url, lease_ttl=3600)
    started(store, Alpha("a"))
    pid = dead_pid_here()
    holder = spawn_child("pidns_child.py", pg_url, "a", str(pid), prefix=UNSHARE_PIDS, talk=True)
    assert holder.stdin is not None and holder.stdout is not None
    owner = holder.stdout.readline().strip()
    assert owner.startswith(f"{HOST}:{pid}:")  # the same host, a pid that is dead here
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)

    assert store.release_dead_leases() == 0
    assert store.claim("a", new_owner(), time.time()) is ClaimMiss.BUSY
    row = store.row("a")
    assert row is not None and row.lease_owner == owner

    holder.stdin.close()  # the holder lets go of its lease and exits
    assert holder.wait(timeout=60) == 0
    row = store.row("a")
    assert row is not None and row.lease_owner is None
    store.close()


@pytest.mark.parametrize("release", ["unclaim", "dead owner", "write"])
def test_every_release_refuses_the_old_epochs_writes(stores: OpenStore, release: str) -> None:
    store = stores()
    started(store, Alpha("a"))
    owner = dead_owner() if release == "dead owner" else new_owner()
    claimed = store.claim("a", owner, time.time())
    assert isinstance(claimed, Claimed)
    if release == "unclaim":
        store.unclaim("a", claimed.epoch)
    elif release == "dead owner":
        assert store.release_dead_leases() == 1
    else:
        rewrite(store, claimed, None)
    row = store.row("a")
    assert row is not None and row.lease_owner is None

    with pytest.raises(fsm.LeaseLost):  # released: the old owner's write is refused ...
        rewrite(store, claimed, claimed.lease_expires)
    assert isinstance(store.claim("a", new_owner(), time.time()), Claimed)
    with pytest.raises(fsm.LeaseLost):  # ... and still refused once another driver holds it
        rewrite(store, claimed, claimed.lease_expires)


# -- 3. lease times are read on the database's clock -------------------------------------


def test_a_host_clock_an_hour_ahead_cannot_take_a_live_lease(pg_url: str) -> None:
    normal = fsm.open_store(pg_url, lease_ttl=30)
    ahead = fsm.open_store(pg_url, lease_ttl=30, local_clock=lambda: time.time() + 3600)
    started(normal, Alpha("a"), Alpha("b"))
    holder: fsm.Executor[Any] = fsm.Executor(normal, None, kinds=[Alpha])
    assert isinstance(normal.claim("a", holder.owner, holder.clock()), Claimed)
    assert isinstance(normal.claim("b", holder.owner, holder.clock()), Claimed)

    assert abs(ahead.now() - normal.now()) < 60  # both read the database's clock
    fast: fsm.Executor[Any] = fsm.Executor(ahead, None, kinds=[Alpha])
    assert abs(fast.clock() - normal.now()) < 60  # the executor's default clock
    assert asyncio.run(fast.drive("a")).status is DriveStatus.BUSY
    assert ahead.claim_due(fast.owner, fast.clock(), 10) == []
    row = normal.row("a")
    assert row is not None and row.lease_owner == holder.owner

    # What the host's own clock would do (every store did so before): take the live lease.
    assert isinstance(ahead.claim("b", fast.owner, time.time() + 3600), Claimed)
    normal.close()
    ahead.close()


def test_the_database_clock_is_the_local_one_on_sqlite(stores: OpenStore) -> None:
    store = stores(local_clock=lambda: 1000.0)
    if store.is_sqlite:
        assert store.now() == 1000.0  # one host, one clock: nothing to correct
    else:
        assert abs(store.now() - time.time()) < 60


# -- 4. a worker claims only what it can drive -------------------------------------------


def collector(into: list[str]) -> Callable[[DriveResult], None]:
    def on_result(result: DriveResult) -> None:
        assert result.status is DriveStatus.DONE, result
        into.append(result.id)

    return on_result


def test_workers_of_different_kinds_each_drive_only_their_own(stores: OpenStore) -> None:
    setup = stores()
    alphas = [Alpha(f"a{i}") for i in range(6)]
    betas = [Beta(f"b{i}") for i in range(6)]
    started(setup, *alphas, *betas, AlphaV2("newer"))
    ran_a: list[str] = []
    ran_b: list[str] = []

    async def scenario() -> None:
        ex_a: fsm.Executor[Any] = fsm.Executor(stores(), None, kinds=[Alpha])
        ex_b: fsm.Executor[Any] = fsm.Executor(stores(), None, kinds=[Beta])
        workers = [
            Worker(ex_a, poll=0.05, on_result=collector(ran_a)),
            Worker(ex_b, poll=0.05, on_result=collector(ran_b)),
        ]
        running = [asyncio.create_task(w.run()) for w in workers]
        await until(lambda: len(ran_a) + len(ran_b) == 12, "both teams' actions to finish")
        for w in workers:
            w.stop()
        await asyncio.gather(*running)

    asyncio.run(scenario())
    assert sorted(ran_a) == sorted(a.id for a in alphas)
    assert sorted(ran_b) == sorted(b.id for b in betas)
    assert setup.quarantined() == []
    newer = setup.row("newer")  # written by version 2: waits for a worker that reads it
    assert newer is not None and newer.version == 2
    assert newer.lease_owner is None and newer.quarantine is None
    assert setup.transitions("newer") == []

    ran_v2: list[str] = []

    async def upgraded() -> None:
        ex: fsm.Executor[Any] = fsm.Executor(stores(), None, kinds=[AlphaV2])
        worker = Worker(ex, poll=0.05, on_result=collector(ran_v2))
        running = asyncio.create_task(worker.run())
        await until(lambda: ran_v2 == ["newer"], "the version 2 worker to drive its row")
        worker.stop()
        await running

    asyncio.run(upgraded())
    assert setup.rows() == []


@pytest.mark.parametrize(
    ("loads", "row"),
    [([Beta], Alpha("theirs")), ([Alpha], AlphaV2("newer"))],
    ids=["another kind", "a newer version"],
)
def test_a_worker_whose_only_due_rows_are_foreign_does_not_spin(
    stores: OpenStore, loads: list[type[fsm.Action[Any]]], row: fsm.Action[Any]
) -> None:
    store = stores()
    started(store, row)
    claims = 0
    claim_due = store.claim_due_soon

    def counting(*args: Any, **kwargs: Any) -> Awaitable[list[Claimed]]:
        nonlocal claims
        claims += 1
        return claim_due(*args, **kwargs)

    store.claim_due_soon = counting  # type: ignore[method-assign]

    async def scenario() -> None:
        ex: fsm.Executor[Any] = fsm.Executor(store, None, kinds=loads)
        worker = Worker(ex, poll=3600)
        running = asyncio.create_task(worker.run())
        for _ in range(2000):  # a fixed number of event-loop turns, not a time
            await asyncio.sleep(0)
        worker.stop()
        await running

    asyncio.run(scenario())
    # one look, then asleep until the poll interval or a notification (on PostgreSQL the
    # listener wakes the worker once more when its connection is up, for missed notifies)
    assert claims <= (1 if store.is_sqlite else 2)
    assert store.quarantined() == []
    left = store.row(row.id)
    assert left is not None and left.lease_owner is None and left.quarantine is None


def test_a_worker_backs_off_from_due_rows_another_worker_is_claiming(pg_url: str) -> None:
    """A due row locked by another session (a claim in flight: ``SKIP LOCKED`` passes it by)
    is due for the idle poll but not claimable: the worker must look again with a backoff,
    not at once in a loop of round trips for as long as the lock lasts."""
    store, locker = fsm.open_store(pg_url), fsm.open_store(pg_url)
    started(locker, Alpha("a"))
    claims = 0
    claim_due = store.claim_due_soon

    def counting(*args: Any, **kwargs: Any) -> Awaitable[list[Claimed]]:
        nonlocal claims
        claims += 1
        return claim_due(*args, **kwargs)

    store.claim_due_soon = counting  # type: ignore[method-assign]
    done: list[str] = []

    async def scenario() -> None:
        ex: fsm.Executor[Any] = fsm.Executor(store, None, kinds=[Alpha])
        worker = Worker(ex, poll=3600, on_result=lambda r: done.append(r.id))
        locker.db.execute_sql("BEGIN")
        locker.db.execute_sql("SELECT id FROM fsm_action WHERE id = 'a' FOR UPDATE")
        running = asyncio.create_task(worker.run())
        # Half a second of the lock: a spinning worker claims hundreds of times in it (a
        # slower machine: fewer), one backing off from 5 ms about seven times.
        await asyncio.sleep(0.5)
        assert 1 <= claims <= 20, claims
        locker.db.execute_sql("ROLLBACK")
        await until(lambda: done == ["a"], "the row, once its lock is gone")
        worker.stop()
        await asyncio.wait_for(running, 30)  # the bound of a hung test, not a speed

    try:
        asyncio.run(scenario())
    finally:
        store.close()
        locker.close()


def test_a_session_stopped_inside_a_transaction_frees_its_rows_after_a_lease(pg_url: str) -> None:
    """A worker frozen mid-batch (SIGSTOP) must not hold its rows for ever: the server ends a
    session idle in a transaction for a lease's time, and another worker claims the row."""
    frozen = fsm.open_store(pg_url, lease_ttl=1)
    other = fsm.open_store(pg_url)
    try:
        assert frozen.db.execute_sql("SHOW idle_in_transaction_session_timeout").fetchone() == (
            "1s",
        )
        started(frozen, Alpha("a"))
        frozen.db.execute_sql("BEGIN")
        frozen.db.execute_sql("SELECT id FROM fsm_action WHERE id = 'a' FOR UPDATE")
        assert other.claim_due(new_owner(), time.time(), 16) == []  # locked: skipped
        deadline = time.monotonic() + 60  # a bound for a slow machine, not a timing claim
        claimed: list[Claimed] = []
        while not claimed and time.monotonic() < deadline:
            time.sleep(0.2)
            claimed = other.claim_due(new_owner(), time.time(), 16)
        assert [c.id for c in claimed] == ["a"]
    finally:
        other.close()
        frozen.db.close()


@pytest.mark.parametrize("event", ["notify", "stop"])
def test_a_wake_up_that_comes_while_the_worker_claims_is_not_lost(
    stores: OpenStore, event: str
) -> None:
    """The worker awaits its claim; a notification (given by hand here, as the listener
    gives it) or a stop that arrives meanwhile must cut its next sleep short: it sleeps an
    hour between polls."""
    store, other = stores(), stores()
    done: list[str] = []
    claim_due = store.claim_due_soon
    workers: list[Worker[Any]] = []

    async def claim_and_meanwhile(*args: Any, **kwargs: Any) -> list[Claimed]:
        claimed = await claim_due(*args, **kwargs)
        if len(workers) == 1:  # the first claim, which found nothing
            worker = workers.pop()
            if event == "stop":
                worker.stop()
            else:
                await asyncio.to_thread(started, other, Alpha("late"))
                worker.wake()
        return claimed

    store.claim_due_soon = claim_and_meanwhile  # type: ignore[method-assign]

    async def scenario() -> None:
        ex: fsm.Executor[Any] = fsm.Executor(store, None, kinds=[Alpha])
        worker = Worker(ex, poll=3600, on_result=lambda r: done.append(r.id))
        workers.append(worker)
        running = asyncio.create_task(worker.run())
        if event == "notify":
            await until(lambda: done == ["late"], "the action started during the claim")
            worker.stop()
        await asyncio.wait_for(running, 30)  # the bound of a hung test, not a speed

    asyncio.run(scenario())


@pytest.mark.parametrize("event", ["notify", "stop"])
def test_a_wake_up_that_comes_while_the_worker_reads_its_next_wake_is_not_lost(
    stores: OpenStore, event: str
) -> None:
    """The idle worker's poll (`Store.next_wake`) runs off the event loop now, so the loop
    goes on while it is in flight: a notification or a stop that arrives meanwhile (here
    from the poll itself, handed to the loop as the listener hands it) must cut the hour's
    sleep that follows short."""
    store, other = stores(), stores()
    done: list[str] = []
    next_wake = store.next_wake
    workers: list[Worker[Any]] = []
    loop: list[asyncio.AbstractEventLoop] = []

    def poll_and_meanwhile(*args: Any, **kwargs: Any) -> float | None:
        found = next_wake(*args, **kwargs)
        if workers:  # the first poll, which found nothing
            worker = workers.pop()
            if event == "notify":  # a thread of its own: this may be the loop's thread
                starting = threading.Thread(target=started, args=(other, Alpha("late")))
                starting.start()
                starting.join()
            loop[0].call_soon_threadsafe(worker.stop if event == "stop" else worker.wake)
        return found

    store.next_wake = poll_and_meanwhile  # type: ignore[method-assign]

    async def scenario() -> None:
        loop.append(asyncio.get_running_loop())
        ex: fsm.Executor[Any] = fsm.Executor(store, None, kinds=[Alpha])
        worker = Worker(ex, poll=3600, on_result=lambda r: done.append(r.id))
        workers.append(worker)
        running = asyncio.create_task(worker.run())
        if event == "notify":
            await until(lambda: done == ["late"], "the action started during the poll")
            worker.stop()
        await asyncio.wait_for(running, 30)  # the bound of a hung test, not a speed

    asyncio.run(scenario())
    assert workers == []  # the worker did poll
