"""``fsm worker --metrics-port`` and ``--log-format json`` on a real worker process: its
Prometheus endpoint scraped over HTTP after known steps, its JSON log read line by line;
and the one-line refusals of a bad or busy port."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from actions import one_step
from cli_support import assert_one_line_error, run_fsm
from processes import child_env
from prometheus_client.parser import text_string_to_metric_families
from worker_processes import wait_for

import fsm
from fsm.discover import load_module
from fsm.ids import idempotency_key

JOBS_SOURCE = textwrap.dedent(
    """
    import attrs

    import fsm


    @attrs.frozen
    class Job(fsm.Action[None]):
        '''Two steps, ``take`` then ``give``; ``how`` says what goes wrong on the way.'''

        name = "job"
        label: str
        how: str = "ok"
        step: int = 0

        @property
        def id(self):
            return self.label

        @property
        def state(self):
            return ("take", "give")[self.step]

        def on_retry(self, ctx, attempts, error):
            return fsm.Park(self, wake_after=0.01)

        def advance(self, ctx):
            if self.how == "flaky" and self.step == 0 and ctx.attempts == 0:
                raise ConnectionError("the remote hung up")
            if self.how == "rejected" and self.step == 1:
                raise fsm.Rejected("insufficient funds")
            if self.how == "broken":
                raise TypeError("a bug in the kind")
            if self.step == 1:
                return fsm.Done()
            return fsm.Next(attrs.evolve(self, step=1))
    """
)

Backlog = one_step("backlog")
"""A kind no worker here drives: its actions wait, due, for the gauges to see."""

LATE = 600.0
"""Seconds in the past the backlog was started (its oldest due action's age, at least)."""


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> tuple[str, Samples]:
    """GET /metrics: the text, and every sample by (name, labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[s.name, frozenset(s.labels.items())] = s.value
    return text, samples


def labels(**pairs: str) -> frozenset[tuple[str, str]]:
    return frozenset(pairs.items())


def start_jobs(db: Path, jobs_file: Path) -> None:
    Job = load_module(str(jobs_file)).Job
    store = fsm.open_store(str(db))
    now = store.now()
    ex: fsm.Executor[Any] = fsm.Executor(store, None, kinds=[Job])
    late: fsm.Executor[Any] = fsm.Executor(store, None, kinds=[Backlog], clock=lambda: now - LATE)

    async def start() -> None:
        for how in ("ok", "flaky", "rejected", "broken"):
            await ex.start(Job(how, how))
        for n in range(3):
            await late.start(Backlog(f"backlog-{n}"))

    asyncio.run(start())
    store.close()


def test_a_worker_serves_its_metrics_and_logs_json_lines(tmp_path: Path) -> None:
    jobs_file = tmp_path / "jobs.py"
    jobs_file.write_text(JOBS_SOURCE)
    db = tmp_path / "jobs.sqlite"
    start_jobs(db, jobs_file)
    log = tmp_path / "worker.log"
    command = [sys.executable, "-m", "fsm.cli", "worker", "--db", str(db), "--module"]
    command += [str(jobs_file), "--poll", "0.05", "--log-format", "json"]
    command += ["--metrics-port", "0", "--metrics-addr", "127.0.0.1"]
    worker = subprocess.Popen(
        command, env=child_env(), stdout=subprocess.DEVNULL, stderr=log.open("wb")
    )
    try:
        port = _served_port(log, worker)
        store = fsm.open_store(str(db), readonly=True)
        wait_for(
            lambda: {r.id for r in store.rows()} == {"broken", *(f"backlog-{n}" for n in range(3))},
            "the jobs to end, but the broken one",
        )
        expected: Samples = {
            ("fsm_steps_total", labels(kind="job", state="take", outcome="next")): 3,
            ("fsm_steps_total", labels(kind="job", state="take", outcome="park")): 1,
            ("fsm_steps_total", labels(kind="job", state="take", outcome="broken")): 1,
            ("fsm_steps_total", labels(kind="job", state="give", outcome="done")): 2,
            ("fsm_steps_total", labels(kind="job", state="give", outcome="failed")): 1,
            ("fsm_retries_total", labels(kind="job", state="take")): 1,
            ("fsm_rejections_total", labels(kind="job", state="give")): 1,
            ("fsm_actions_ended_total", labels(kind="job", state="give", outcome="done")): 2,
            ("fsm_actions_ended_total", labels(kind="job", state="give", outcome="failed")): 1,
            ("fsm_step_duration_seconds_count", labels(kind="job", state="take")): 5,
            ("fsm_step_duration_seconds_count", labels(kind="job", state="give")): 3,
            ("fsm_commit_latency_seconds_count", labels(outcome="next")): 3,
            ("fsm_commit_latency_seconds_count", labels(outcome="park")): 1,
            ("fsm_commit_latency_seconds_count", labels(outcome="broken")): 1,
            ("fsm_commit_latency_seconds_count", labels(outcome="done")): 2,
            ("fsm_commit_latency_seconds_count", labels(outcome="failed")): 1,
            ("fsm_actions_live", labels(kind="job", state="take")): 1,
            ("fsm_actions_live", labels(kind="backlog", state=Backlog.__name__)): 3,
        }
        scraped: dict[str, Samples] = {}

        def counted() -> bool:
            # The counters are recorded once the step is durable, and the gauges are read at
            # most every few seconds: scrape until the worker has caught up.
            scraped["text"], samples = scrape(port)
            scraped["samples"] = samples
            return all(samples.get(name) == value for name, value in expected.items())

        wait_for(counted, "the scrape to count every step")
        samples = scraped["samples"]
        text = str(scraped["text"])
        age = samples["fsm_due_oldest_age_seconds", frozenset()]
        assert age >= LATE  # the backlog's oldest action has waited that long, at least
        assert not any(name == "fsm_actions_started_total" for name, _ in samples)
        assert samples["process_cpu_seconds_total", frozenset()] > 0
        assert "# TYPE fsm_step_duration_seconds histogram" in text
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0
        store.close()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    _check_json_log(log, db)


def _served_port(log: Path, worker: subprocess.Popen[bytes]) -> int:
    """The port the worker says it serves its metrics on (it asked the system for one)."""
    found: list[int] = []

    def said() -> bool:
        assert worker.poll() is None, log.read_text()
        match = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", log.read_text())
        if match:
            found.append(int(match.group(1)))
        return bool(found)

    wait_for(said, "the worker to say where it serves its metrics")
    return found[0]


def _check_json_log(log: Path, db: Path) -> None:
    """Every line is one JSON object; every line about an action names its action, kind,
    state and step key."""
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    about = [e for e in entries if "action" in e]
    for entry in about:
        assert {"time", "level", "logger", "message", "kind", "state", "key"} <= entry.keys()
        assert entry["kind"] == "job" and entry["key"].startswith(f"{entry['action']}~")
    outcomes: dict[str, list[tuple[str, str]]] = {}
    for e in about:
        if "status" in e:
            outcomes.setdefault(e["action"], []).append((e["status"], e["state"]))
    assert outcomes == {
        "ok": [("done", "give")],
        "flaky": [("parked", "take"), ("done", "give")],  # parked for its retry, then done
        "rejected": [("failed", "give")],
        "broken": [("broken", "take")],
    }
    flaky = [e for e in about if e["action"] == "flaky" and e["level"] == "warning"]
    assert [e["message"] for e in flaky] == [
        "action flaky: transient error (attempt 1): ConnectionError: the remote hung up"
    ]
    assert flaky[0]["state"] == "take" and flaky[0]["key"].endswith(".0")
    (broken,) = [e for e in about if e["action"] == "broken" and e["level"] == "error"]
    assert broken["message"].startswith("action broken: broken: TypeError: a bug in the kind |")
    store = fsm.open_store(str(db), readonly=True)
    row = store.row("broken")
    assert row is not None
    assert broken["key"] == idempotency_key("broken", row.incarnation, 0)
    store.close()


@pytest.mark.parametrize(
    ("port", "message"),
    [
        ("http", "argument --metrics-port: not a port number: 'http'"),
        ("-1", "argument --metrics-port: must be a port from 0 to 65535, got -1"),
        ("65536", "argument --metrics-port: must be a port from 0 to 65535, got 65536"),
        ("9.5", "argument --metrics-port: not a port number: '9.5'"),
    ],
)
def test_a_bad_metrics_port_exits_2(tmp_path: Path, port: str, message: str) -> None:
    proc = run_fsm("worker", "--db", tmp_path / "x.db", "-m", "m", "--metrics-port", port)
    assert_one_line_error(proc, 2, message)
    assert not (tmp_path / "x.db").exists()


def test_a_metrics_port_in_use_is_refused_in_one_line(tmp_path: Path) -> None:
    jobs_file = tmp_path / "jobs.py"
    jobs_file.write_text(JOBS_SOURCE)
    db = tmp_path / "jobs.sqlite"
    start_jobs(db, jobs_file)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = run_fsm(
            "worker",
            "--db",
            db,
            "--module",
            jobs_file,
            "--metrics-port",
            str(port),
            "--metrics-addr",
            "127.0.0.1",
        )
    assert_one_line_error(
        proc,
        1,
        f"cannot serve metrics on 127.0.0.1:{port}: the port is in use "
        "(pick another --metrics-port)",
    )
    store = fsm.open_store(str(db), readonly=True)
    assert {r.id: r.state for r in store.rows() if r.kind == "job"} == {
        "ok": "take",
        "flaky": "take",
        "rejected": "take",
        "broken": "take",
    }  # refused before driving anything
    store.close()
