"""The Prometheus endpoint of ``fsm worker --metrics-port N``: fsm's metrics as scrape text.

Why OpenTelemetry's Prometheus exporter rather than prometheus-client's own metrics: fsm's
instruments are defined once, in `fsm.telemetry.otel`, and this endpoint is one reader of
them; a program that sends the same metrics by OTLP (or to a test's in-memory reader) uses
the same observer, with the same names and labels. prometheus-client still serves the
text: its HTTP server runs in a daemon thread, and a registry of our own also carries the
process's CPU, memory and file descriptors (``process_*``).

Names follow OpenTelemetry's Prometheus mapping: dots become underscores, a unit in seconds
adds ``_seconds``, a counter ``_total`` (``fsm.step.duration`` ->
``fsm_step_duration_seconds``, ``fsm.steps`` -> ``fsm_steps_total``).
"""

from __future__ import annotations

import errno
import os
import threading
from wsgiref.simple_server import WSGIServer

import attrs
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from prometheus_client import CollectorRegistry, GCCollector, ProcessCollector, start_http_server

from fsm.errors import FsmError


class MetricsPortError(FsmError):
    """The metrics endpoint cannot listen where it was asked to (exit code 1, one line)."""


@attrs.define
class Endpoint:
    """A serving metrics endpoint: the meter provider to give `OpenTelemetry`, and its port."""

    provider: MeterProvider
    port: int
    """The port it listens on (the one the system chose when asked for port 0)."""
    _server: WSGIServer
    _thread: threading.Thread

    def close(self) -> None:
        """Stop serving and shut the meter provider down."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        self.provider.shutdown()


def serve(port: int, addr: str = "0.0.0.0") -> Endpoint:
    """Serve fsm's metrics as Prometheus text on ``addr:port`` (``/metrics``, or any path).

    Port 0 asks the system for a free port (`Endpoint.port` says which). Raises
    `MetricsPortError` in one line when the port is taken, not ours to open, or the address
    is not one of this host's.
    """
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    GCCollector(registry=registry)
    reader = PrometheusMetricReader(registry=registry, scope_info_enabled=False)
    name = os.environ.get("OTEL_SERVICE_NAME", "fsm-worker")
    provider = MeterProvider(
        metric_readers=[reader], resource=Resource.create({SERVICE_NAME: name})
    )
    try:
        server, thread = start_http_server(port, addr, registry=registry)
    except OSError as exc:
        provider.shutdown()
        raise MetricsPortError(_why(exc, addr, port)) from None
    return Endpoint(provider, int(server.server_port), server, thread)


def _why(exc: OSError, addr: str, port: int) -> str:
    where = f"{addr}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return f"cannot serve metrics on {where}: the port is in use (pick another --metrics-port)"
    if exc.errno == errno.EACCES:
        return f"cannot serve metrics on {where}: permission denied (ports below 1024 need root)"
    reason = exc.strerror or str(exc)
    return f"cannot serve metrics on {where}: {reason}"
