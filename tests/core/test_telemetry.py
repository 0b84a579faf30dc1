"""`fsm.telemetry.otel.OpenTelemetry` through OpenTelemetry's own SDK: the spans (attributes,
parents, status) in its in-memory exporter, the metrics in its in-memory reader; the gauges
read from a real store (`fsm.store.census`) on SQLite and PostgreSQL; and
`fsm.telemetry.metrics.Metrics`, the worker's Prometheus counts, read as scrape text."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from actions import Script, one_step
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import fsm
from fsm import DriveStatus
from fsm.ids import idempotency_key
from fsm.telemetry.gauges import GaugeReader
from fsm.telemetry.metrics import Buckets, Metrics
from fsm.telemetry.otel import OpenTelemetry

T0 = 1_800_000_000.0
Other = one_step("other")


@attrs.define
class Telemetry:
    """An SDK tracer provider and meter provider that keep everything in memory."""

    spans: InMemorySpanExporter
    tracers: TracerProvider
    reader: InMemoryMetricReader
    meters: MeterProvider

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def steps(self) -> list[ReadableSpan]:
        return [s for s in self.finished() if s.name.startswith("step ")]

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, Any]]], Any]:
        """Every data point: (name, attributes) -> a sum's or gauge's value, a histogram's
        count."""
        points: dict[tuple[str, frozenset[tuple[str, Any]]], Any] = {}
        data = self.reader.get_metrics_data()
        assert data is not None
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        value = getattr(point, "count", None)
                        if value is None:
                            value = point.value  # type: ignore[union-attr]
                        points[metric.name, frozenset((point.attributes or {}).items())] = value
        return points


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    spans = InMemorySpanExporter()
    tracers = TracerProvider()
    tracers.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    yield Telemetry(spans, tracers, reader, meters)
    tracers.shutdown()
    meters.shutdown()


def observer(t: Telemetry, store: fsm.Store | None = None, **kw: Any) -> OpenTelemetry:
    return OpenTelemetry(store, tracer_provider=t.tracers, meter_provider=t.meters, **kw)


def key(**attributes: Any) -> frozenset[tuple[str, Any]]:
    return frozenset(attributes.items())


def test_a_span_per_step_with_its_attributes_inside_the_callers_trace(
    db_path: Path, telemetry: Telemetry
) -> None:
    store = fsm.Store.sqlite(db_path)
    ex = fsm.Executor(store, {}, kinds=[Script], observer=observer(telemetry))
    tracer = telemetry.tracers.get_tracer("the caller")

    async def request() -> fsm.DriveResult:
        with tracer.start_as_current_span("POST /payments"):
            return await ex.drive(Script("a", last=1))

    result = asyncio.run(request())
    assert result.status is DriveStatus.DONE
    (caller,) = [s for s in telemetry.finished() if s.name == "POST /payments"]
    first, second = telemetry.steps()
    incarnation = first.attributes["fsm.action.incarnation"]  # type: ignore[index]
    assert first.name == "step script.s0" and second.name == "step script.s1"
    assert dict(first.attributes or {}) == {
        "fsm.action.id": "a",
        "fsm.action.kind": "script",
        "fsm.action.incarnation": incarnation,
        "fsm.step.state": "s0",
        "fsm.step.seq": 0,
        "fsm.step.key": idempotency_key("a", str(incarnation), 0),
        "fsm.step.attempt": 1,
        "fsm.step.outcome": "next",
        "fsm.step.via": "step",
        "fsm.step.to_state": "s1",
        "fsm.commit.latency": first.attributes["fsm.commit.latency"],  # type: ignore[index]
    }
    assert first.attributes["fsm.commit.latency"] > 0  # type: ignore[index,operator]
    assert second.attributes["fsm.step.outcome"] == "done"  # type: ignore[index]
    for span in (first, second):
        assert span.parent is not None and span.parent.span_id == caller.context.span_id
        assert span.context.trace_id == caller.context.trace_id
        assert span.status.status_code is StatusCode.UNSET
    store.close()


def test_a_worker_drive_joins_the_trace_of_the_request_that_started_it(
    db_path: Path, telemetry: Telemetry
) -> None:
    """Started inside a request's span, driven later with no span current (a worker in the
    same process): the steps are children of the request's span."""
    store = fsm.Store.sqlite(db_path)
    ex = fsm.Executor(store, {}, kinds=[Script], observer=observer(telemetry))
    tracer = telemetry.tracers.get_tracer("the caller")

    async def request() -> None:
        with tracer.start_as_current_span("POST /payments"):
            assert await ex.start(Script("a", last=0))

    asyncio.run(request())
    (caller,) = telemetry.finished()
    report = asyncio.run(ex.run_due(keep_results=True))  # no span is current here
    assert [r.status for r in report.results] == [DriveStatus.DONE]
    (step,) = telemetry.steps()
    assert step.parent is not None and step.parent.span_id == caller.context.span_id
    assert step.context.trace_id == caller.context.trace_id
    store.close()


def test_what_a_step_does_nests_under_its_span(db_path: Path, telemetry: Telemetry) -> None:
    tracer = telemetry.tracers.get_tracer("a client library")

    async def call_remote(a: Script, ctx: fsm.StepContext[Any]) -> None:
        with tracer.start_as_current_span("GET /balance"):
            await asyncio.sleep(0)

    store = fsm.Store.sqlite(db_path)
    ex = fsm.Executor(store, {("a", 0): call_remote}, kinds=[Script], observer=observer(telemetry))
    asyncio.run(ex.drive(Script("a", last=0)))
    (remote,) = [s for s in telemetry.finished() if s.name == "GET /balance"]
    (step,) = telemetry.steps()
    assert remote.parent is not None and remote.parent.span_id == step.context.span_id
    assert step.parent is None  # no caller's trace: the step's span is a root
    store.close()


def test_steps_that_go_wrong_have_an_error_status(db_path: Path, telemetry: Telemetry) -> None:
    def flaky(a: Script, ctx: fsm.StepContext[Any]) -> None:
        if ctx.attempts == 0:
            raise ConnectionError("the remote hung up")

    def refuse(a: Script, ctx: fsm.StepContext[Any]) -> None:
        raise fsm.Rejected("insufficient funds")

    store = fsm.Store.sqlite(db_path)
    services = {("r", 0): flaky, ("j", 0): refuse}
    ex = fsm.Executor(store, services, kinds=[Script], observer=observer(telemetry))
    asyncio.run(ex.drive(Script("r", last=0)))
    asyncio.run(ex.drive(Script("j", last=0)))
    retry, rejected = telemetry.steps()
    assert retry.attributes["fsm.step.via"] == "retry"  # type: ignore[index]
    assert retry.status.status_code is StatusCode.ERROR
    assert retry.status.description == "ConnectionError: the remote hung up"
    assert rejected.attributes["fsm.step.outcome"] == "failed"  # type: ignore[index]
    assert rejected.status.status_code is StatusCode.ERROR
    assert "insufficient funds" in (rejected.status.description or "")
    store.close()


def test_metric_values_after_known_steps(db_path: Path, telemetry: Telemetry) -> None:
    def flaky(a: Script, ctx: fsm.StepContext[Any]) -> None:
        if ctx.attempts == 0:
            raise ConnectionError("the remote hung up")

    def refuse(a: Script, ctx: fsm.StepContext[Any]) -> None:
        raise fsm.Rejected("insufficient funds")

    def bug(a: Script, ctx: fsm.StepContext[Any]) -> None:
        raise TypeError("a bug in the kind")

    clock = {"now": T0}
    store = fsm.Store.sqlite(db_path)
    services = {("r", 1): flaky, ("j", 1): refuse, ("b", 0): bug}
    ex = fsm.Executor(
        store,
        services,
        kinds=[Script],
        observer=observer(telemetry),
        clock=lambda: clock["now"],
    )

    async def scenario() -> None:
        assert (await ex.drive(Script("d", last=2))).status is DriveStatus.DONE  # 3 steps
        assert (await ex.drive(Script("r", last=1))).status is DriveStatus.PARKED  # 2 steps
        clock["now"] += 10
        assert (await ex.drive("r")).status is DriveStatus.DONE  # 1 step
        assert (await ex.drive(Script("j", last=1))).status is DriveStatus.FAILED  # 2 steps
        assert (await ex.drive(Script("b"))).status is DriveStatus.BROKEN  # 1 step

    asyncio.run(scenario())
    m = telemetry.metrics()
    steps = {
        (dict(a)["state"], dict(a)["outcome"]): n
        for (name, a), n in m.items()
        if name == "fsm.steps"
    }
    assert steps == {
        ("s0", "next"): 3,  # d, r, j
        ("s1", "next"): 1,  # d
        ("s2", "done"): 1,  # d
        ("s1", "park"): 1,  # r's transient error
        ("s1", "done"): 1,  # r's second try
        ("s1", "failed"): 1,  # j, rejected
        ("s0", "broken"): 1,  # b
    }
    assert m["fsm.actions.started", key(kind="script")] == 4
    assert m["fsm.retries", key(kind="script", state="s1")] == 1
    assert m["fsm.rejections", key(kind="script", state="s1")] == 1
    assert m["fsm.actions.ended", key(kind="script", state="s2", outcome="done")] == 1
    assert m["fsm.actions.ended", key(kind="script", state="s1", outcome="done")] == 1
    assert m["fsm.actions.ended", key(kind="script", state="s1", outcome="failed")] == 1
    durations = sum(n for (name, _), n in m.items() if name == "fsm.step.duration")
    assert durations == 9  # every step's code is timed
    commits = {dict(a)["outcome"]: n for (name, a), n in m.items() if name == "fsm.commit.latency"}
    assert commits == {"next": 4, "park": 1, "done": 2, "failed": 1, "broken": 1}
    store.close()


def test_the_gauges_count_live_actions_and_the_oldest_due_ones_age(
    store: fsm.Store, telemetry: Telemetry
) -> None:
    """Actions of a kind nobody drives wait, due: the gauges see them and how long."""
    late = 120.0
    starter = fsm.Executor(store, None, kinds=[Other, Script], clock=lambda: store.now() - late)
    obs = observer(telemetry, store, gauge_interval=0)

    async def start() -> None:
        for n in range(3):
            await starter.start(Other(f"o{n}"))
        await starter.start(Script("s", n=2))

    before = store.now()
    asyncio.run(start())
    m = telemetry.metrics()
    after = store.now()
    assert m["fsm.actions.live", key(kind="other", state=Other.__name__)] == 3
    assert m["fsm.actions.live", key(kind="script", state="s2")] == 1
    age = m["fsm.due.oldest_age", frozenset()]
    assert late <= age <= late + (after - before)  # read between the two
    obs.close()


@pytest.mark.parametrize("rows", ["due", "none"])
def test_oldest_due_reads_what_is_claimable(store: fsm.Store, rows: str) -> None:
    """Each kind of row the census counts, and each it leaves out, on both databases."""
    now = 2_000_000_000.0
    ex = fsm.Executor(store, None, kinds=[Other], clock=lambda: now - 500)

    async def start(n: int) -> None:
        for i in range(n):
            await ex.start(Other(f"a{i}"))

    asyncio.run(start(6))
    p = store.db.param
    sql = store.db.execute_sql
    # a0: waiting for a notify only; a1: quarantined; a2: leased, lease live;
    # a3: due in the future; a4: a dead driver's lease that ran out at now - 50;
    # a5: left due at once (wake_at 0) by a drive that stopped, last written at now - 30.
    sql(f"UPDATE fsm_action SET wake_at = NULL WHERE id = {p}", ("a0",))
    store.quarantine("a1", "unreadable")
    sql(
        f"UPDATE fsm_action SET lease_owner = 'w', lease_expires = {p} WHERE id = {p}",
        (now + 30, "a2"),
    )
    sql(f"UPDATE fsm_action SET wake_at = {p} WHERE id = {p}", (now + 60, "a3"))
    sql(
        f"UPDATE fsm_action SET wake_at = 0, lease_owner = 'dead', lease_expires = {p} "
        f"WHERE id = {p}",
        (now - 50, "a4"),
    )
    sql(f"UPDATE fsm_action SET wake_at = 0, updated_at = {p} WHERE id = {p}", (now - 30, "a5"))
    if rows == "due":
        assert store.oldest_due(now) == pytest.approx(50.0)
        sql(f"UPDATE fsm_action SET wake_at = {p} WHERE id = {p}", (now - 70, "a3"))
        assert store.oldest_due(now) == pytest.approx(70.0)  # a free row's wake-up
        sql(f"UPDATE fsm_action SET updated_at = {p} WHERE id = {p}", (now - 90, "a5"))
        assert store.oldest_due(now) == pytest.approx(90.0)  # due at once since its write
    else:
        sql(f"DELETE FROM fsm_action WHERE id IN ({p}, {p})", ("a4", "a5"))
        assert store.oldest_due(now) == 0.0  # nothing is claimable now
    assert store.live_counts() == {("other", Other.__name__): 6 if rows == "due" else 4}


def test_gauge_readings_are_kept_for_the_interval_and_a_failure_is_logged(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = fsm.Store.sqlite(db_path)
    ex = fsm.Executor(store, None, kinds=[Other])
    asyncio.run(ex.start(Other("a")))
    kept = GaugeReader(store, interval=3600)
    first = kept.read()
    assert first is not None and first.live == {("other", Other.__name__): 1}
    asyncio.run(ex.start(Other("b")))
    assert kept.read() is first  # within the interval: not read again
    fresh = GaugeReader(store, interval=0, cost_share=0)
    reading = fresh.read()
    assert reading is not None and reading.live == {("other", Other.__name__): 2}
    store.db.execute_sql("ALTER TABLE fsm_action RENAME TO gone")
    with caplog.at_level(logging.WARNING, logger="fsm.telemetry"):
        assert fresh.read() is None
    assert any("could not read the gauges" in r.getMessage() for r in caplog.records)
    for reader in (kept, fresh):
        reader.close()
    store.db.execute_sql("ALTER TABLE gone RENAME TO fsm_action")
    store.close()


def test_a_reading_is_kept_longer_the_longer_it_took(db_path: Path) -> None:
    """A large table's count is not read again at every scrape: a reading is kept a multiple
    of the time it took (here a million times: far longer than this test)."""
    store = fsm.Store.sqlite(db_path)
    ex = fsm.Executor(store, None, kinds=[Other])
    asyncio.run(ex.start(Other("a")))
    reader = GaugeReader(store, interval=0, cost_share=1e6)
    first = reader.read()
    asyncio.run(ex.start(Other("b")))
    assert reader.read() is first
    reader.close()
    store.close()


def test_a_reading_happens_on_the_readers_own_thread(db_path: Path) -> None:
    """One thread, one connection: not one per collector thread (a scrape makes one)."""
    store = fsm.Store.sqlite(db_path)
    threads: set[str] = set()
    original = store.live_counts

    def counting() -> dict[tuple[str, str], int]:
        threads.add(threading.current_thread().name)
        return original()

    store.live_counts = counting  # type: ignore[method-assign]
    reader = GaugeReader(store, interval=0, cost_share=0)
    callers = [threading.Thread(target=reader.read) for _ in range(3)]
    for t in callers:
        t.start()
    for t in callers:
        t.join()
    reader.close()
    assert len(threads) == 1 and next(iter(threads)).startswith("fsm-gauges")
    store.close()


def test_prometheus_metrics_count_known_steps_into_exact_buckets(db_path: Path) -> None:
    """`Metrics` (what ``fsm worker --metrics-port`` serves), read as scrape text."""

    def flaky(a: Script, ctx: fsm.StepContext[Any]) -> None:
        if ctx.attempts == 0:
            raise ConnectionError("the remote hung up")

    store = fsm.Store.sqlite(db_path)
    metrics = Metrics(store, gauge_interval=0)
    registry = CollectorRegistry()
    registry.register(metrics)
    clock = {"now": T0}
    ex = fsm.Executor(
        store, {("r", 0): flaky}, kinds=[Script], observer=metrics, clock=lambda: clock["now"]
    )

    async def scenario() -> None:
        await ex.drive(Script("d", last=1))
        await ex.drive(Script("r", last=0))
        clock["now"] += 10
        await ex.drive("r")
        await ex.start(Script("w"))

    asyncio.run(scenario())
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
    }
    assert samples["fsm_steps_total", key(kind="script", state="s0", outcome="next")] == 1
    assert samples["fsm_steps_total", key(kind="script", state="s1", outcome="done")] == 1
    assert samples["fsm_steps_total", key(kind="script", state="s0", outcome="park")] == 1
    assert samples["fsm_steps_total", key(kind="script", state="s0", outcome="done")] == 1
    assert samples["fsm_retries_total", key(kind="script", state="s0")] == 1
    assert samples["fsm_actions_started_total", key(kind="script")] == 3
    ended = key(kind="script", state="s1", outcome="done")
    assert samples["fsm_actions_ended_total", ended] == 1
    assert samples["fsm_commit_latency_seconds_count", key(outcome="next")] == 1
    assert samples["fsm_commit_latency_seconds_count", key(outcome="done")] == 2
    assert samples["fsm_step_duration_seconds_count", key(kind="script", state="s0")] == 3
    infinite = key(kind="script", state="s0", le="+Inf")
    assert samples["fsm_step_duration_seconds_bucket", infinite] == 3
    assert samples["fsm_actions_live", key(kind="script", state="s0")] == 1
    assert samples["fsm_due_oldest_age_seconds", frozenset()] >= 0
    metrics.close()
    store.close()


def test_a_sample_on_a_bucket_bound_counts_in_that_bucket() -> None:
    buckets = Buckets()
    for value in (0.0001, 0.00011, 0.001, 61.0):
        buckets.observe(value)
    cumulative = dict(buckets.cumulative())
    assert (cumulative["0.0001"], cumulative["0.0005"], cumulative["0.001"]) == (1, 2, 3)
    assert (cumulative["60.0"], cumulative["+Inf"]) == (3, 4)
    assert buckets.sum == pytest.approx(61.00121)
