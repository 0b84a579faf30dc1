"""Cost of an event: `Executor.send` and the step that takes it, against raw sqlite3, in one run.

N actions wait in a state with an event row; each gets one event (`Executor.send`: the
event stored, counted on the row, the action made due, in one transaction), then one
`run_due` drains them all (a worker's claims, each action's step reading its inbox and
writing its new checkpoint with the event taken, in one transaction). Figures, in
microseconds per event:

- send: the median of N sequential sends;
- take: the drain's wall time / N (claims in batches, steps at the executor's concurrency);
- send + take.

The baseline is raw ``sqlite3`` doing the same durable work by hand, on the same settings
(WAL, synchronous=NORMAL): a send is BEGIN IMMEDIATE, INSERT of the event, UPDATE of the
action's wake-up and count, COMMIT; a take is BEGIN IMMEDIATE, SELECT of the pending event,
UPDATE of the action with a *new* payload, UPDATE of the event as taken, INSERT of a log
row, COMMIT. Ratios are fsm / baseline, measured in the same run.

    python benchmarks/events.py [--actions 500] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import tempfile
import time

import attrs

import fsm
from fsm import Kind, State, StepContext


@attrs.frozen
class Ping:
    n: int


@attrs.frozen
class Box:
    key: str
    pings: int = 0
    note: str = "x" * 64


def pinged(ctx: StepContext[None], box: Box, ping: Ping) -> Box:
    return attrs.evolve(box, pings=box.pings + ping.n)


class Waiter(Kind[Box, None]):
    name = "waiter"
    waiting = State.wait(initial=True)
    heard = State.wait()
    over = State.done()
    transitions = (
        waiting.to(heard, on=Ping, effect=pinged),
        heard.to(over, on=Ping),
    )

    @staticmethod
    def action_id(box: Box) -> str:
        return box.key


def fsm_run(path: str, n: int) -> tuple[float, float]:
    """(median send, take per event), microseconds, on a new SQLite file."""
    store = fsm.Store.sqlite(path)
    ex: fsm.Executor[None] = fsm.Executor(store, kinds=[Waiter])

    async def scene() -> tuple[float, float]:
        for i in range(n):
            await ex.drive(Waiter.create(Box(f"w{i}")))
        sends = []
        for i in range(n):
            t0 = time.perf_counter_ns()
            sent = await ex.send(f"w{i}", Ping(1), key="ping")
            sends.append((time.perf_counter_ns() - t0) / 1000)
            assert sent.status is fsm.SendStatus.SENT
        t0 = time.perf_counter_ns()
        report = await ex.run_due()
        took = (time.perf_counter_ns() - t0) / 1000 / n
        assert report.counts == {fsm.DriveStatus.PARKED: n}, report
        return statistics.median(sends), took

    try:
        return asyncio.run(scene())
    finally:
        store.close()


class RawEvents:
    """The same durable work through a bare ``sqlite3`` connection."""

    def __init__(self, path: str, n: int, payload_size: int) -> None:
        self.conn = c = sqlite3.connect(path, isolation_level=None)
        c.execute("PRAGMA journal_mode=wal")
        c.execute("PRAGMA synchronous=NORMAL")
        c.execute(
            "CREATE TABLE action (id TEXT PRIMARY KEY, state TEXT NOT NULL, payload TEXT NOT NULL,"
            " seq INTEGER NOT NULL, wake_at REAL, inbox INTEGER NOT NULL, notified BOOLEAN)"
        )
        c.execute(
            "CREATE TABLE event (id INTEGER PRIMARY KEY, action_id TEXT NOT NULL, key TEXT NOT "
            "NULL, name TEXT NOT NULL, payload TEXT NOT NULL, sent_at REAL NOT NULL, consumed_at "
            "REAL, consumed_seq INTEGER, UNIQUE (action_id, key))"
        )
        c.execute("CREATE INDEX event_pending ON event (action_id, id) WHERE consumed_at IS NULL")
        c.execute(
            "CREATE TABLE log (id INTEGER PRIMARY KEY, action_id TEXT NOT NULL, seq INTEGER NOT "
            "NULL, from_state TEXT, to_state TEXT, at REAL NOT NULL)"
        )
        self.payload = "p" * payload_size
        c.execute("BEGIN")
        for i in range(n):
            c.execute(
                "INSERT INTO action VALUES (?, 'waiting', ?, 1, NULL, 0, 0)",
                (f"w{i}", self.payload),
            )
        c.execute("COMMIT")

    def send(self, i: int) -> None:
        c, now = self.conn, time.time()
        c.execute("BEGIN IMMEDIATE")
        c.execute(
            "INSERT INTO event (action_id, key, name, payload, sent_at) VALUES (?, 'ping', "
            "'Ping', '{\"n\":1}', ?) ON CONFLICT DO NOTHING",
            (f"w{i}", now),
        )
        c.execute(
            "UPDATE action SET wake_at = ?, notified = 1, inbox = inbox + 1 WHERE id = ?",
            (now, f"w{i}"),
        )
        c.execute("COMMIT")

    def take(self, i: int) -> None:
        c, now, action = self.conn, time.time(), f"w{i}"
        c.execute("BEGIN IMMEDIATE")
        (event,) = c.execute(
            "SELECT id FROM event WHERE action_id = ? AND consumed_at IS NULL ORDER BY id LIMIT 1",
            (action,),
        ).fetchone()
        payload = self.payload[:-8] + f"{i:08d}"
        c.execute(
            "UPDATE action SET state = 'heard', payload = ?, seq = seq + 1, wake_at = NULL, "
            "inbox = inbox - 1 WHERE id = ?",
            (payload, action),
        )
        c.execute("UPDATE event SET consumed_at = ?, consumed_seq = 1 WHERE id = ?", (now, event))
        c.execute(
            "INSERT INTO log (action_id, seq, from_state, to_state, at) VALUES (?, 1, "
            "'waiting', 'heard', ?)",
            (action, now),
        )
        c.execute("COMMIT")

    def run(self, n: int) -> tuple[float, float]:
        sends = []
        for i in range(n):
            t0 = time.perf_counter_ns()
            self.send(i)
            sends.append((time.perf_counter_ns() - t0) / 1000)
        t0 = time.perf_counter_ns()
        for i in range(n):
            self.take(i)
        return statistics.median(sends), (time.perf_counter_ns() - t0) / 1000 / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actions", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    n = args.actions
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            path = os.path.join(tmp, f"fsm{run}.sqlite")
            f_send, f_take = fsm_run(path, n)
            size = (
                sqlite3.connect(path)
                .execute("SELECT length(payload) FROM fsm_action LIMIT 1")
                .fetchone()[0]
            )
            raw = RawEvents(os.path.join(tmp, f"raw{run}.sqlite"), n, size)
            r_send, r_take = raw.run(n)
            raw.conn.close()
            rows.append((f_send, f_take, r_send, r_take))
    print(f"{n} actions, one event each; microseconds per event, median of {args.runs} runs")
    f_send, f_take, r_send, r_take = (statistics.median(col) for col in zip(*rows, strict=True))
    print(f"{'':14}{'fsm':>10}{'raw sqlite3':>14}{'ratio':>8}")
    for label, f, r in (
        ("send", f_send, r_send),
        ("take", f_take, r_take),
        ("send + take", f_send + f_take, r_send + r_take),
    ):
        print(f"{label:14}{f:10.1f}{r:14.1f}{f / r:7.2f}x")


if __name__ == "__main__":
    main()
