"""The Prometheus endpoint of ``fsm worker --metrics-port N``: `Metrics` as scrape text.

prometheus-client's HTTP server runs in a daemon thread and serves a registry of our own:
fsm's `fsm.telemetry.metrics.Metrics` (counted by fsm, turned into text only when scraped)
and the process's CPU, memory, file descriptors and garbage collections (``process_*``,
``python_gc_*``). Why prometheus-client rather than OpenTelemetry's Prometheus exporter:
see `fsm.telemetry.metrics` (the SDK's cost per measurement).
"""

from __future__ import annotations

import errno
import threading
from wsgiref.simple_server import WSGIServer

import attrs
from prometheus_client import CollectorRegistry, GCCollector, ProcessCollector, start_http_server
from prometheus_client.registry import Collector

from fsm.errors import FsmError


class MetricsPortError(FsmError):
    """The metrics endpoint cannot listen where it was asked to (exit code 1, one line)."""


@attrs.define
class Endpoint:
    """A serving metrics endpoint, and the port it listens on."""

    port: int
    """The port it listens on (the one the system chose when asked for port 0)."""
    _server: WSGIServer
    _thread: threading.Thread

    def close(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def serve(collector: Collector, port: int, addr: str = "0.0.0.0") -> Endpoint:
    """Serve ``collector`` (and the process's own metrics) as Prometheus text on
    ``addr:port``, at any path (``/metrics`` by convention).

    Port 0 asks the system for a free port (`Endpoint.port` says which). Raises
    `MetricsPortError` in one line when the port is taken, not ours to open, or the address
    is not one of this host's.
    """
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    GCCollector(registry=registry)
    registry.register(collector)
    try:
        server, thread = start_http_server(port, addr, registry=registry)
    except OSError as exc:
        raise MetricsPortError(_why(exc, addr, port)) from None
    return Endpoint(int(server.server_port), server, thread)


def _why(exc: OSError, addr: str, port: int) -> str:
    where = f"{addr}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return f"cannot serve metrics on {where}: the port is in use (pick another --metrics-port)"
    if exc.errno == errno.EACCES:
        return f"cannot serve metrics on {where}: permission denied (ports below 1024 need root)"
    reason = exc.strerror or str(exc)
    return f"cannot serve metrics on {where}: {reason}"
