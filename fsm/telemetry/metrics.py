"""`Metrics`: an `fsm.Observer` that counts steps itself and is read as Prometheus text.

This is what ``fsm worker --metrics-port`` serves. A step costs it one lock and a few dict
and list updates (about a microsecond): counts and histogram buckets are kept here, and turned
into Prometheus metric families only when scraped (`collect`, a prometheus-client collector).
Why not OpenTelemetry's SDK and its Prometheus exporter: it cleans and hashes the attributes
of every measurement, 10-20 us each on this project's machine, and a step makes three or
four, more than the step itself (``benchmarks/telemetry.py``). The names, labels and buckets
are those `fsm.telemetry.otel.OpenTelemetry` gives through OpenTelemetry's Prometheus
mapping, so a dashboard reads either.

The families (labels in brackets):

* ``fsm_steps_total`` [kind, state, outcome]: steps by the state they ran from and their
  outcome (``next``, ``park``, ``done``, ``failed``, ``broken``; ``lease_lost``, ``error``,
  ``cancelled`` when nothing was written);
* ``fsm_actions_started_total`` [kind]; ``fsm_actions_ended_total`` [kind, state, outcome]
  (``done``, ``failed``; the end state);
* ``fsm_retries_total``, ``fsm_rejections_total`` [kind, state]: steps whose error went to
  the retry or the rejection handler;
* ``fsm_step_duration_seconds`` [kind, state]: the step's code; ``fsm_commit_latency_seconds``
  [outcome]: from handing the write to the committer to its durability (histograms);
* with a store: ``fsm_actions_live`` [kind, state] and ``fsm_due_oldest_age_seconds``
  (`fsm.telemetry.gauges`; the same on every worker of a database: aggregate with max).
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from fsm.observer import StepEnd, StepStart
from fsm.store import Store
from fsm.telemetry.gauges import GaugeReader

SECONDS_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0)
"""Histogram buckets (upper bounds, seconds) from 100 us (a SQLite commit takes tens of
microseconds) to a minute; the same for both histograms and both observers."""

_ENDS = frozenset({"done", "failed"})

Labels = tuple[str, ...]
"""A series' label values, in the order of its family's label names."""


class Buckets:
    """One histogram's counts per bucket (the last one: past every bound), and its sum."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(SECONDS_BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(SECONDS_BUCKETS, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        """Prometheus's buckets: (upper bound, samples at or below it), ``+Inf`` last."""
        out, total = [], 0
        for bound, n in zip((*map(str, SECONDS_BUCKETS), "+Inf"), self.counts, strict=True):
            total += n
            out.append((bound, float(total)))
        return out


class Metrics(Collector):
    """Counts what an executor's steps did (an `fsm.Observer`), read as Prometheus text.

    Register it with a prometheus-client registry (`fsm.telemetry.prometheus.serve` does).
    ``store``: where the two gauges are read, at most once per ``gauge_interval`` seconds.
    The counts are changed on the event loop's thread and read on a scrape's, under one
    lock, so a scrape never sees a histogram's count and buckets disagree.
    """

    def __init__(self, store: Store | None = None, *, gauge_interval: float = 5.0) -> None:
        self._lock = threading.Lock()
        self._steps: dict[Labels, int] = {}
        self._started: dict[Labels, int] = {}
        self._ended: dict[Labels, int] = {}
        self._retries: dict[Labels, int] = {}
        self._rejections: dict[Labels, int] = {}
        self._durations: dict[Labels, Buckets] = {}
        self._commits: dict[Labels, Buckets] = {}
        self.gauges = None if store is None else GaugeReader(store, gauge_interval)

    # -- fsm.Observer ---------------------------------------------------------------------

    def started(self, action_id: str, kind: str, state: str, incarnation: str) -> None:
        with self._lock:
            _bump(self._started, (kind,))

    def step(self, start: StepStart) -> _Step:
        return _Step(self, start)

    def record(self, start: StepStart, end: StepEnd) -> None:
        """Count one ended step (on every step: kept to a few dict operations)."""
        kind, state, outcome = start.kind, start.state, end.outcome
        where = (kind, state)
        with self._lock:
            steps = self._steps
            key = (kind, state, outcome)
            steps[key] = steps.get(key, 0) + 1
            if end.via == "retry":
                _bump(self._retries, where)
            elif end.via == "rejection":
                _bump(self._rejections, where)
            if end.duration is not None:
                _buckets(self._durations, where).observe(end.duration)
            if end.commit is not None:
                _buckets(self._commits, (outcome,)).observe(end.commit)
                if outcome in _ENDS:
                    _bump(self._ended, (kind, end.to_state, outcome))

    # -- prometheus-client's Collector ----------------------------------------------------

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        with self._lock:
            counts: list[tuple[str, str, Labels, dict[Labels, int]]] = [
                ("fsm_steps", "Steps run, by outcome", ("kind", "state", "outcome"), self._steps),
                ("fsm_actions_started", "Incarnations started", ("kind",), self._started),
                (
                    "fsm_actions_ended",
                    "Actions ended, done or failed",
                    ("kind", "state", "outcome"),
                    self._ended,
                ),
                (
                    "fsm_retries",
                    "Steps whose transient error went to the retry handler",
                    ("kind", "state"),
                    self._retries,
                ),
                (
                    "fsm_rejections",
                    "Steps rejected (routed to the rejection handler)",
                    ("kind", "state"),
                    self._rejections,
                ),
            ]
            counters = [(n, h, k, dict(values)) for n, h, k, values in counts]
            durations = {k: (b.cumulative(), b.sum) for k, b in self._durations.items()}
            commits = {k: (b.cumulative(), b.sum) for k, b in self._commits.items()}
        for name, documentation, keys, values in counters:
            if values:
                counter = CounterMetricFamily(name, documentation, labels=keys)
                for label_values, n in values.items():
                    counter.add_metric(list(label_values), n)
                yield counter
        for name, documentation, keys, histogram in (
            (
                "fsm_step_duration_seconds",
                "Time the step's code ran (advance and handlers)",
                ("kind", "state"),
                durations,
            ),
            (
                "fsm_commit_latency_seconds",
                "Time from handing a step's write to the committer to its durability",
                ("outcome",),
                commits,
            ),
        ):
            if histogram:
                family = HistogramMetricFamily(name, documentation, labels=keys)
                for label_values, (buckets, total) in histogram.items():
                    family.add_metric(list(label_values), buckets, total)
                yield family
        yield from self._gauges()

    def _gauges(self) -> Iterator[GaugeMetricFamily]:
        reading = None if self.gauges is None else self.gauges.read()
        if reading is None:
            return
        live = GaugeMetricFamily(
            "fsm_actions_live", "Live actions, by kind and state", labels=("kind", "state")
        )
        for (kind, state), n in reading.live.items():
            live.add_metric([kind, state], n)
        yield live
        yield GaugeMetricFamily(
            "fsm_due_oldest_age_seconds",
            "How long the longest-waiting claimable action has waited (0: none waits)",
            value=reading.oldest_due,
        )

    def close(self) -> None:
        """Let go of the gauges' reading thread and its connection."""
        if self.gauges is not None:
            self.gauges.close()


class _Step:
    """One step's watch: it only remembers the start until the step ends."""

    __slots__ = ("metrics", "start")

    def __init__(self, metrics: Metrics, start: StepStart) -> None:
        self.metrics = metrics
        self.start = start

    def ended(self, end: StepEnd) -> None:
        self.metrics.record(self.start, end)


def _bump(counts: dict[Labels, int], key: Labels) -> None:
    counts[key] = counts.get(key, 0) + 1


def _buckets(histograms: dict[Labels, Buckets], key: Labels) -> Buckets:
    found = histograms.get(key)
    if found is None:
        found = histograms[key] = Buckets()
    return found
