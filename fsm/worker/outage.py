"""How a worker waits out a database outage: exponential backoff with jitter, and its limits.

Shared by the worker's loop and its PostgreSQL listener, which both reconnect the same way.
"""

from __future__ import annotations

import random

import attrs

from fsm.failures import one_line

MAX_OUTAGE = 300.0
"""Default seconds a worker keeps trying through a database outage before it exits."""
BACKOFF_FIRST = 0.1
"""Seconds before the first retry after a database failure; doubles with each failure."""
BACKOFF_CAP = 5.0
"""The longest wait between two attempts during an outage."""


def backoff(failures: int) -> float:
    """The wait after the ``failures``-th failure in a row: doubling, capped, with jitter.

    The jitter (a random 50-100% of the step) keeps a fleet of workers that lost the same
    server from reconnecting in lockstep.
    """
    step = min(BACKOFF_CAP, BACKOFF_FIRST * 2.0 ** min(failures - 1, 30))
    return step * random.uniform(0.5, 1.0)


def error_line(exc: BaseException) -> str:
    """An error's text on one printable line (libpq's messages span several)."""
    return one_line(str(exc))


@attrs.define
class Outage:
    """A run of failed database calls in the worker's loop, since ``started`` (monotonic)."""

    started: float
    failures: int = 0
