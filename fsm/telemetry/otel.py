"""`OpenTelemetry`: an `fsm.Observer` that traces every step and records fsm's metrics.

    from fsm.telemetry.otel import OpenTelemetry
    executor = fsm.Executor(store, kinds=[...], observer=OpenTelemetry(store))

Only OpenTelemetry's API is used: spans and metrics go to the tracer and meter providers
given, else to the global ones, which the program configures (the SDK, exporters), so the
same observer feeds Prometheus, OTLP or a test's in-memory exporter.

Each step is a span, ``step <kind>.<state>``, started when the step begins and ended once its
write is durable (or has failed). Its parent is the context current when the action was
driven (a drive awaited inside a request's span nests there); when there is none, the
context current when this process started the action (`fsm.Executor.start` in a request,
driven later by a worker in the same process). While the step runs, its span is the current
one, so what the step's code does (HTTP calls, queries) nests under it.

The metrics are those `fsm.telemetry.metrics.Metrics` serves to Prometheus (in brackets: the
name OpenTelemetry's Prometheus mapping gives them, the same). Counts are kept here and
handed over at collection, histogram samples queued until then (`fsm.telemetry.tallies`:
the SDK's cost per measurement is more than a step's):

* ``fsm.steps`` [``fsm_steps_total``]: steps by kind, state (run from) and outcome (``next``,
  ``park``, ``done``, ``failed``, ``broken``, or ``lease_lost``, ``error``, ``cancelled``
  when nothing was written);
* ``fsm.actions.started`` / ``fsm.actions.ended``: new incarnations by kind; ends by kind,
  end state and outcome (``done``, ``failed``);
* ``fsm.retries`` / ``fsm.rejections``: steps whose error went to the retry or rejection
  handler, by kind and state;
* ``fsm.step.duration`` (s): the step's code, by kind and state; ``fsm.commit.latency`` (s):
  from handing the write to the committer to its durability, by outcome;
* with a store, two gauges read from it (`fsm.telemetry.gauges`): ``fsm.actions.live``, live
  actions by kind and state, and ``fsm.due.oldest_age`` (s), how long the longest-waiting
  claimable action has waited (0 when none waits): a backlog's age. Every worker on one
  database reports the same values: aggregate them with max, not sum.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextvars import Token

from opentelemetry import context, metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import Span, SpanContext, Status, StatusCode

from fsm.observer import StepEnd, StepStart
from fsm.store import Store
from fsm.telemetry.gauges import GaugeReader
from fsm.telemetry.metrics import SECONDS_BUCKETS
from fsm.telemetry.tallies import Samples, Tally

SCOPE = "fsm"
"""The instrumentation scope of fsm's tracer and meter."""

ORIGINS_KEPT = 10_000
"""Start contexts remembered for actions not yet driven here; the oldest is forgotten first."""

_NOT_WRITTEN = frozenset({"lease_lost", "error", "cancelled"})
_ENDS = frozenset({"done", "failed"})


class OpenTelemetry:
    """An `fsm.Observer` reporting to OpenTelemetry (see the module's docstring).

    ``store``: where the gauges are read (none without it); ``gauge_interval``: seconds a
    reading of them is reused. ``tracer_provider``, ``meter_provider``: default, the global
    ones.
    """

    def __init__(
        self,
        store: Store | None = None,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        gauge_interval: float = 5.0,
    ) -> None:
        self.tracer = trace.get_tracer(SCOPE, tracer_provider=tracer_provider)
        meter = metrics.get_meter(SCOPE, meter_provider=meter_provider)
        # Counted here, handed over at collection (`fsm.telemetry.tallies`: why).
        self._steps = Tally("kind", "state", "outcome")
        self._started = Tally("kind")
        self._ended = Tally("kind", "state", "outcome")
        self._retries = Tally("kind", "state")
        self._rejections = Tally("kind", "state")
        duration = meter.create_histogram(
            "fsm.step.duration",
            "s",
            "Time the step's code ran (advance and handlers)",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        commit = meter.create_histogram(
            "fsm.commit.latency",
            "s",
            "Time from handing a step's write to the committer to its durability",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        self._durations = Samples(duration, "kind", "state")
        self._commits = Samples(commit, "outcome")
        for name, callback, unit, description in (
            ("fsm.steps", self._collect, "{step}", "Steps run, by outcome"),
            ("fsm.actions.started", self._started.observe, "{action}", "Incarnations started"),
            ("fsm.actions.ended", self._ended.observe, "{action}", "Actions ended, done or failed"),
            (
                "fsm.retries",
                self._retries.observe,
                "{step}",
                "Steps whose transient error went to the retry handler",
            ),
            (
                "fsm.rejections",
                self._rejections.observe,
                "{step}",
                "Steps rejected (routed to the rejection handler)",
            ),
        ):
            meter.create_observable_counter(name, [callback], unit, description)
        self.gauges = None if store is None else GaugeReader(store, gauge_interval)
        if self.gauges is not None:
            meter.create_observable_gauge(
                "fsm.actions.live", [self._live], "{action}", "Live actions, by kind and state"
            )
            meter.create_observable_gauge(
                "fsm.due.oldest_age",
                [self._oldest_due],
                "s",
                "How long the longest-waiting claimable action has waited (0: none waits)",
            )
        self._origins: dict[str, SpanContext] = {}

    # -- fsm.Observer ---------------------------------------------------------------------

    def started(self, action_id: str, kind: str, state: str, incarnation: str) -> None:
        self._started.add(kind)
        origin = trace.get_current_span().get_span_context()
        if origin.is_valid:
            origins = self._origins
            if len(origins) >= ORIGINS_KEPT:
                del origins[next(iter(origins))]
            origins[action_id] = origin

    def step(self, start: StepStart) -> _StepSpan:
        parent = context.get_current()
        if not trace.get_current_span(parent).get_span_context().is_valid:
            origin = self._origins.get(start.action_id)
            if origin is not None:
                parent = trace.set_span_in_context(trace.NonRecordingSpan(origin), parent)
        span = self.tracer.start_span(
            f"step {start.kind}.{start.state}",
            parent,
            attributes={
                "fsm.action.id": start.action_id,
                "fsm.action.kind": start.kind,
                "fsm.action.incarnation": start.incarnation,
                "fsm.step.state": start.state,
                "fsm.step.seq": start.seq,
                "fsm.step.key": start.key,
                "fsm.step.attempt": start.attempt,
            },
        )
        token = context.attach(trace.set_span_in_context(span, parent))
        return _StepSpan(self, start, span, token)

    # -- what a step's end records --------------------------------------------------------

    def record(self, start: StepStart, end: StepEnd) -> None:
        """The metrics of one ended step (counted now, handed over at the next collection)."""
        kind, state, outcome = start.kind, start.state, end.outcome
        self._steps.add(kind, state, outcome)
        if end.via == "retry":
            self._retries.add(kind, state)
        elif end.via == "rejection":
            self._rejections.add(kind, state)
        if end.duration is not None:
            self._durations.add(end.duration, kind, state)
        if end.commit is not None:
            self._commits.add(end.commit, outcome)
            if outcome in _ENDS:
                self._ended.add(kind, end.to_state, outcome)
                self._origins.pop(start.action_id, None)

    def _collect(self, options: CallbackOptions) -> Iterable[Observation]:
        """A callback of every collection: the queued samples go into their histograms (the
        SDK runs every callback before it reads any instrument), then the step counts."""
        self._durations.record()
        self._commits.record()
        return self._steps.observe(options)

    def _live(self, options: CallbackOptions) -> Iterable[Observation]:
        reading = None if self.gauges is None else self.gauges.read()
        if reading is None:
            return []
        return [Observation(n, {"kind": k, "state": s}) for (k, s), n in reading.live.items()]

    def _oldest_due(self, options: CallbackOptions) -> Iterable[Observation]:
        reading = None if self.gauges is None else self.gauges.read()
        return [] if reading is None else [Observation(reading.oldest_due)]

    def close(self) -> None:
        """Let go of the gauges' reading thread and its connection."""
        if self.gauges is not None:
            self.gauges.close()


class _StepSpan:
    """One step's span, current while the step runs (`fsm.StepWatch`)."""

    __slots__ = ("observer", "span", "start", "token")

    def __init__(
        self,
        observer: OpenTelemetry,
        start: StepStart,
        span: Span,
        token: Token[context.Context],
    ) -> None:
        self.observer = observer
        self.start = start
        self.span = span
        self.token = token

    def ended(self, end: StepEnd) -> None:
        try:
            self.observer.record(self.start, end)
            span = self.span
            if span.is_recording():
                span.set_attribute("fsm.step.outcome", end.outcome)
                if end.via is not None:
                    span.set_attribute("fsm.step.via", end.via)
                span.set_attribute("fsm.step.to_state", end.to_state)
                if end.commit is not None:
                    span.set_attribute("fsm.commit.latency", end.commit)
                if end.error is not None or end.outcome in _NOT_WRITTEN:
                    span.set_status(Status(StatusCode.ERROR, end.error or end.outcome))
            span.end()
        finally:
            context.detach(self.token)
