"""What an operator reads, on SQLite and PostgreSQL: kept outcomes with their counts and causes,
one action's report (`Store.inspect`, `Executor.inspect`), the filtered keyset listing, an
action's history, and pruning (by hand and by a worker's retention)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from actions import Script
from processes import died, run_child

import fsm
from fsm.store import ActionStatus, Claimed, LogEntry
from fsm.worker import Worker
from fsm.worker.retention import check_retention

T0 = 1_000_000.0


class Clock:
    """A test clock; its sleep moves it on (a park's backoff passes at once)."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def run(
    store: fsm.Store, clock: Clock
) -> Iterator[Callable[[dict[Any, Any]], fsm.SyncExecutor[Any]]]:
    made: list[fsm.SyncExecutor[Any]] = []

    def make(services: dict[Any, Any]) -> fsm.SyncExecutor[Any]:
        ex: fsm.SyncExecutor[Any] = fsm.SyncExecutor(
            store, services, kinds=[Script], clock=clock, sleep=clock.sleep
        )
        made.append(ex)
        return ex

    yield make
    for ex in made:
        ex.close()


def fails_once(error: BaseException) -> Callable[[Script, Any], Any]:
    raised: list[bool] = []

    def behaviour(s: Script, ctx: Any) -> Any:
        if not raised:
            raised.append(True)
            raise error
        return None

    return behaviour


def chained() -> ValueError:
    try:
        try:
            raise KeyError("card 42")
        except KeyError as inner:
            raise ConnectionError("bank unreachable") from inner
    except ConnectionError:
        try:
            raise ValueError("payment declined")  # raised while handling: its context
        except ValueError as outer:
            return outer


# -- outcomes ---------------------------------------------------------------------------------


def test_an_outcome_keeps_its_step_and_retry_counts(store: fsm.Store, run: Any) -> None:
    ex = run({("c", 1): fails_once(ConnectionError("reset"))})
    ex.start(Script("c", last=2))
    result = ex.drive("c", fsm.DriveMode.UNTIL_DONE)
    assert result.status is fsm.DriveStatus.DONE
    kept = store.outcome("c")
    assert kept is not None
    # s0 -> s1, s1 retried once, s1 -> s2, s2 done: four steps of the kind's code, one retry
    assert (kept.status, kept.steps, kept.retries) == ("done", 4, 1)
    vias = [t.via for t in store.transitions("c")]
    assert vias == ["step", "retry", "step", "step"]


def test_an_update_from_outside_is_logged_but_not_counted(store: fsm.Store, run: Any) -> None:
    ex = run({("u", 1): lambda s, ctx: fsm.Park(s)})
    ex.start(Script("u", last=1))
    ex.drive("u")  # s0 -> s1, then s1 parks without a wake-up (two steps)
    ex.drive("u")
    ex.update("u", lambda s: s)
    report = store.inspect("u")
    assert report is not None and (report.steps, report.retries) == (3, 0)
    assert [t.via for t in report.history] == ["step", "step", "step", "update"]


def test_a_failure_keeps_its_chain_of_causes(store: fsm.Store, run: Any) -> None:
    ex = run({("f", 0): lambda s, ctx: fsm.Failed(chained())})
    ex.start(Script("f"))
    assert ex.drive("f").status is fsm.DriveStatus.FAILED
    report = store.inspect("f")
    assert report is not None and report.status is ActionStatus.FAILED
    assert report.error_chain == (
        "ValueError: payment declined",
        "while handling: ConnectionError: bank unreachable",
        "caused by: KeyError: 'card 42'",
    )
    assert report.outcome is not None and report.outcome.error == report.error
    [end] = [t for t in store.transitions("f") if t.to_state is None]
    assert end.error == report.error  # the log's end and the outcome say the same


def test_a_rejection_route_keeps_the_rejections_chain_as_its_cause(
    store: fsm.Store, run: Any
) -> None:
    def reject(s: Script, ctx: Any) -> Any:
        try:
            raise TimeoutError("no answer")
        except TimeoutError as exc:
            raise fsm.Rejected("refused by the bank") from exc

    ex = run({("r", 0): reject, ("r", "rejection"): lambda s, ctx, e: fsm.Failed("refunded")})
    ex.start(Script("r"))
    assert ex.drive("r").status is fsm.DriveStatus.FAILED
    kept = store.outcome("r")
    assert kept is not None
    assert kept.cause == "Rejected: refused by the bank\ncaused by: TimeoutError: no answer"
    assert kept.error == "refunded (cause: Rejected: refused by the bank)"


@pytest.mark.slow
@pytest.mark.parametrize("point", ["finish.before", "finish.after"])
def test_a_crash_never_splits_an_end_from_its_history(tmp_path: Path, point: str) -> None:
    """Killed at the end's write point, the database holds the action either live (nothing of
    the end written) or ended with its outcome, counts and last log row, never a part."""
    from actions import Transfer, start_transfers

    db, ledger = tmp_path / "a.sqlite", tmp_path / "ledger.sqlite"
    store = fsm.Store.sqlite(db)
    start_transfers(store, ["t1"])
    store.close()
    crashed = run_child("drive_child.py", db, ledger, env={"FSM_CRASH": f"{point}:1"})
    assert died(crashed), crashed.stderr
    store = fsm.Store.sqlite(db)
    try:
        report = store.inspect("t1")
        assert report is not None
        ends = [t for t in report.history if t.to_state is None]
        if point == "finish.before":
            assert report.live and report.outcome is None and ends == []
        else:
            assert report.status is ActionStatus.DONE and store.row("t1") is None
            assert len(ends) == 1 and ends[0].at == report.ended_at
            coded = [t for t in report.history if t.via in ("step", "retry", "rejection")]
            assert report.steps == len(coded) and report.steps > 0
        assert fsm.testing.check_invariants(store, [Transfer]) == []
    finally:
        store.close()


# -- inspect ----------------------------------------------------------------------------------


def test_inspect_says_where_a_live_action_stands(store: fsm.Store) -> None:
    store.insert("a", "k", "s0", 1, '{"n": 1}', ["coin-1", "coin-2"], T0)
    report = store.inspect("a")
    assert report is not None
    assert (report.status, report.state, report.payload) == (ActionStatus.DUE, "s0", '{"n": 1}')
    assert report.resources == ("coin-1", "coin-2") and report.live
    claimed = store.claim("a", "worker-1", store.now())
    assert isinstance(claimed, Claimed)
    report = store.inspect("a")
    assert report is not None and report.status is ActionStatus.RUNNING
    assert report.lease_owner == "worker-1" and report.lease_expires == claimed.lease_expires
    later = fsm.store.Bookkeeping(1, 2, "ConnectionError: reset", store.now() + 3600, None)
    store.write(
        "a",
        claimed.epoch,
        state="s1",
        payload='{"n": 2}',
        seq=1,
        was=claimed.bookkeeping,
        new=later,
        acquired=(),
        released=(),
        entry=LogEntry("k", 0, "s0", "s1", "park", "retry", 2, "ConnectionError: reset", 0.1),
        now=store.now(),
    )
    report = store.inspect("a")
    assert report is not None
    assert (report.status, report.wake_at, report.attempts) == (
        ActionStatus.PARKED,
        later.wake_at,
        2,
    )
    assert (report.error, report.steps, report.retries) == ("ConnectionError: reset", 1, 1)
    assert [(t.from_state, t.to_state, t.via) for t in report.history] == [("s0", "s1", "retry")]
    store.quarantine("a", "payload does not structure")
    report = store.inspect("a")
    assert report is not None and report.status is ActionStatus.QUARANTINED
    assert report.quarantine == "payload does not structure"
    assert store.inspect("nobody") is None


def test_inspect_of_broken_and_waiting_actions(store: fsm.Store) -> None:
    for action_id in ("b", "w"):
        store.insert(action_id, "k", "s0", 1, "{}", [], T0)
        claimed = store.claim(action_id, "me", store.now())
        assert isinstance(claimed, Claimed)
        store.record_failure(
            action_id,
            claimed.epoch,
            attempts=0,
            error="broken: TypeError: bad" if action_id == "b" else "waits",
            wake_at=None,
            broken=action_id == "b",
            now=store.now(),
        )
    broken, waiting = store.inspect("b"), store.inspect("w")
    assert broken is not None and broken.status is ActionStatus.BROKEN
    assert broken.error == "broken: TypeError: bad" and broken.retries == 1
    assert waiting is not None and waiting.status is ActionStatus.WAITING


def test_inspect_of_an_ended_id_shows_the_newest_incarnation_and_the_earlier_ones(
    store: fsm.Store, run: Any, clock: Clock
) -> None:
    ex = run({})
    ex.start(Script("x", last=1))
    ex.drive("x")
    clock.now += 10
    ex.start(Script("x", last=0), again=True)
    clock.now += 10
    ex.drive("x")
    report = store.inspect("x")
    assert report is not None and report.status is ActionStatus.DONE
    assert report.outcome is not None and report.steps == 1
    assert [t.from_state for t in report.history] == ["s0"]  # this incarnation's steps only
    assert len(report.earlier) == 1 and report.earlier[0].steps == 2
    assert report.incarnation != report.earlier[0].incarnation
    first = report.earlier[0]
    steps = store.history("x", since=first.started_at, until=first.finished_at)
    assert [(t.from_state, t.to_state) for t in steps] == [("s0", "s1"), ("s1", None)]


def test_executor_inspect_decodes_the_checkpoint(store: fsm.Store, run: Any) -> None:
    ex = run({})
    ex.start(Script("d", last=3))
    ex.drive("d", fsm.DriveMode.UNTIL_PARK_OR_DONE)
    store.insert("other", "unknown_kind", "s0", 1, "{}", [], T0)
    ex.start(Script("e", last=3))
    report = ex.inspect("e")
    assert report is not None and report.action == Script("e", last=3)
    assert report.decode_error is None
    foreign = ex.inspect("other")
    assert foreign is not None and foreign.action is None
    assert foreign.decode_error is not None and "not registered here" in foreign.decode_error
    done = ex.inspect("d")
    assert done is not None and done.status is ActionStatus.DONE and done.action is None


def test_history_is_truncated_to_the_newest_steps(store: fsm.Store, run: Any) -> None:
    ex = run({})
    ex.start(Script("h", last=6))
    ex.drive("h")
    report = store.inspect("h", history=3)
    assert report is not None and report.history_truncated
    assert [t.from_state for t in report.history] == ["s4", "s5", "s6"]
    first = store.history("h", limit=2)
    rest = store.history("h", after=first[-1].id, limit=100)
    assert [t.seq for t in first + rest] == list(range(7))


# -- listing ----------------------------------------------------------------------------------


def make_mix(store: fsm.Store, run: Any, clock: Clock) -> None:
    """Two live actions (one parked by a retry), one done, one failed, one quarantined."""
    ex = run(
        {
            ("live-retry", 1): fails_once(ConnectionError("reset by peer")),
            ("ended-failed", 0): lambda s, ctx: fsm.Failed("card declined"),
        }
    )
    for name in ("live-due", "live-retry", "ended-done", "ended-failed", "set-aside"):
        clock.now += 1
        ex.start(Script(name, last=2))
    clock.now += 1
    ex.drive("live-retry")  # s0 -> s1 -> s2? no: s1 fails once and parks with a backoff
    ex.drive("ended-done")
    ex.drive("ended-failed")
    store.quarantine("set-aside", "kind 'script' v1: bad payload")


def ids(page: list[fsm.ActionSummary]) -> list[str]:
    return [a.id for a in page]


def test_the_listing_is_newest_first_and_filtered(store: fsm.Store, run: Any, clock: Clock) -> None:
    make_mix(store, run, clock)
    now = clock.now
    every = store.list_actions(now=now)
    # ended ones by their end (the newest), live ones by their start
    assert ids(every) == ["ended-failed", "ended-done", "set-aside", "live-retry", "live-due"]
    by_id = {a.id: a for a in every}
    assert by_id["live-retry"].status is ActionStatus.PARKED
    assert by_id["live-retry"].error == "ConnectionError: reset by peer"
    assert by_id["live-due"].status is ActionStatus.DUE
    assert by_id["ended-done"].steps == 3 and by_id["ended-done"].ended_at is not None

    def listed(**where: Any) -> list[str]:
        return ids(store.list_actions(fsm.ActionFilter(**where), now=now))

    assert listed(statuses=("live",)) == ["set-aside", "live-retry", "live-due"]
    assert listed(statuses=("ended",)) == ["ended-failed", "ended-done"]
    assert listed(statuses=("failed", "quarantined")) == ["ended-failed", "set-aside"]
    assert listed(statuses=("parked",)) == ["live-retry"]
    assert listed(statuses=("due",)) == ["live-due"]
    assert listed(statuses=("running", "waiting", "broken", "stopped")) == []
    assert listed(error="RESET") == ["live-retry"]  # ASCII case ignored
    assert listed(error="declined") == ["ended-failed"]
    assert listed(error="bad payload") == ["set-aside"]
    assert listed(state="s0") == ["ended-failed", "set-aside", "live-due"]  # failed in s0
    assert listed(kind="other") == []
    started_retry = by_id["live-retry"].started_at
    assert listed(since=started_retry) == ["ended-failed", "ended-done", "set-aside", "live-retry"]
    with pytest.raises(ValueError, match="unknown status 'nope'"):
        fsm.ActionFilter(statuses=("nope",))


def test_pages_continue_after_a_cursor(store: fsm.Store, run: Any, clock: Clock) -> None:
    make_mix(store, run, clock)
    whole = ids(store.list_actions(now=clock.now))
    first = store.list_actions(limit=2, now=clock.now)
    second = store.list_actions(after=first[-1].cursor, limit=2, now=clock.now)
    third = store.list_actions(after=second[-1].cursor.token, limit=2, now=clock.now)
    assert ids(first) + ids(second) + ids(third) == whole
    walked = [a.id for page in store.walk_actions(page=2) for a in page]
    assert walked == whole
    with pytest.raises(ValueError, match="not a listing cursor"):
        store.list_actions(after="garbage")
    with pytest.raises(ValueError, match="limit must be a count > 0"):
        store.list_actions(limit=0)


# -- prune ------------------------------------------------------------------------------------


def test_prune_forgets_old_history_only(store: fsm.Store, run: Any, clock: Clock) -> None:
    ex = run({})
    ex.start(Script("old", last=1))
    ex.drive("old")
    clock.now += 1000
    ex.start(Script("young", last=1))
    ex.drive("young")
    ex.start(Script("live", last=3))
    result = store.prune(clock.now - 500)
    assert (result.log_rows, result.outcomes) == (2, 1)
    assert store.outcome("old") is None and store.transitions("old") == []
    assert store.outcome("young") is not None and len(store.transitions("young")) == 2
    assert store.row("live") is not None
    assert store.prune(clock.now - 500) == fsm.PruneResult(0, 0, clock.now - 500)
    assert fsm.testing.check_invariants(store, [Script]) == []


def test_prune_in_batches_through_the_committer(store_url: str) -> None:
    from fsm.testing import bulk

    bulk.fill_ended(store_url, 4_500)
    bulk.fill_log(store_url, 4_500)
    store = fsm.open_store(store_url)
    try:
        cutoff = bulk.NOW - 100_000 + 3_000  # rows 0..2999 are older
        result = asyncio.run(store.prune_soon(cutoff))
        assert (result.log_rows, result.outcomes) == (3_000, 3_000)
        left = store.list_actions(fsm.ActionFilter(statuses=("ended",)), limit=5_000)
        assert len(left) == 1_500 and min(a.ended_at or 0 for a in left) >= cutoff
        assert min(t.at for t in store.transitions()) >= cutoff
    finally:
        store.close()


def test_a_worker_prunes_what_its_retention_lets_go(store: fsm.Store, run: Any) -> None:
    ex = run({})
    ex.executor.clock = store.now
    ex.start(Script("gone", last=0))
    ex.drive("gone")
    week = 7 * 86400.0
    store.db.execute_sql("UPDATE fsm_outcome SET finished_at = finished_at - 9 * 86400")
    store.db.execute_sql("UPDATE fsm_transition SET at = at - 9 * 86400")
    worker: Worker[Any] = Worker(ex.executor, retention=8 * 86400.0, poll=0.01)

    async def until_pruned() -> None:
        task = asyncio.create_task(worker.run())
        while store.outcome("gone") is not None:
            await asyncio.sleep(0.01)
        worker.stop()
        await task

    asyncio.run(until_pruned())
    assert store.transitions("gone") == []
    with pytest.raises(ValueError, match="shorter than the redelivery window"):
        check_retention(3600.0, week)
    with pytest.raises(ValueError, match="retention must be seconds"):
        check_retention(float("nan"), week)
