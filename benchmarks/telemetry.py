"""What metrics and tracing cost per step, and what a scrape's gauges cost the database.

The no-op 5-step action of ``step.py`` is driven on SQLite, one drive at a time, with:

- off: no observer (the executor's default);
- prometheus: `fsm.telemetry.metrics.Metrics`, what ``fsm worker --metrics-port`` counts
  with, scraped once per round (the scrape's time is spread over the round's steps);
- otel metrics: `fsm.telemetry.otel.OpenTelemetry` with the SDK's meter provider and an
  in-memory reader collected once per round (the collection records the queued histogram
  samples: its time is spread over the steps too); no tracer provider, so its spans are
  OpenTelemetry's non-recording ones;
- otel metrics + traces: the same, and the SDK's tracer provider recording every span into
  a batch processor whose exporter drops them (the cost of making and ending the spans, not
  of shipping them).

The settings take turns within each round, in another order each round, so the machine's
noise falls on all alike. Figures: median per step in microseconds, and the difference to
``off``. Then the gauges' two reads (`fsm.Store.live_counts`, `fsm.Store.oldest_due`) on a
table of ``--rows`` live actions: what one scrape costs the store.

    python benchmarks/telemetry.py [--actions 300] [--rounds 6] [--rows 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import Callable, Sequence

from baseline import median
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import NoOpTracerProvider
from prometheus_client import CollectorRegistry, generate_latest
from step import STEPS, NoOp

import fsm
from fsm.observer import Observer
from fsm.telemetry.metrics import Metrics
from fsm.telemetry.otel import OpenTelemetry
from fsm.testing import bulk

SETTINGS = ("off", "prometheus", "otel metrics", "otel metrics + traces")


class Dropped(SpanExporter):
    """An exporter that accepts every span and keeps none."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def observer_of(setting: str) -> tuple[Observer | None, Callable[[], None], Callable[[], None]]:
    """A setting's observer, how to collect what it counted, and how to shut it down."""
    if setting == "off":
        return None, lambda: None, lambda: None
    if setting == "prometheus":
        metrics = Metrics()
        registry = CollectorRegistry()
        registry.register(metrics)
        return metrics, lambda: generate_latest(registry) and None, lambda: None
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    tracers: TracerProvider | NoOpTracerProvider = NoOpTracerProvider()
    if setting == "otel metrics + traces":
        tracers = TracerProvider()
        tracers.add_span_processor(BatchSpanProcessor(Dropped()))
    observer = OpenTelemetry(tracer_provider=tracers, meter_provider=meters)

    def shutdown() -> None:
        meters.shutdown()
        if isinstance(tracers, TracerProvider):
            tracers.shutdown()

    return observer, lambda: reader.get_metrics_data() and None, shutdown


async def step_us(path: str, setting: str, n_actions: int) -> list[float]:
    """Per-step drive time (one drive of 5 steps at a time) under ``setting``, microseconds,
    with the time of one collection at the end spread over every step."""
    store = fsm.Store.sqlite(path)
    observer, collect, shutdown = observer_of(setting)
    ex: fsm.Executor[None] = fsm.Executor(store, kinds=[NoOp], observer=observer)
    for i in range(n_actions):
        await ex.start(NoOp(f"a{i}"))
    steps = []
    for i in range(n_actions):
        t0 = time.perf_counter_ns()
        result = await ex.drive(f"a{i}")
        steps.append((time.perf_counter_ns() - t0) / 1000 / STEPS)
        assert result.status is fsm.DriveStatus.DONE, result
    t0 = time.perf_counter_ns()
    collect()
    spread = (time.perf_counter_ns() - t0) / 1000 / (n_actions * STEPS)
    shutdown()
    store.close()
    return [s + spread for s in steps]


def gauge_reads_ms(path: str, rows: int) -> dict[str, float]:
    """Median milliseconds of each gauge read on a table of ``rows`` live actions."""
    bulk.fill(path, rows)
    store = fsm.Store.sqlite(path)
    got: dict[str, list[float]] = {"live_counts": [], "oldest_due": []}
    for _ in range(5):
        t0 = time.perf_counter()
        store.live_counts()
        t1 = time.perf_counter()
        store.oldest_due(bulk.NOW)
        t2 = time.perf_counter()
        got["live_counts"].append((t1 - t0) * 1000)
        got["oldest_due"].append((t2 - t1) * 1000)
    store.close()
    return {name: median(sample) for name, sample in got.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--actions", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    got: dict[str, list[float]] = {s: [] for s in SETTINGS}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for k in range(len(SETTINGS)):
                setting = SETTINGS[(r + k) % len(SETTINGS)]  # each round in another order
                path = os.path.join(tmp, f"{r}-{k}.sqlite")
                got[setting].extend(asyncio.run(step_us(path, setting, args.actions)))
        reads = gauge_reads_ms(os.path.join(tmp, "rows.sqlite"), args.rows)
    off = median(got["off"])
    for setting in SETTINGS:
        med = median(got[setting])
        print(f"step, {setting:22s} median {med:6.1f} us  {med - off:+6.1f} us  {med / off:4.2f}x")
    print(
        f"gauges at {args.rows} live rows: live_counts {reads['live_counts']:.1f} ms, "
        f"oldest_due {reads['oldest_due']:.3f} ms"
    )


if __name__ == "__main__":
    main()
