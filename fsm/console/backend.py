"""The console's one way to the database: every read and control on one thread of its own.

The pages are served by an event loop; the store's calls block (SQLite, psycopg) and its
connections are per thread. So every call goes to a single worker thread that owns the
store: the loop never blocks on the database, the store sees one thread as the command line
does, and the console opens one connection, however many pages poll. Diagrams (Graphviz's
``dot``, a process per drawing) are drawn on the loop's default threads and kept by what they
show, so a page that polls costs a drawing only when the counts moved.

Everything here is the library's: `Store.state_census` (counts per state, with trouble),
`Store.list_actions` (keyset pages), `Store.inspect` (one action's report) decoded by the
kinds' `Registry`, `fsm.Controls` (the same controls, with the same fencing, as ``fsm actions
retry|...``), and the diagram IR with its overlays and SVG renderer.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import attrs

from fsm.diagram import KindGraph, Overlay, history_path, to_svg
from fsm.executor import Controlled, Controls
from fsm.registry import Registry, decode_report
from fsm.store import ActionFilter, ActionReport, ActionSummary, StateCensus, Store

T = TypeVar("T")

HISTORY = 200
"""Steps of history an action's page shows (the newest)."""

DRAWINGS = 64
"""Drawings kept (least recently used dropped first)."""


@attrs.frozen
class KindView:
    """One kind as its page shows it: the graph (``None``: its code is not loaded here) and
    its live actions per state."""

    name: str
    graph: KindGraph | None
    states: dict[str, StateCensus]

    @property
    def live(self) -> int:
        return sum(c.live for c in self.states.values())

    @property
    def broken(self) -> int:
        return sum(c.broken for c in self.states.values())

    @property
    def quarantined(self) -> int:
        return sum(c.quarantined for c in self.states.values())

    @property
    def unknown(self) -> dict[str, StateCensus]:
        """States with live actions that the loaded code does not have (an older version's)."""
        known = set() if self.graph is None else {s.name for s in self.graph.states}
        return {s: c for s, c in self.states.items() if self.graph is None or s not in known}

    def overlay(self) -> Overlay:
        """The counts the diagram shows: the live actions of the states it has."""
        known = set() if self.graph is None else {s.name for s in self.graph.states}
        return Overlay(counts={s: c.live for s, c in self.states.items() if s in known})


class Backend:
    """The store, the kinds, and the thread they are used on.

    ``fresh``: seconds a census (every live row read, `Store.state_census`) is served
    again before it is read anew, however many pages poll: the database pays one read per
    interval, not one per open page.
    """

    def __init__(
        self, store: Store, kinds: Sequence[Any], *, controls: bool, fresh: float = 0.0
    ) -> None:
        self.store = store
        self.fresh = fresh
        self._census: tuple[float, dict[tuple[str, str], StateCensus]] | None = None
        self.graphs: dict[str, KindGraph] = {}
        for cls in kinds:
            graph = cls.graph()
            self.graphs[graph.name] = graph
        self.registry = Registry(list(kinds))
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="fsm-console-store")
        self.controls = Controls(store, registry=self.registry) if controls else None
        self._drawings: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()

    def close(self) -> None:
        """Let the thread finish what it runs, then close the store on it."""
        self._thread.submit(self.store.close).result()
        self._thread.shutdown()

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` on the store's thread and wait for it without blocking the loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, functools.partial(fn, *args, **kwargs))

    # -- reads ----------------------------------------------------------------------------

    def now(self) -> float:
        return self.store.now()

    def census(self) -> dict[tuple[str, str], StateCensus]:
        """`Store.state_census` of every kind, read at most once per ``fresh`` seconds."""
        now = time.monotonic()
        if self._census is None or now - self._census[0] >= self.fresh:
            self._census = (now, self.store.state_census())
        return self._census[1]

    def kinds(self) -> list[KindView]:
        """Every kind loaded here or with live actions, by name."""
        by_kind: dict[str, dict[str, StateCensus]] = {name: {} for name in self.graphs}
        for (kind, state), census in self.census().items():
            by_kind.setdefault(kind, {})[state] = census
        return [KindView(k, self.graphs.get(k), s) for k, s in sorted(by_kind.items())]

    def kind(self, name: str) -> KindView | None:
        """One kind's view; ``None`` when it is neither loaded nor has live actions."""
        states = {s: c for (k, s), c in self.census().items() if k == name}
        if name not in self.graphs and not states:
            return None
        return KindView(name, self.graphs.get(name), states)

    def page(
        self, where: ActionFilter, after: str | None, limit: int
    ) -> tuple[list[ActionSummary], float]:
        """A listing page (newest first) and the clock its statuses were computed at."""
        now = self.store.now()
        return self.store.list_actions(where, after=after, limit=limit, now=now), now

    def report(self, action_id: str) -> ActionReport | None:
        """One action's report, its checkpoint decoded when its kind is loaded here."""
        found = self.store.inspect(action_id, history=HISTORY)
        return None if found is None else decode_report(self.registry, found)

    def control(self, name: str, action_id: str, **kwargs: Any) -> Controlled:
        """One of `fsm.Controls`' methods, as ``fsm actions NAME`` calls it (never waits:
        a driver holding the action makes it refuse, and the page says so)."""
        if self.controls is None:
            raise PermissionError("controls are off")
        method: Callable[..., Controlled] = getattr(self.controls, name)
        return method(action_id, **kwargs)

    # -- drawings -------------------------------------------------------------------------

    def action_overlay(self, report: ActionReport) -> Overlay | None:
        """The action's state and the path its history took, on its kind's graph; ``None``
        when the graph is not loaded or does not have the action's state."""
        graph = self.graphs.get(report.kind)
        if graph is None or report.state not in {s.name for s in graph.states}:
            return None
        return Overlay(current=report.state, path=history_path(graph, report.history))

    async def svg(self, kind: str, overlay: Overlay) -> bytes:
        """The kind's diagram with ``overlay``, as an ``<svg>`` element (no XML prolog)."""
        counts, path = tuple(sorted(overlay.counts.items())), tuple(sorted(overlay.path))
        key = (kind, overlay.current, counts, path)
        found = self._drawings.get(key)
        if found is None:
            graph = self.graphs[kind]
            drawn = await asyncio.to_thread(to_svg, graph, overlay)
            found = drawn[drawn.find(b"<svg") :]
            self._drawings[key] = found
            while len(self._drawings) > DRAWINGS:
                self._drawings.popitem(last=False)
        self._drawings.move_to_end(key)
        return found
