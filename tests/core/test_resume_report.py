"""A resume's report at a few thousand actions: every drive counted, what went wrong kept in
full (up to a bound, the rest counted), every result only when asked for.

The report is made in memory whatever the database: these run on SQLite (resume_all's paging
on both databases is `tests/core/test_scale.py`'s)."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterator
from pathlib import Path

import pytest

import fsm
import fsm.results
from fsm.testing import bulk

ROWS = 3_000
SET_ASIDE = {f"a{i:09d}" for i in range(ROWS) if i % 1000 == 7}  # bulk quarantines these
LEASED = {f"a{i:09d}" for i in range(1, 32, 2)} - SET_ASIDE  # another host's live lease
UNREADABLE = {f"a{i:09d}" for i in range(100, ROWS, 250)}  # quarantined by the drive


@pytest.fixture
def store(db_path: Path) -> Iterator[fsm.Store]:
    """``ROWS`` bulk rows, some of whose payloads the code cannot read."""
    bulk.fill(str(db_path), ROWS)
    opened = fsm.open_store(str(db_path))
    for action_id in UNREADABLE:
        opened.db.execute_sql(
            f"UPDATE fsm_action SET payload = 'not json' WHERE id = {opened.db.param}",
            (action_id,),
        )
    try:
        yield opened
    finally:
        opened.close()


def resume(store: fsm.Store, **options: bool) -> fsm.ResumeReport:
    executor = fsm.Executor(store, kinds=[bulk.ScaleAction])
    return asyncio.run(executor.resume_all(concurrency=8, **options))


def test_every_drive_is_counted_and_what_went_wrong_is_kept(store: fsm.Store) -> None:
    report = resume(store)
    assert report.total == ROWS - len(SET_ASIDE)  # nothing lost, nothing driven twice
    assert report.counts == {
        fsm.DriveStatus.BUSY: len(LEASED),
        fsm.DriveStatus.QUARANTINED: len(UNREADABLE),
        fsm.DriveStatus.PARKED: ROWS - len(SET_ASIDE) - len(LEASED) - len(UNREADABLE),
    }
    assert report.count(fsm.DriveStatus.DONE) == 0
    # the failures, in full and in id order; the parked drives are only counted
    assert [r.id for r in report.failures] == sorted(LEASED | UNREADABLE)
    assert report.failures_omitted == 0
    reasons = {row.id: row.quarantine for row in report.quarantined}
    for result in report.failures:
        if result.id in UNREADABLE:
            assert result.status is fsm.DriveStatus.QUARANTINED
            assert result.state == "waiting" and result.error == reasons[result.id]
        else:
            assert result.status is fsm.DriveStatus.BUSY
    assert {row.id for row in report.quarantined} == SET_ASIDE | UNREADABLE
    with pytest.raises(LookupError, match="keep_results=True"):
        _ = report.results


def test_keep_results_keeps_every_result_and_agrees_with_the_counts(store: fsm.Store) -> None:
    report = resume(store, keep_results=True)
    ids = [r.id for r in report.results]
    assert ids == sorted(set(ids)) and len(ids) == report.total == ROWS - len(SET_ASIDE)
    assert report.counts == collections.Counter(r.status for r in report.results)
    assert report.failures == tuple(r for r in report.results if not r.ok)


def test_failures_beyond_the_bound_are_counted_not_kept(
    store: fsm.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fsm.results, "KEPT_FAILURES", 5)
    report = resume(store)
    went_wrong = len(LEASED) + len(UNREADABLE)
    assert len(report.failures) == 5 and report.failures_omitted == went_wrong - 5
    assert [r.id for r in report.failures] == sorted(r.id for r in report.failures)
    assert {r.id for r in report.failures} <= LEASED | UNREADABLE
    assert report.total == ROWS - len(SET_ASIDE)
    assert report.count(fsm.DriveStatus.QUARANTINED) == len(UNREADABLE)


def test_run_due_reports_alike_and_sync_passes_the_options(store: fsm.Store) -> None:
    """`run_due` drives the due rows (even ones, earliest first, at most 1,000) and reports
    them the same way; `SyncExecutor` takes the same options."""
    with fsm.SyncExecutor(store, kinds=[bulk.ScaleAction], clock=lambda: bulk.NOW) as sync:
        report = sync.run_due(concurrency=4, keep_results=True)
    due = list(range(0, ROWS, 2))[:1000]  # the even rows are due, earlier ids earlier
    assert [r.id for r in report.results] == [f"a{i:09d}" for i in due]
    assert report.total == 1000
    assert {r.id for r in report.failures} == UNREADABLE & {f"a{i:09d}" for i in due}


def test_quarantined_rows_beyond_the_bound_are_counted_not_kept(
    store: fsm.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A table with many rows set aside reports the first ones by start, and how many more."""
    monkeypatch.setattr(fsm.results, "KEPT_FAILURES", 4)
    report = resume(store)
    set_aside = len(SET_ASIDE | UNREADABLE)
    assert len(report.quarantined) == 4 and report.quarantined_omitted == set_aside - 4
    assert [r.id for r in report.quarantined] == [r.id for r in store.quarantined()][:4]
    assert store.count_quarantined() == set_aside


def test_the_quarantined_rows_are_read_through_the_trouble_index(store: fsm.Store) -> None:
    """Listing them reads the partial index of rows in trouble, not every live row."""
    sql, params = fsm.store.inspection._set_aside().sql()
    plan = store.db.execute_sql(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()
    assert any("fsm_action_trouble" in str(step) for step in plan), plan
