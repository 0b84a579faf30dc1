"""Metrics and tracing for fsm, as an optional extra: ``pip install 'fsm[otel]'``.

Nothing here is imported by ``import fsm``: a program that does not ask for telemetry never
loads OpenTelemetry. The rooms:

* `fsm.telemetry.otel`: `OpenTelemetry`, an `fsm.Observer` that makes a span per step and
  records counters, histograms and gauges through OpenTelemetry's API;
* `fsm.telemetry.gauges`: `GaugeReader`, the store reads behind the gauges, on one thread of
  their own, at most once per interval;
* `fsm.telemetry.prometheus`: `serve`, the Prometheus text endpoint of ``fsm worker
  --metrics-port``.
"""
