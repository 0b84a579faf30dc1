"""Actions per second with 1, 2 and 4 `fsm worker` processes, on PostgreSQL and on SQLite.

The same workload in the same run: N three-step jobs whose steps await a simulated 2 ms
remote call and apply one ledger effect. Prints the throughput and the scaling against one
worker, and the CPU the run used: the workers' CPU seconds over their whole lives
(``resource.getrusage(RUSAGE_CHILDREN)``, start-up included), the part spent in the measured
window (from /proc, Linux), this process's own (it starts the jobs and polls for the end),
and the cores busy on average in the window. The machine has 2 cores: where the cores are
busy (close to 2.0), scaling cannot go on; issue 12's target, 4 workers >= 2.5x one, applies
where they are not.

    python benchmarks/workers.py [--actions 600] [--postgres URL]
"""

from __future__ import annotations

import argparse
import os
import resource
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

from actions import Ledger, start_transfers  # noqa: E402  (the tests' kind, shared on purpose)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a live process has used so far (0.0 without /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rusage_cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def run(
    url: str, workers: int, n: int, env: dict[str, str], logs: Path
) -> tuple[float, dict[str, float]]:
    """Seconds for ``workers`` running processes to finish ``n`` jobs (start-up excluded),
    and the CPU seconds used: ``life`` (the workers, whole lives), ``window`` (the workers,
    measured window only), ``self`` (this process, measured window)."""
    children_before = rusage_cpu(resource.RUSAGE_CHILDREN)
    store = fsm.open_store(url)
    Ledger.in_store(store)  # its table, before the workers race to create it
    log_files = [logs / f"{uuid.uuid4().hex}.log" for _ in range(workers)]
    command = [sys.executable, "-m", "fsm.cli", "worker", "--db", url, "--module", "actions"]
    command += ["--services", "actions:services", "--concurrency", "16"]
    procs = [
        subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log.open("wb"))
        for log in log_files
    ]
    while not all(log.exists() and "started" in log.read_text() for log in log_files):
        dead = [log.read_text() for p, log in zip(procs, log_files, strict=True) if p.poll()]
        if dead:
            raise SystemExit(f"a worker did not start: {dead[0]}")
        time.sleep(0.01)
    t0 = time.perf_counter()
    cpu0 = sum(cpu_seconds(p.pid) for p in procs)
    self0 = rusage_cpu(resource.RUSAGE_SELF)
    start_transfers(store, n)
    while store.live_ids():
        time.sleep(0.01)
    elapsed = time.perf_counter() - t0
    window = sum(cpu_seconds(p.pid) for p in procs) - cpu0
    own = rusage_cpu(resource.RUSAGE_SELF) - self0
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait()
    store.close()
    life = rusage_cpu(resource.RUSAGE_CHILDREN) - children_before
    return elapsed, {"life": life, "window": window, "self": own}


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
    print(
        f"{'database':10s} {'workers':>7s} {'actions/s':>10s} {'steps/s':>9s} {'scaling':>8s} "
        f"{'cpu life':>9s} {'cpu window':>10s} {'cpu self':>9s} {'cores busy':>10s}"
    )
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
                seconds, cpu = run(url, workers, args.actions, env, Path(tmp))
                rate = args.actions / seconds
                base = base or rate
                busy = (cpu["window"] + cpu["self"]) / seconds
                print(
                    f"{name:10s} {workers:7d} {rate:10.0f} {3 * rate:9.0f} {rate / base:7.2f}x "
                    f"{cpu['life']:8.2f}s {cpu['window']:9.2f}s {cpu['self']:8.2f}s "
                    f"{busy:10.2f}"
                )
                if name == "postgres":
                    with psycopg.connect(args.postgres, autocommit=True) as c:
                        c.execute(f"DROP SCHEMA {schema} CASCADE")


if __name__ == "__main__":
    main()
