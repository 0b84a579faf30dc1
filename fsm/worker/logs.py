"""How the ``fsm worker`` process logs: one printable line, or one JSON object, per record.

Configured by `fsm.worker.run_worker` for its own process; a program that embeds a `Worker`
keeps its own logging.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson

from fsm.failures import one_line


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, then the fields a record
    about an action carries (`fsm.executor.drivelog`, the worker's outcome line): ``action``,
    ``kind``, ``state``, ``key`` (the step's idempotency key), and for an outcome ``status``,
    ``steps``, ``error``; ``exception`` when the record has a traceback."""

    FIELDS = ("action", "kind", "state", "key", "status", "steps", "error")

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": record.created,
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in self.FIELDS:
            if name in record.__dict__:
                entry[name] = record.__dict__[name]
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class LineFormatter(logging.Formatter):
    """One record, one line, printable: libpq's errors span several lines, and a remote's
    error text may carry terminal escapes (shown escaped, as ``fsm actions`` does)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = one_line(record.message)
        return super().formatMessage(record)


def configure_logging(json_logs: bool) -> None:
    """The ``fsm worker`` process's logging: one line (or one JSON object) per record on
    stderr, and the executor's per-step chatter left out."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_logs else LineFormatter("%(asctime)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging.getLogger("fsm.executor").setLevel(logging.WARNING)
