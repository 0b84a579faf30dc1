"""Actions per second with 1, 2 and 4 `fsm worker` processes, on PostgreSQL and on SQLite.

The same workload in the same run: N three-step jobs whose steps await a simulated 2 ms
remote call and apply one ledger effect. Prints the throughput and the scaling against one
worker. The machine has 2 cores, so expect scaling to flatten past 2 processes.

    python benchmarks/workers.py [--actions 600] [--postgres URL]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

import fsm

TESTS = Path(__file__).resolve().parent.parent / "tests" / "support"
sys.path.insert(0, str(TESTS))

from actions import start_transfers  # noqa: E402  (the tests' kind, shared on purpose)


def run(url: str, workers: int, n: int, env: dict[str, str], logs: Path) -> float:
    """Seconds for ``workers`` running processes to finish ``n`` jobs (start-up excluded)."""
    store = fsm.open_store(url)
    log_files = [logs / f"{uuid.uuid4().hex}.log" for _ in range(workers)]
    command = [sys.executable, "-m", "fsm.cli", "worker", "--db", url, "--module", "actions"]
    command += ["--services", "actions:services", "--concurrency", "16"]
    procs = [
        subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log.open("wb"))
        for log in log_files
    ]
    while not all(log.exists() and "started" in log.read_text() for log in log_files):
        time.sleep(0.01)
    t0 = time.perf_counter()
    start_transfers(store, n)
    while store.live_ids():
        time.sleep(0.01)
    elapsed = time.perf_counter() - t0
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait()
    store.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--actions", type=int, default=600)
    parser.add_argument(
        "--postgres",
        default=os.environ.get("FSM_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(TESTS), "FSM_TEST_STEP_SECONDS": "0.002"}
    print(f"{args.actions} jobs of 3 steps (2 ms remote call each), concurrency 16 per worker")
    print(f"{'database':10s} {'workers':>7s} {'actions/s':>10s} {'steps/s':>9s} {'scaling':>8s}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("postgres", "sqlite"):
            base = None
            for workers in (1, 2, 4):
                if name == "sqlite":
                    url = f"sqlite:///{tmp}/w{workers}.sqlite"
                else:
                    schema = "fsm_b_" + uuid.uuid4().hex[:8]
                    with psycopg.connect(args.postgres, autocommit=True) as c:
                        c.execute(f"CREATE SCHEMA {schema}")
                    url = f"{args.postgres}?options=-c%20search_path%3D{schema}"
                seconds = run(url, workers, args.actions, env, Path(tmp))
                rate = args.actions / seconds
                base = base or rate
                print(f"{name:10s} {workers:7d} {rate:10.0f} {3 * rate:9.0f} {rate / base:7.2f}x")
                if name == "postgres":
                    with psycopg.connect(args.postgres, autocommit=True) as c:
                        c.execute(f"DROP SCHEMA {schema} CASCADE")


if __name__ == "__main__":
    main()
