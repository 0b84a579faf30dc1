"""Metrics and tracing for fsm, as an optional extra: ``pip install 'fsm[otel]'``.

Nothing here is imported by ``import fsm``: a program that does not ask for telemetry never
loads OpenTelemetry or prometheus-client. The rooms, each an `fsm.Observer` or what one uses:

* `fsm.telemetry.metrics`: `Metrics`, an observer that counts steps itself and is read as
  Prometheus text (what ``fsm worker --metrics-port`` serves);
* `fsm.telemetry.otel`: `OpenTelemetry`, an observer that makes a span per step and records
  the same metrics through OpenTelemetry's API; `fsm.telemetry.tallies`, its counts kept
  until a collection;
* `fsm.telemetry.gauges`: `GaugeReader`, the store reads behind both observers' gauges, on
  one thread of their own;
* `fsm.telemetry.prometheus`: `serve`, the HTTP endpoint of ``fsm worker --metrics-port``.
"""
