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
    FIELDS = ("action", "status", "state", "steps", "error")

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
        return orjson.dumps(entry).decode()


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
