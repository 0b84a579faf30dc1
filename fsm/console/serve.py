"""Serving the console: bind first (so a taken port is a one-line error, not a traceback),
say where it listens and how to use the controls, then run uvicorn until SIGINT/SIGTERM."""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from collections.abc import Callable, Iterator

import attrs
import uvicorn

from fsm.console.app import create_app
from fsm.console.backend import Backend
from fsm.console.settings import Settings


class _Server(uvicorn.Server):
    """uvicorn's server, stopped by SIGINT or SIGTERM with exit code 0 like ``fsm worker``
    (uvicorn raises the signal again once it has stopped, so the process would die of it)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        stops = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in stops}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port`` (0: a free port); ``OSError`` if it cannot."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def url_of(settings: Settings) -> str:
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return f"http://{host or '0.0.0.0'}:{settings.port}"


def serve(backend: Backend, settings: Settings, say: Callable[[str], None]) -> None:
    """Serve until stopped. ``settings.port`` 0 picks a free port, announced by ``say``."""
    sock = bind(settings.host, settings.port)
    settings = attrs.evolve(settings, port=sock.getsockname()[1])
    url = url_of(settings)
    if settings.allow_control:
        say(f"fsm console: {url}/ (controls on; log in at {url}/login)")
        say(f"fsm console: token {settings.token}")
    else:
        say(f"fsm console: {url}/ (read-only)")
    config = uvicorn.Config(
        create_app(backend, settings),
        log_level="warning",
        access_log=False,
        server_header=False,
        lifespan="off",
    )
    try:
        _Server(config).run(sockets=[sock])
    finally:
        sock.close()
