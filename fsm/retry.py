"""Retry policy: how long a transiently failing action waits before its next attempt.

The default keeps the seed's curve, ``attempts**2 * base`` (1 s, 4 s, 9 s, ...), and adds what
the seed lacks: a cap, so a long outage does not push wake-ups days away, optional full jitter,
so many actions failing together do not retry in lock-step, and an optional attempts budget
that the declarative layer turns into a terminal failure.
"""

from __future__ import annotations

import random

import attrs

from fsm.errors import KindError


@attrs.frozen
class RetryPolicy:
    """Backoff for transient errors.

    ``base``: seconds for the first retry; the n-th waits ``n**2 * base``.
    ``cap``: the longest wait in seconds (``None``: unbounded, as in the seed).
    ``jitter``: full jitter, a uniform draw in ``[0, delay]``.
    ``max_attempts``: how many consecutive transient errors are tolerated (``None``: forever).
    ``report_errors``: attach the error to the retry's park, so the caller of the drive sees
    it (bark does this for offboards; by default a retry park carries no error and the error
    is only recorded on the row as ``last_error``).
    ``never_retry``: errors that mean the kind's code is wrong. A step raising one is not
    retried: the action is parked as *broken* (the error and the end of its traceback on the
    row, the retry budget untouched, never ended as failed) until a notify after the fix.
    fsm's own `fsm.KindError` (a wrong return type, an unstorable checkpoint) is always one.
    ``always_retry``: errors that are transient even when they match ``never_retry`` (a
    library that raises ``TypeError`` for a dropped connection, say).
    """

    base: float = attrs.field(default=1.0, validator=attrs.validators.ge(0))
    cap: float | None = attrs.field(default=3600.0)
    jitter: bool = False
    max_attempts: int | None = attrs.field(default=None)
    report_errors: bool = False
    never_retry: tuple[type[BaseException], ...] = (TypeError, AttributeError, NameError)
    always_retry: tuple[type[BaseException], ...] = ()

    @cap.validator
    def _check_cap(self, _: attrs.Attribute[float | None], value: float | None) -> None:
        if value is not None and value < 0:
            raise ValueError(f"RetryPolicy.cap must be >= 0 or None, got {value}")

    @max_attempts.validator
    def _check_max(self, _: attrs.Attribute[int | None], value: int | None) -> None:
        if value is not None and value < 1:
            raise ValueError(f"RetryPolicy.max_attempts must be >= 1 or None, got {value}")

    def delay(self, attempts: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after the ``attempts``-th consecutive transient error."""
        delay = float(max(attempts, 0)) ** 2 * self.base
        if self.cap is not None and delay > self.cap:
            delay = self.cap
        if self.jitter:
            delay = (rng or random).uniform(0.0, delay)
        return delay

    def is_broken(self, error: BaseException) -> bool:
        """True when ``error`` means the kind's code is wrong (see ``never_retry``)."""
        if isinstance(error, KindError):
            return True
        if self.always_retry and isinstance(error, self.always_retry):
            return False
        return isinstance(error, self.never_retry)

    def exhausted(self, attempts: int) -> bool:
        """True once ``attempts`` has used up the budget."""
        return self.max_attempts is not None and attempts >= self.max_attempts


SEED_POLICY = RetryPolicy()
"""The default: the seed's quadratic curve with base 1 s, capped at one hour, no jitter."""
