"""`Controls`: what an operator does to one live action, each written like a step.

retry (wake a parked or broken action now, optionally with a fresh retry budget), notify,
cancel (the kind's declared cancel route), stop (remove it, no compensation) and
unquarantine. Every control but notify takes the action's lease as a driver would (claim ->
fenced write -> release): it never runs beside a step. While a driver holds the action the
control refuses with `ActionBusy`, or with ``wait`` keeps trying, with backoff, until the
driver lets go; then it acts on the checkpoint that driver left. Its write, the release of
the lease and its row in the transition log (``via`` retry_now, notify, cancel, stop,
unquarantine; who and why in the error column) are one transaction
(`fsm.store.controls`). Notify is written without the lease, on purpose: a notify that comes
while a driver holds the action must not be refused or wait, and the ``notified`` mark it
sets is read by that driver's own fenced write, which then leaves the action due.

A cancel does not run the compensation itself: it writes the route's state as the new
checkpoint (the data unchanged, the step sequence advanced so the compensation's steps get
keys of their own) and makes the action due, so a worker, which has the kind's services and
its retries, runs it; a route to a terminal state ends the action at once. The controls are
synchronous (the command line, scripts); from async code, a ``wait`` belongs on another
thread (``asyncio.to_thread``), since it sleeps.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Container, Iterable, Iterator, Mapping
from typing import Any

from fsm.codec import KindCodec
from fsm.errors import ActionBusy, ControlRefused, KindError, NoCancelRoute, NoSuchAction
from fsm.executor.claims import foreign, let_go, readable
from fsm.executor.sending import queue_cancel
from fsm.failures import error_text, with_cause
from fsm.protocol import Action, Cancellation, Done, Failed, Next
from fsm.registry import Registry
from fsm.results import Controlled
from fsm.store import Claimed, ClaimMiss, LogEntry, Store, new_owner
from fsm.store.controls import Taken

log = logging.getLogger(__name__)

VIAS: Mapping[str, str] = {
    "retry": "retry_now",
    "notify": "notify",
    "cancel": "cancel",
    "stop": "stop",
    "unquarantine": "unquarantine",
}
"""The transition log's ``via`` of each control. A retry is ``retry_now``: plain ``retry``
already names the kind's own retry of a transient error."""

FIRST_PAUSE = 0.05
LONGEST_PAUSE = 1.0
"""Seconds between two tries of a waiting control: doubling from the first to the longest."""


def note(verb: str, by: str | None, reason: str | None) -> str:
    """How a control is recorded: ``stopped by alice: duplicate order`` (storable)."""
    who = f" by {by}" if by else ""
    why = f": {reason}" if reason else ""
    text = error_text(f"{verb}{who}{why}")
    assert text is not None
    return text


class Controls:
    """The operator's controls over the actions of one store.

    ``kinds`` (or ``registry``): the kinds whose rows a cancel may read (a cancel needs the
    kind's cancel route; the other controls need no kind). ``owner``: the lease owner token
    the controls claim with (default: a new one); ``driving``: ids some executor of this
    process is driving with that owner, which a control treats as busy (`Executor.controls`
    passes its own). ``clock`` (default `Store.now`) and ``sleep`` can be replaced in tests.
    """

    def __init__(
        self,
        store: Store,
        kinds: Iterable[Any] = (),
        *,
        registry: Registry | None = None,
        clock: Callable[[], float] | None = None,
        owner: str | None = None,
        driving: Container[str] = frozenset(),
        heard: Callable[[str], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store = store
        self.registry = registry if registry is not None else Registry()
        for kind in kinds:
            self.registry.register(kind)
        self.clock = clock if clock is not None else store.now
        self.owner = owner or new_owner()
        self.driving = driving
        self.heard = heard
        """Told of a cancel queued for an action (the executor's own controls: its drive of
        that action, if any, takes the cancel at its next step boundary)."""
        self.sleep = sleep

    def retry(
        self,
        action_id: str,
        *,
        reset_attempts: bool = False,
        by: str | None = None,
        reason: str | None = None,
        wait: float = 0.0,
    ) -> Controlled:
        """Make a parked or broken action due now (after a fix is deployed, say).

        The broken mark is cleared; ``reset_attempts`` also gives it a fresh retry budget
        (and backoff). The checkpoint and its step sequence stay: the step runs again under
        the same idempotency key. Raises `NoSuchAction`, `ActionBusy`, or `ControlRefused`
        for a quarantined row (release it with `unquarantine`).
        """
        taken = self._take(action_id, wait)
        c = taken.claimed
        with self._holding(c):
            _refuse_quarantined(taken, "retry")
        text = note("retried", by, reason)
        attempts = 0 if reset_attempts else c.attempts
        now = self.clock()
        columns: dict[str, Any] = {"wake_at": now, "broken": False}
        if reset_attempts:
            columns["attempts"] = 0
        self._release(c, columns, self._entry(c, c.state, "due", "retry", attempts, text), now)
        log.info("action %s: %s (due now)", action_id, text)
        return Controlled(action_id, "retry", c.kind, c.state, c.state, "due", text, None, attempts)

    def notify(
        self, action_id: str, *, by: str | None = None, reason: str | None = None
    ) -> Controlled:
        """An external event concerns the action: make it due now (`Store.mark_due`).

        Never refused for a driver holding the action: its next park leaves the action due
        (a notify is never lost). Raises `NoSuchAction`, or `ControlRefused` for a
        quarantined row.
        """
        text = note("notified", by, reason)
        found = self.store.control_writes.notify(action_id, self.clock(), text)
        if found is ClaimMiss.MISSING:
            raise NoSuchAction(f"no live action {action_id!r} to notify")
        if found is ClaimMiss.QUARANTINED:
            raise ControlRefused(_quarantined(action_id, "notify"))
        assert not isinstance(found, ClaimMiss)
        kind, state, attempts = found
        log.info("action %s: %s (due now)", action_id, text)
        return Controlled(action_id, "notify", kind, state, state, "due", text, None, attempts)

    def cancel(
        self, action_id: str, *, reason: str, by: str | None = None, wait: float = 0.0
    ) -> Controlled:
        """Cancel the action through the cancel route its kind declares for its state.

        A route to a step or wait state becomes the new checkpoint, due now, so a worker runs
        the compensation; a route to a terminal state ends the action now. Who and why
        (``cancelled by <by>: <reason>``) are logged and become the action's cause, kept
        with its end. Raises `NoCancelRoute` when its state has none, `ControlRefused` when
        the row cannot be read here (quarantined, a kind not loaded, a newer version),
        `NoSuchAction`.

        While a driver holds the action (after ``wait`` seconds), the cancel is queued in its
        inbox instead (outcome ``queued``): that drive takes it at its next step boundary,
        through the cancel route of the state it is in then (`fsm.executor.sending`).
        """
        if not reason or not reason.strip():
            raise ValueError("a cancel needs a reason (it is recorded with the cancel)")
        cancel = Cancellation(reason, by)
        text = error_text(cancel.text)
        assert text is not None
        try:
            taken = self._take(action_id, wait)
        except ActionBusy:
            return self._queue_cancel(action_id, cancel, text)
        c = taken.claimed
        now = self.clock()
        with self._holding(c):
            _refuse_quarantined(taken, "cancel")
            codec, action = self._decoded(c)
            try:
                outcome = action.on_cancel(cancel)
            except Exception as exc:  # the kind's bug: refused in one line, nothing written
                raise KindError(
                    f"{type(action).__name__}.on_cancel raised {type(exc).__name__}: {exc}"
                ) from exc
            if outcome is None:
                raise NoCancelRoute(_no_route(c, codec))
            if isinstance(outcome, Next):
                new = outcome.state
                if type(new) is not type(action) or new.id != action_id:
                    raise KindError(
                        f"{type(action).__name__}.on_cancel returned {new!r}: the cancel route "
                        "must keep the action's class and id"
                    )
                state, payload = codec.dump(new)
            elif not isinstance(outcome, Done | Failed):
                raise KindError(
                    f"{type(action).__name__}.on_cancel returned {outcome!r}; expected Next, "
                    "Done, Failed or None"
                )
        if isinstance(outcome, Next):
            columns = {
                "state": state,
                "payload": payload.decode(),
                "version": codec.version,
                "seq": c.seq + 1,
                "attempts": 0,
                "last_error": None,
                "cause": text,
                "broken": False,
                "wake_at": now,
            }
            self._release(c, columns, self._entry(c, state, "cancelled", "cancel", 0, text), now)
            log.info("action %s: %s; %s -> %s, due now", action_id, text, c.state, state)
            return Controlled(action_id, "cancel", c.kind, c.state, state, "cancelled", text)
        return self._end_cancelled(c, outcome, text, now)

    def stop(
        self,
        action_id: str,
        *,
        by: str | None = None,
        reason: str | None = None,
        wait: float = 0.0,
    ) -> Controlled:
        """Remove the action without compensation: its row and resources go, its end is kept
        as ``stopped`` with who and why. Works on quarantined rows too. Raises
        `NoSuchAction`, `ActionBusy`."""
        taken = self._take(action_id, wait)
        c = taken.claimed
        text = note("stopped", by, reason)
        now = self.clock()
        entry = LogEntry(c.kind, c.seq, c.state, None, "stopped", "stop", c.attempts, text, 0.0)
        with self._holding(c):
            self.store.finish(
                action_id,
                c.epoch,
                entry,
                now,
                status="stopped",
                state=c.state,
                error=text,
                cause=c.cause,
            )
        log.info("action %s: %s; removed, resources released", action_id, text)
        return Controlled(
            action_id, "stop", c.kind, c.state, None, "stopped", text, taken.quarantine, c.attempts
        )

    def unquarantine(
        self,
        action_id: str,
        *,
        by: str | None = None,
        reason: str | None = None,
        wait: float = 0.0,
    ) -> Controlled:
        """Put a quarantined row back into service (after a fix is deployed), due now.

        The result (and the history row) says why it had been set aside. When this
        `Controls` knows the row's kind, a row that still cannot be read is refused
        (`ControlRefused`) instead of being quarantined again by the next worker. Raises
        `NoSuchAction`, `ActionBusy`, and `ControlRefused` for a row that is not quarantined.
        """
        taken = self._take(action_id, wait)
        c = taken.claimed
        why = taken.quarantine
        with self._holding(c):
            if why is None:
                raise ControlRefused(f"action {action_id} is not quarantined")
            if c.kind in self.registry and foreign(self.registry, c) is None:
                decoded = readable(self.registry, c)
                if isinstance(decoded, str):
                    raise ControlRefused(
                        f"action {action_id} still cannot be read ({decoded}); deploy the fix "
                        "first, or stop it"
                    )
        text = error_text(f"{note('released', by, reason)} (was quarantined: {why})")
        assert text is not None
        now = self.clock()
        columns = {"quarantine": None, "wake_at": now}
        entry = self._entry(c, c.state, "released", "unquarantine", c.attempts, text)
        self._release(c, columns, entry, now)
        log.info("action %s: %s", action_id, text)
        return Controlled(
            action_id, "unquarantine", c.kind, c.state, c.state, "released", text, why, c.attempts
        )

    # -- the lease ------------------------------------------------------------------------

    def _queue_cancel(self, action_id: str, cancel: Cancellation, text: str) -> Controlled:
        """`cancel` of an action a driver holds: queued (see there)."""
        row = self.store.row(action_id)
        status, detail = queue_cancel(self.store, self.registry, action_id, cancel, self.clock())
        if status in ("unknown", "finished"):
            raise NoSuchAction(f"no live action {action_id!r}" + (f" ({detail})" if detail else ""))
        if status == "refused":
            raise NoCancelRoute(f"action {action_id}: {detail}")
        log.info("action %s: %s; queued (a driver holds it)", action_id, text)
        if self.heard is not None:
            self.heard(action_id)
        kind, state = (row.kind, row.state) if row is not None else ("?", "?")
        return Controlled(action_id, "cancel", kind, state, state, "queued", text)

    def _take(self, action_id: str, wait: float) -> Taken:
        """The action's lease for a control; while a driver holds it, refused (`ActionBusy`)
        or, for up to ``wait`` seconds, tried again with backoff."""
        if not wait >= 0:  # also refuses NaN
            raise ValueError(f"wait must be seconds >= 0, got {wait}")
        deadline = time.monotonic() + wait
        pause = FIRST_PAUSE
        while True:
            taken: Taken | ClaimMiss = ClaimMiss.BUSY
            if action_id not in self.driving:
                now = self.clock()
                taken = self.store.control_writes.take(
                    action_id, self.owner, now, now + self.store.lease_ttl
                )
            if isinstance(taken, Taken):
                return taken
            if taken is ClaimMiss.MISSING:
                raise NoSuchAction(f"no live action {action_id!r}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise ActionBusy(self._busy(action_id, wait))
            self.sleep(min(pause, left))
            pause = min(pause * 2, LONGEST_PAUSE)

    def _busy(self, action_id: str, wait: float) -> str:
        row = self.store.row(action_id)
        holder = f" by {row.lease_owner}" if row is not None and row.lease_owner else ""
        waited = f" (waited {wait:g}s)" if wait > 0 else ""
        return (
            f"action {action_id} is being driven{holder}{waited}; try again once it parks "
            "(a step is never interleaved with a control)"
        )

    def _release(self, c: Claimed, columns: Mapping[str, Any], entry: LogEntry, now: float) -> None:
        """The control's fenced write, its log row and the lease's release, all at once."""
        with self._holding(c):
            self.store.control_writes.release(c.id, c.epoch, columns, entry, now, wake=True)

    @contextlib.contextmanager
    def _holding(self, c: Claimed) -> Iterator[None]:
        """Whatever goes wrong while the control holds the lease, the lease is let go (a
        refusal, a kind's error, a failed write: nothing of the control was written)."""
        try:
            yield
        except BaseException:
            let_go(self.store, c.id, c.epoch)
            raise

    def _decoded(self, c: Claimed) -> tuple[KindCodec, Action[Any]]:
        """The held row's kind and action, or `ControlRefused` saying why this code cannot
        read it (never a quarantine: a control only reads)."""
        if c.kind not in self.registry:
            raise ControlRefused(
                f"action {c.id} is of kind {c.kind!r}, which is not loaded here "
                f"(known: {', '.join(self.registry) or 'none'}); name its module with --module"
            )
        why = foreign(self.registry, c)
        if why is None:
            decoded = readable(self.registry, c)
            if not isinstance(decoded, str):
                return decoded
            why = decoded
        raise ControlRefused(f"action {c.id} cannot be read here: {why}")

    @staticmethod
    def _entry(
        c: Claimed, to: str, outcome: str, control: str, attempts: int, text: str
    ) -> LogEntry:
        return LogEntry(c.kind, c.seq, c.state, to, outcome, VIAS[control], attempts, text, 0.0)

    def _end_cancelled(
        self, c: Claimed, outcome: Done | Failed, text: str, now: float
    ) -> Controlled:
        """A cancel route to a terminal state: the action ends now, its cause the cancel."""
        end = outcome.state or c.state
        status = "done" if isinstance(outcome, Done) else "failed"
        error = None if isinstance(outcome, Done) else error_text(with_cause(outcome.error, text))
        entry = LogEntry(c.kind, c.seq, c.state, None, status, "cancel", 0, error or text, 0.0)
        with self._holding(c):
            self.store.finish(
                c.id, c.epoch, entry, now, status=status, state=end, error=error, cause=text
            )
        log.info("action %s: %s; ended %s in %s", c.id, text, status, end)
        return Controlled(c.id, "cancel", c.kind, c.state, None, status, text)


def _refuse_quarantined(taken: Taken, control: str) -> None:
    if taken.quarantine is not None:
        raise ControlRefused(_quarantined(taken.claimed.id, control, taken.quarantine))


def _quarantined(action_id: str, control: str, why: str | None = None) -> str:
    reason = f" ({why})" if why else ""
    return (
        f"action {action_id} is quarantined{reason}, so it cannot be given a {control}: "
        "release it with unquarantine once the code can read it, or stop it"
    )


def _no_route(c: Claimed, codec: KindCodec) -> str:
    """A refused cancel, in the project's "what. Fix: how" shape."""
    compiled = getattr(codec, "compiled", None)
    routes = getattr(compiled, "cancellable", None)
    where = ""
    if routes is not None:
        where = f" (it has some from: {', '.join(routes)})" if routes else " (it declares none)"
    return (
        f"action {c.id}: kind {c.kind!r}, state {c.state!r}: no cancel route{where}. Fix: "
        f"declare one (`{c.state}.cancelled(to=...)`, or `on_cancel` on an Action), or stop "
        "the action (no compensation)"
    )
