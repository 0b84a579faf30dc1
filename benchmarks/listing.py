"""The operator's reads at N rows, in-process on SQLite: is the first page flat as tables grow?

For each size N given, a SQLite file gets N live actions, N kept outcomes and N log rows
(`fsm.testing.bulk`), and the script prints the median microseconds (of 30 calls) of the
first page of 50 of `Store.list_actions` (unfiltered, ``failed``, ``quarantined``, ended
since a time), of `Store.inspect` and of `Store.history` of one action. The same figures at
every size mean a page costs the same at a million rows as at a thousand. (At 1,000 rows
the quarantined page holds 1 row, not 50: it is cheaper there.)

    python benchmarks/listing.py [N ...]      (default: 1000 100000 1000000)

The machine may be shared: run it three times and read the min and median.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

import fsm
from fsm.testing import bulk


def median_us(call: Callable[[], object], repeat: int = 30) -> float:
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        call()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1e6


def measure(store: fsm.Store, rows: int) -> str:
    """The medians of the reads on a table of ``rows`` (see above), as one line."""
    one = f"a{rows // 20:09d}"
    since = bulk.NOW - 100_000 + rows - 500
    calls: dict[str, Callable[[], object]] = {}
    for name, where in (
        ("page", fsm.ActionFilter()),
        ("failed", fsm.ActionFilter(statuses=("failed",))),
        ("quarantined", fsm.ActionFilter(statuses=("quarantined",))),
        ("ended since", fsm.ActionFilter(statuses=("ended",), since=since)),
    ):
        calls[name] = lambda w=where: store.list_actions(w, limit=50, now=bulk.NOW)
    calls["inspect"] = lambda: store.inspect(one)
    calls["history"] = lambda: store.history(one)
    return " | ".join(f"{n} {median_us(c):.0f}" for n, c in calls.items())


def main() -> None:
    sizes = [int(arg) for arg in sys.argv[1:]] or [1_000, 100_000, 1_000_000]
    with tempfile.TemporaryDirectory() as tmp:
        for rows in sizes:
            url = os.path.join(tmp, f"t{rows}.sqlite")
            bulk.fill(url, rows)
            bulk.fill_ended(url, rows)
            bulk.fill_log(url, rows)
            store = fsm.open_store(url, readonly=True)
            try:
                figures = measure(store, rows)
            finally:
                store.close()
            print(f"{rows:>9,} rows: {figures} us", flush=True)


if __name__ == "__main__":
    main()
