"""`fsm worker` processes through a PostgreSQL outage: killed backends and an unreachable server.

Starts N three-step jobs and W worker processes that reach PostgreSQL through a TCP proxy run
by this script on 127.0.0.1. While the jobs run it terminates every backend of those workers
(``pg_terminate_backend``, only the backends whose ``application_name`` this run set) at a
steady pace, and twice stops the proxy for a while (connections cut, then refused), which is
what a server restart or a network partition looks like from a worker. Then it checks that
every action ended, that the workers rode it out (exit code 0 after SIGTERM), that the ledger
of effects holds exactly the expected keys, and `fsm.testing.check_invariants`.

It lives in benchmarks/ rather than fsm/testing/ because it is a timed run against a real
server that prints figures for docs/reliability.md, like benchmarks/workers.py, not a helper
a user's test suite calls; it shares the tests' job kind and proxy on purpose.

    python benchmarks/outage.py [--actions 300] [--workers 3] [--kill-every 0.5]
                                [--outages 2] [--outage-seconds 5] [--postgres URL]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

import fsm
from fsm.testing import check_invariants

TESTS = Path(__file__).resolve().parent.parent / "tests" / "support"
sys.path.insert(0, str(TESTS))

from actions import Ledger, Transfer, plain_keys, start_transfers  # noqa: E402  (the tests')
from tcpproxy import TcpProxy  # noqa: E402


def kill_backends(admin: psycopg.Connection[tuple[object, ...]], app: str) -> int:
    """Terminate every backend of this run's workers; returns how many."""
    rows = admin.execute(
        "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE application_name = %s",
        (app,),
    ).fetchall()
    return sum(1 for (ok,) in rows if ok)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--actions", type=int, default=300)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--kill-every", type=float, default=0.5, metavar="SECONDS")
    parser.add_argument("--outages", type=int, default=2)
    parser.add_argument("--outage-seconds", type=float, default=5.0)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()

    admin = psycopg.connect(args.postgres, autocommit=True)
    schema = "fsm_outage_" + uuid.uuid4().hex[:8]
    admin.execute(f"CREATE SCHEMA {schema}")
    try:
        return run(args, admin, schema)
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


def run(
    args: argparse.Namespace, admin: psycopg.Connection[tuple[object, ...]], schema: str
) -> int:
    info = psycopg.conninfo.conninfo_to_dict(args.postgres)
    host, port = str(info.get("host", "127.0.0.1")), int(str(info.get("port", 5432)))
    options = f"?options=-c%20search_path%3D{schema}"
    direct = f"{args.postgres}{options}"
    proxy = TcpProxy(host, port)
    proxy.start()
    via_proxy = direct.replace(f"@{host}:{port}/", f"@127.0.0.1:{proxy.port}/")
    store = fsm.open_store(direct)
    Ledger.in_store(store)  # the ledger table, before the workers start
    app = f"fsm-outage-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
        "FSM_TEST_STEP_SECONDS": "0.05",
        "PGAPPNAME": app,
    }
    logs = Path(tempfile.mkdtemp(prefix="fsm-outage-"))
    command = [sys.executable, "-m", "fsm.cli", "worker", "--db", via_proxy]
    command += ["--module", "actions", "--services", "actions:services"]
    command += ["--concurrency", "4", "--lease-ttl", "5", "--max-outage", "60"]
    log_files = [logs / f"worker{i}.log" for i in range(args.workers)]
    procs = [
        subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log.open("wb"))
        for log in log_files
    ]
    while not all(log.exists() and "started" in log.read_text() for log in log_files):
        time.sleep(0.05)

    t0 = time.perf_counter()
    start_transfers(store, args.actions)
    kills = 0
    outages = 0
    outage_at = [
        args.actions * (i + 1) // (args.outages + 1) for i in range(args.outages)
    ]  # when this many actions have ended
    next_kill = time.perf_counter() + args.kill_every
    while left := len(store.live_ids()):
        done = args.actions - left
        if outages < len(outage_at) and done >= outage_at[outages]:
            proxy.stop()
            time.sleep(args.outage_seconds)
            proxy.start()
            outages += 1
        elif time.perf_counter() >= next_kill:
            kills += kill_backends(admin, app)
            next_kill = time.perf_counter() + args.kill_every
        time.sleep(0.05)
    elapsed = time.perf_counter() - t0
    for p in procs:
        p.send_signal(signal.SIGTERM)
    codes = [p.wait(timeout=120) for p in procs]
    proxy.close()

    calls = Ledger.in_store(store).effects()
    expected = {f"t{i:04d}.{s}" for i in range(args.actions) for s in range(3)}
    violations = check_invariants(store, [Transfer], effects=dict.fromkeys(calls, 1))
    applied = set(plain_keys(calls))  # keys without the incarnation
    if applied != expected:
        violations.append(
            f"ledger: {len(expected - applied)} effect(s) missing, "
            f"{len(applied - expected)} unexpected"
        )
    if store.rows():
        violations.append(f"{len(store.rows())} action(s) not terminal")
    texts = [log.read_text() for log in log_files]
    store.close()

    print(f"actions {args.actions}, workers {args.workers}, finished in {elapsed:.1f}s")
    print(f"backends killed: {kills} (every {args.kill_every}s)")
    print(f"outages: {outages} x {args.outage_seconds}s (proxy stopped: cut, then refused)")
    print(
        "worker loop failures logged: "
        f"{sum(t.count('database unavailable (failure') for t in texts)}, "
        f"recoveries: {sum(t.count('database back after') for t in texts)}, "
        f"reconnects: {sum(t.count('connection was lost; reconnecting') for t in texts)}"
    )
    print(f"steps replayed under the same key: {sum(1 for c in calls.values() if c > 1)}")
    print(f"worker exit codes: {codes}")
    print(f"violations: {len(violations)}")
    for v in violations:
        print(f"  {v}")
    print(f"worker logs: {logs}")
    return 0 if not violations and codes == [0] * len(codes) else 1


if __name__ == "__main__":
    sys.exit(main())
