"""The step protocol: what one `advance` returns and what an action must offer.

This is the seed's contract (bark's ``WalletAction`` / ``Advance``) in Python:

* ``advance(ctx)`` does the side effects of exactly one step and returns an outcome:
  `Next` (persist and advance again at once), `Park` (persist and stop, or sleep and go on),
  `Done` or `Failed` (terminal: release everything, delete the checkpoint).
* Raising `fsm.Rejected` means the remote side refused and changed nothing: the executor calls
  ``on_rejection``. Any other exception is transient: the executor calls ``on_retry``. Both
  handlers run on the action as it was *before* the failed step.
* ``advance`` must be re-entrant and its effects idempotent: after a crash the same step runs
  again from the last checkpoint. `StepContext.idempotency_key` is the same on every re-run of
  a step, so it can be handed to the outside world to deduplicate.
"""

from __future__ import annotations

import enum
import types
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeAlias, TypeVar

import attrs

from fsm.blocking import SHARED, BlockingPool
from fsm.errors import Rejected, ResourceConflict
from fsm.ids import idempotency_key as make_key
from fsm.retry import SEED_POLICY, RetryPolicy

if TYPE_CHECKING:
    import logging

    from fsm.events import Delivered

S = TypeVar("S")
"""The services object handed to every step (bark's ``Wallet``)."""


@attrs.frozen(slots=True)
class Next:
    """Persist ``state`` as the new checkpoint, reset the retry counter, advance again at once."""

    state: Action[Any]


@attrs.frozen(slots=True)
class Park:
    """Persist ``state`` and stop.

    With ``wake_after`` (seconds) the action is due again after that delay: an ``UNTIL_DONE``
    drive sleeps and goes on, and the wake-up time is stored on the row so a worker or
    ``run_due`` finds it after a restart. Without it, only `Executor.notify` or
    `Executor.resume_all` drive it again. ``error`` is reported to the caller of the drive.
    """

    state: Action[Any]
    wake_after: float | None = None
    error: BaseException | None = None


@attrs.frozen(slots=True)
class Done:
    """Terminal success: release every resource the action holds and delete its checkpoint.

    ``state`` names the terminal state reached (declarative kinds set it); the drive's result
    and the kept outcome report it instead of the last non-terminal state.
    """

    state: str | None = None


@attrs.frozen(slots=True)
class Failed:
    """Terminal failure: the same clean-up as `Done`; ``error`` reaches the caller.

    ``state`` names the terminal state reached, as for `Done`.
    """

    error: BaseException | str
    state: str | None = None


@attrs.frozen(slots=True)
class Cancellation:
    """An operator's cancel of an action (`fsm.Controls.cancel`): why, and who asked."""

    reason: str
    by: str | None = None

    @property
    def text(self) -> str:
        """How the cancel is recorded in the history and as the action's cause:
        ``cancelled by alice: customer asked`` (``cancelled: ...`` when nobody is named)."""
        who = f" by {self.by}" if self.by else ""
        return f"cancelled{who}: {self.reason}"


Outcome: TypeAlias = Next | Park | Done | Failed
MaybeAwaitable: TypeAlias = Outcome | Awaitable[Outcome]
Upcaster: TypeAlias = Callable[[dict[str, Any]], dict[str, Any]]
"""Turns the stored data dict of version N into the data dict of version N + 1."""


class DriveMode(enum.Enum):
    """How far one drive goes."""

    UNTIL_PARK_OR_DONE = "until_park_or_done"
    """Stop at the first park or terminal outcome (every background drive)."""
    UNTIL_DONE = "until_done"
    """Sleep through parks that carry ``wake_after``; stop at a park without one, or at the end."""


class StepContext(Generic[S]):
    """What one step may use: the services, its idempotency key, and the action's resources.

    Resources are named claims (the seed's vtxo locks, generalised). `acquire` and `release`
    are recorded and written in the same transaction as the step's checkpoint, so a crash can
    never leave a resource held by an action that does not exist. `acquire` also checks at once
    and raises `fsm.ResourceConflict` if another action holds the name, so a step can take its
    resources before doing anything irreversible.
    """

    __slots__ = (
        "_acquired",
        "_held",
        "_holder_of",
        "_inbox",
        "_load_held",
        "_memo",
        "_outbox",
        "_released",
        "action_id",
        "attempts",
        "incarnation",
        "log",
        "now",
        "retry",
        "seq",
        "services",
        "threads",
    )

    def __init__(
        self,
        services: S,
        action_id: str,
        seq: int,
        attempts: int,
        now: float,
        retry: RetryPolicy,
        log: logging.LoggerAdapter[logging.Logger],
        load_held: Callable[[], Iterable[str]],
        holder_of: Callable[[str], str | None],
        incarnation: str = "",
        threads: BlockingPool | None = None,
        inbox: Inbox | None = None,
    ) -> None:
        self.services = services
        self.action_id = action_id
        self.incarnation = incarnation
        self.seq = seq
        self.attempts = attempts
        self.now = now
        self.retry = retry
        self.log = log
        self._load_held = load_held
        self._holder_of = holder_of
        self._held: set[str] | None = None
        self._acquired: list[str] = []
        self._released: list[str] = []
        self._memo: dict[Any, Any] | None = None
        self._inbox = inbox
        self._outbox: Outbox | None = None
        self.threads = SHARED if threads is None else threads
        """The executor's pool for blocking callbacks (``Executor(blocking_threads=...)``):
        ``await ctx.threads.run(fn, *args)`` runs one blocking call off the event loop."""

    @property
    def memo(self) -> dict[Any, Any]:
        """Scratch space for this one run of this step, keyed by whatever the kind chooses.

        Guards and the effect of one step often need the same remote read (a payment status):
        keep it here so they decide on one answer and poll once. It lives exactly as long as
        the context: a retry, a re-run after a crash or the second run of a double drive
        starts with an empty memo, so nothing stale survives into another step.
        """
        if self._memo is None:
            self._memo = {}
        return self._memo

    @property
    def idempotency_key(self) -> str:
        """``<action id>~<incarnation>.<step sequence>``: identical on every re-run of this step.

        Unique per incarnation: an id started again after its action ended gets a new
        incarnation, so its steps never repeat a key the outside world has seen. ``seq``
        advances only when a step changes the checkpoint (an `Executor.update` does not
        advance it, so a step being retried keeps its key).
        """
        return make_key(self.action_id, self.incarnation, self.seq)

    @property
    def resources(self) -> frozenset[str]:
        """The resources this action holds, including this step's pending changes."""
        return frozenset(self._held_set())

    def holds(self, name: str) -> bool:
        return name in self._held_set()

    def acquire(self, *names: str) -> None:
        """Take ``names`` for this action, written with the step's checkpoint.

        Raises `fsm.ResourceConflict` now if another live action holds one of them. One
        read per name not yet known to be held (its holder); the list of what the action
        holds is read only if the step asks for it (`resources`, `holds`, `release`): each
        read is a round trip on PostgreSQL, on the event loop's thread.
        """
        held = self._held
        for name in names:
            if name in (self._acquired if held is None else held):
                continue
            holder = self._holder_of(name)
            if holder is not None and holder != self.action_id:
                raise ResourceConflict(name, holder, self.action_id)
            if holder is not None and held is None:
                continue  # held since an earlier step: nothing changes
            if held is not None:
                held.add(name)
            if name in self._released:
                self._released.remove(name)
            else:
                self._acquired.append(name)

    def release(self, *names: str) -> None:
        """Give ``names`` back, written with the step's checkpoint (no-op if not held)."""
        held = self._held_set()
        for name in names:
            if name not in held:
                continue
            held.discard(name)
            if name in self._acquired:
                self._acquired.remove(name)
            else:
                self._released.append(name)

    def resource_changes(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(acquired, released) by this step, for the executor to write."""
        return tuple(self._acquired), tuple(self._released)

    # -- events and children -----------------------------------------------------------

    @property
    def has_events(self) -> bool:
        """Whether the action may have pending events (the row's count at the claim, or a
        send seen since): when False, `events` is not read."""
        return self._inbox is not None and self._inbox.pending > 0

    def events(self, names: Sequence[str]) -> Sequence[Delivered]:
        """The action's pending events named ``names`` (the ones this state can take), in
        the order they were sent. The inbox is read once per step, for every name the drive
        may ask of it (the state's event rows, a queued cancel)."""
        inbox = self._inbox
        if inbox is None:
            return ()
        loaded = inbox.loaded
        if loaded is None:
            loaded = inbox.loaded = tuple(inbox.load())
        return tuple(e for e in loaded if e.name in names)

    def consume_event(self, event_id: int) -> None:
        """This step takes the event: it leaves the inbox in the checkpoint's transaction."""
        out = self.outbox
        if out.consumed is not None:
            raise RuntimeError("a step consumes at most one event")
        out.consumed = event_id

    def drop_event(self, event_id: int, why: str) -> None:
        """Set an event aside that can never be taken (``why`` is kept on its row)."""
        self.outbox.dropped.append((event_id, why))

    def spawn(self, child: Action[Any]) -> str:
        """Start ``child`` as a child of this action, in the transaction of this step's
        checkpoint: a crash never leaves a child without its parent's record of it, nor a
        parent waiting for a child that was never started. When the child ends, the parent
        receives `fsm.ChildEnded` (written in the transaction that ends the child). Returns
        the child's id; keep it in the data to know whom to wait for. A live action already
        holding the id makes the step's write fail (retried with backoff), so a re-run of
        this step after a crash cannot start the child twice.
        """
        out = self.outbox
        if any(c.id == child.id for c in out.spawned):
            raise ValueError(f"this step already spawns a child with id {child.id!r}")
        out.spawned.append(child)
        return child.id

    @property
    def outbox(self) -> Outbox:
        """What this step does besides its checkpoint: events taken or set aside, children."""
        out = self._outbox
        if out is None:
            out = self._outbox = Outbox()
        return out

    def changes(self) -> Outbox | None:
        """The step's outbox, or None when it has nothing in it (the usual step)."""
        return self._outbox

    def _held_set(self) -> set[str]:
        """What the action holds with this step's changes; read once, when first asked (a
        release reads it first, so only acquisitions can precede the read)."""
        if self._held is None:
            self._held = set(self._load_held()).union(self._acquired)
        return self._held


class Inbox:
    """What a drive knows of its action's pending events: how many (the row's count at the
    claim, plus sends seen since), and how to read them (once per step)."""

    __slots__ = ("load", "loaded", "pending")

    def __init__(self, pending: int, load: Callable[[], Iterable[Delivered]]) -> None:
        self.pending = pending
        self.load = load
        self.loaded: tuple[Delivered, ...] | None = None


class Outbox:
    """A step's writes besides its checkpoint, made in the same transaction."""

    __slots__ = ("consumed", "dropped", "spawned")

    def __init__(self) -> None:
        self.consumed: int | None = None
        self.dropped: list[tuple[int, str]] = []
        self.spawned: list[Action[Any]] = []


class Action(Generic[S]):
    """Base class for a hand-written action kind, as bark writes them.

    Subclass it (usually as an attrs class: its fields are the checkpoint), set ``name``
    (the kind name stored on the row), implement `id` and `advance`. `on_retry` defaults to
    the seed's park-with-backoff, `on_rejection` to `Failed`. ``state`` names the current
    phase for logs, the transition log and diagrams; by default it is the class name.
    ``version`` and ``upcasters`` (``{n: fn(payload_dict_vn) -> payload_dict_vn+1}``) work as
    on a declarative kind, on the whole payload. ``services`` (optional): a no-argument
    callable building ``S`` for ``fsm worker``. ``blocking = True`` says a synchronous
    `advance` (and `on_retry`, `on_rejection`) blocks, on a client library or on the CPU:
    the executor then runs it on its thread pool (`fsm.blocking`) so other drives go on.
    """

    name: ClassVar[str]
    blocking: ClassVar[bool] = False
    version: ClassVar[int] = 1
    upcasters: ClassVar[Mapping[int, Upcaster]] = types.MappingProxyType({})
    services: ClassVar[Callable[[], Any] | None] = None

    @property
    def id(self) -> str:
        raise NotImplementedError(f"{type(self).__name__} must define the `id` property")

    @property
    def state(self) -> str:
        return type(self).__name__

    def advance(self, ctx: StepContext[S]) -> MaybeAwaitable:
        raise NotImplementedError(f"{type(self).__name__} must define `advance`")

    def policy(self, default: RetryPolicy) -> RetryPolicy:
        """The retry policy for an error raised in this state (default: the executor's).

        The executor asks it to tell transient errors from errors that mean the code is
        wrong (`RetryPolicy.is_broken`) before it calls `on_retry`.
        """
        return default

    def step_timeout(self) -> float | None:
        """Seconds the next step may run before it is cancelled (None: the executor's)."""
        return None

    def on_retry(self, ctx: StepContext[S], attempts: int, error: BaseException) -> MaybeAwaitable:
        """Transient error: park this (pre-step) state and retry after the policy's delay."""
        return park_with_backoff(self, attempts, ctx.retry, error)

    def on_rejection(self, ctx: StepContext[S], error: Rejected) -> MaybeAwaitable:
        """The remote side refused and changed nothing: fail (every resource is released)."""
        return Failed(error)

    def event_names(self) -> tuple[str, ...]:
        """The names of the events a step in this state can take (a declarative kind's event
        rows); a drive reads only those from the inbox (and a queued cancel)."""
        return ()

    def on_cancel(self, cancel: Cancellation) -> Next | Done | Failed | None:
        """An operator cancels the action in this state: where it goes (the cancel route).

        `Next(compensating_state)`: written as the new checkpoint and made due, so a worker
        runs the compensation as ordinary steps; `Done` or `Failed`: the action ends now
        (nothing to undo); ``None`` (the default): this state cannot be cancelled, and the
        cancel is refused. It runs in the operator's process, under the action's lease,
        with no services and no step context: decide, do not act (the compensation's
        effects belong in the steps it leads to). ``cancel.text`` becomes the action's cause.
        """
        return None


def park_with_backoff(
    state: Action[Any],
    attempts: int,
    policy: RetryPolicy = SEED_POLICY,
    error: BaseException | None = None,
) -> Park:
    """The seed's default retry: park the unchanged state, wake after the backoff delay.

    ``error`` rides on the park only when the policy says ``report_errors``.
    """
    return Park(
        state,
        wake_after=policy.delay(attempts),
        error=error if policy.report_errors else None,
    )


__all__ = [
    "Action",
    "Cancellation",
    "Done",
    "DriveMode",
    "Failed",
    "MaybeAwaitable",
    "Next",
    "Outcome",
    "Park",
    "Rejected",
    "StepContext",
    "Upcaster",
    "park_with_backoff",
]
