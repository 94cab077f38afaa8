"""
Soak under faults (issue #14): one batch of N inputs through push, with everything failing at once, nothing lost.

    .venv/bin/python -m tests.soak.soak --items 10000   # the full soak (make soak), about 9 min on 2 cores
    .venv/bin/python -m tests.soak.soak --items 1000    # the short one (tests/soak/test_soak.py, CI)
    .venv/bin/python -m tests.soak.soak --items 10000 --topology celery   # make soak-celery

**What runs.** The local backend in this process (moto + the runtime), its model containers
(``tests/soak/sleepy_container.py``: the time each row takes is in the row, from milliseconds to 30 s; ~5 % of
the rows are malformed and fail in the model) and, as separate processes on 127.0.0.1, Airflow's scheduler
(LocalExecutor), dag-processor, api-server and **two triggerers** (:mod:`airflow_sagemaker_async.local.harness`).
The DAG (``tests/soak/dags/soak_batch.py``): ``score``, one batch of N ``input_records`` on ``soak-main``
(2 instances x 32 slots) with ``notification_queue_url`` (push, the queue both triggerers read), ``retries=2``;
and ``expire``, 6 slow rows on ``soak-expire`` (1 slot) with ``request_ttl_seconds=60``, so that most of them
expire in SageMaker's queue (the backend's ``time_scale`` 0.1: a 60 s TTL lasts 6 s).

**Faults**, through three fault proxies (``tests/proxy.py``) and the relay (``tests/soak/relay.py``); windows are
seconds after the DAG run is triggered (repeated every ``storm_period`` in the full soak):

- ``runtime_throttle``: InvokeEndpointAsync answered 400 ThrottlingException / 429 TooManyRequestsException;
- ``s3_slowdown``: Airflow's S3 requests answered 503 SlowDown; ``s3_reset`` / ``sqs_reset``: connections reset;
- ``backend_s3_outage``: the backend's own S3 / SNS (the runtime's clients) reset, three times 4 s;
- notifications: the endpoint's topics feed a raw relay queue; the relay drops, duplicates and delays (minutes)
  some on their way to the triggerers' queue;
- ``worker_kill``: the ``score`` task process SIGKILLed while the backend's invocation count for the batch rises
  (first wave), so that the task retries; the batch's ``state.json`` is read right after, to tell the documented
  at-least-once re-invocations from any other;
- ``triggerer_kill``: the first triggerer's process tree SIGKILLed while ``score`` is deferred; a new triggerer
  starts 5 s later (``triggerer_health_check_threshold`` 15 s hands the dead one's triggers over).

**The Celery topology** (``--topology celery``, issue #20): PostgreSQL, the CeleryExecutor with Redis, two
schedulers, two Celery workers (two hosts) and two triggerers (:mod:`airflow_sagemaker_async.local.topology`).
There ``worker_kill`` SIGKILLs the whole Celery worker that runs ``score`` (started again 5 s later; the try
fails when its heartbeat is 60 s old, and Airflow retries it), and after it come, each at least ``fault_gap``
after the one before: both triggerers SIGKILLed in turn (each started again), one scheduler SIGKILLed (the other
carries on), Redis restarted (it keeps nothing), Airflow's PostgreSQL connections terminated
(``pg_terminate_backend``), PostgreSQL restarted. Each fault's recovery time is reported: the worker's until the
next try runs; the others' until Airflow's health endpoint says the metadata DB, a scheduler and a triggerer are
healthy and every killed component that is started again has started. A component that exits on its own within
two minutes of a server fault (a scheduler whose query met a terminated connection does) is started again, as the
process supervisor of a deployment would, and reported; any other exit fails the soak.

**Checks** (exit status 1 when one fails): the manifest has one line per input, each input once; each line's
status is what the backend recorded for that input (Completed; Failed with its failure object; Expired, or a
result the backend could not write to its S3, as TimedOut); invocations per input are 1, or 2 only for inputs
sent by the killed try and not yet recorded in its state (the documented at-least-once case); both tasks and the
run ``success``. Reported too: the faults injected (counts), the triggerers' event-loop lag (Airflow logs each
watchdog tick slower than ``[triggerer] blocked_main_thread_warning_threshold``, set to 0.15 s: 50 ms of lag),
the peak RSS of each process (psutil, every 2 s) and the wall time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import random
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.error
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

import airflow_sagemaker_async.local.backend as backend_module
from airflow_sagemaker_async.batch.core import BatchNames, BatchState, batch_tag
from airflow_sagemaker_async.common.layout import join_s3, split_s3_uri
from airflow_sagemaker_async.local.backend import LocalSageMakerAsyncBackend
from airflow_sagemaker_async.local.harness import (
    AirflowCluster,
    airflow_environment,
    free_port,
    process_tree,
    signal_tree,
    wait_for,
)
from airflow_sagemaker_async.local.records import InvocationStatus
from airflow_sagemaker_async.local.topology import CeleryServers, topology_from
from tests.proxy import Fault, Proxy, Seen, s3_error
from tests.soak.relay import NotificationRelay

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_sagemaker_async.local.harness import AirflowProcess
    from airflow_sagemaker_async.local.records import InvocationRecord

SOAK_DIR = Path(__file__).resolve().parent
DAG_ID = "sagemaker_async_soak"
MAIN_ENDPOINT = "soak-main"
EXPIRE_ENDPOINT = "soak-expire"
CONTAINER = [sys.executable, str(SOAK_DIR / "sleepy_container.py")]
TIME_SCALE = 0.1
TERMINAL = {"success", "failed"}
#: Airflow logs each 0.1 s watchdog tick of a triggerer's loop slower than this: ticks with > 50 ms of lag.
LAG_THRESHOLD = 0.15
BLOCKED = re.compile(r"Triggerer's async thread was blocked for ([0-9.]+) seconds")


@dataclass(frozen=True)
class Profile:
    """The knobs that differ between the short and the full soak (seconds unless said)."""

    sleep_scale: float  # multiplies every row's model time (the spread is 2 ms - 30 s at 1)
    max_wait: float  # score's max_wait_seconds
    max_in_flight: int
    delay_range: tuple[float, float]  # notifications held back this long
    push_ceiling: float  # [sagemaker_async] push_max_poll_interval
    run_timeout: float
    storm_period: float | None  # fault windows repeat with this period
    triggerer_kill_after: float
    fault_gap: float  # Celery: seconds between the faults that follow the first triggerer's


SHORT = Profile(0.2, 150, 500, (30, 90), 30, 900, None, 45, 8)
FULL = Profile(1.0, 600, 1000, (60, 180), 60, 2400, 300, 90, 40)

#: Airflow settings of the Celery topology's soak. A try whose worker died fails once its heartbeat is 60 s old
#: (default 300 s), so that its retry comes within the soak; a task lost in the broker (Redis restarted without
#: persistence) is queued again after 120 s (default 600 s). Celery itself would redeliver the task only after
#: the broker's visibility timeout (24 h by default on Redis): Airflow's retry comes first.
#: Seconds after a server fault (Redis, PostgreSQL) during which a component that exits is started again.
SUPERVISED_AFTER_FAULT = 120.0
CELERY_SETTINGS = {
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "60",
    "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "120",
    "AIRFLOW__CELERY__WORKER_CONCURRENCY": "8",
}

#: Fault windows: name -> spans (start, end) in seconds after the batch's first invocation (mod storm_period
#: when set). The backend's S3 goes down three times: the first may fall in the gap of the killed try's retry.
WINDOWS = {
    "runtime_throttle": ((0.0, 30.0),),
    "s3_slowdown": ((10.0, 40.0),),
    "backend_s3_outage": ((15.0, 19.0), (35.0, 39.0), (55.0, 59.0)),
    "s3_reset": ((45.0, 60.0),),
    "sqs_reset": ((45.0, 60.0),),
}


# -- inputs --------------------------------------------------------------------------------------------------


def make_records(items: int, scale: float, seed: int) -> list[dict[str, Any]]:
    """
    Return the rows: model time from a spread (2 ms - 30 s x ``scale``), ~5 % malformed (fail in the model).

    Every 25th of the first 250 rows takes 45 s, so that some items sent by the try the soak kills are still
    running when the retry starts (the documented at-least-once case).
    """
    rng = random.Random(seed)
    rows = []
    for item in range(items):
        roll = rng.random()
        if roll < 0.55:
            sleep = rng.uniform(0.002, 0.05)
        elif roll < 0.85:
            sleep = rng.uniform(0.05, 1.0)
        elif roll < 0.97:
            sleep = rng.uniform(1.0, 5.0)
        else:
            sleep = rng.uniform(10.0, 30.0)
        features: list[Any] = [round(rng.uniform(0.1, 8), 1) for _ in range(4)]
        if rng.random() < 0.05:
            features = rng.choice([features[:2], [*features[:3], "n/a"], None])
        sleep *= scale
        if item % 25 == 0 and item < 250:
            sleep = 45.0  # still running when the killed try's retry starts: the documented re-invocation
        rows.append({"item": item, "sleep": round(sleep, 4), "features": features})
    return rows


EXPIRE_RECORDS = [{"item": i, "sleep": 12, "features": [5.1, 3.5, 1.4, 0.2]} for i in range(6)]


# -- faults ----------------------------------------------------------------------------------------------------


class Clock:
    """Seconds since the batch's first invocation; fault windows are open only inside their span."""

    def __init__(self, period: float | None) -> None:
        self.t0: float | None = None
        self.period = period

    def now(self) -> float | None:
        return None if self.t0 is None else time.monotonic() - self.t0

    def open(self, name: str) -> bool:
        elapsed = self.now()
        if elapsed is None:
            return False
        if self.period:
            elapsed %= self.period
        return any(start <= elapsed < end for start, end in WINDOWS[name])


def service_of(seen: Seen) -> str:
    """Return the AWS service a signed request is for (from its SigV4 credential scope)."""
    match = re.search(r"Credential=[^/]+/\d+/[^/]+/([^/]+)/", seen.headers.get("Authorization", ""))
    return match.group(1) if match else ""


def chance(clock: Clock, window: str, probability: float, seed: int, *, service: str | None = None, path: str = ""):
    rng = random.Random(seed)

    def match(seen: Seen) -> bool:
        if service is not None and service_of(seen) != service:
            return False
        if path and path not in seen.path:
            return False
        return clock.open(window) and rng.random() < probability

    return match


def install_faults(clock: Clock, aws: Proxy, runtime: Proxy, backend_s3: Proxy) -> dict[str, Fault]:
    """Add every proxy fault (each open only in its window); return them by name."""
    throttle = json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"}).encode()
    too_many = json.dumps({"message": "Too Many Requests"}).encode()
    faults = {
        "runtime_throttle_400": runtime.add_fault(
            Fault(
                chance(clock, "runtime_throttle", 0.2, 1, path="/async-invocations"),
                status=400,
                body=throttle,
                headers={"x-amzn-ErrorType": "ThrottlingException", "Content-Type": "application/json"},
                times=None,
            )
        ),
        "runtime_throttle_429": runtime.add_fault(
            Fault(
                chance(clock, "runtime_throttle", 0.1, 2, path="/async-invocations"),
                status=429,
                body=too_many,
                headers={"x-amzn-ErrorType": "TooManyRequestsException", "Content-Type": "application/json"},
                times=None,
            )
        ),
        "s3_slowdown_503": aws.add_fault(
            Fault(
                chance(clock, "s3_slowdown", 0.3, 3, service="s3"),
                status=503,
                body=s3_error("SlowDown", "Please reduce your request rate."),
                headers={"Content-Type": "application/xml"},
                times=None,
            )
        ),
        "s3_reset": aws.add_fault(Fault(chance(clock, "s3_reset", 0.1, 4, service="s3"), reset=True, times=None)),
        "sqs_reset": aws.add_fault(Fault(chance(clock, "sqs_reset", 0.3, 5, service="sqs"), reset=True, times=None)),
        "backend_s3_outage": backend_s3.add_fault(
            Fault(chance(clock, "backend_s3_outage", 1.0, 6), reset=True, times=None)
        ),
    }
    return faults


# -- sampling --------------------------------------------------------------------------------------------------


@dataclass
class RssSampler:
    """Peak RSS (MiB) of each named process tree's root and of the tree, sampled every ``interval`` seconds."""

    interval: float = 2.0
    roots: dict[str, int] = field(default_factory=dict)
    peak_root: dict[str, float] = field(default_factory=dict)
    peak_tree: dict[str, float] = field(default_factory=dict)
    peak_task: float = 0.0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-rss", daemon=True)

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for name, pid in list(self.roots.items()):
                # The driver's children are the Airflow components, sampled on their own.
                tree = process_tree(pid)[:1] if name.startswith("driver") else process_tree(pid)
                sizes = []
                for member in tree:
                    with contextlib.suppress(psutil.Error):
                        sizes.append(member.memory_info().rss / 2**20)
                        if "airflow worker --" in " ".join(member.cmdline()):
                            self.peak_task = max(self.peak_task, sizes[-1])
                if sizes:
                    self.peak_root[name] = max(self.peak_root.get(name, 0.0), sizes[0])
                    self.peak_tree[name] = max(self.peak_tree.get(name, 0.0), sum(sizes))


# -- the run ---------------------------------------------------------------------------------------------------


@dataclass
class Kill:
    """One fault the soak caused (a SIGKILL, a server restart, terminated connections) and its recovery."""

    what: str
    at: float  # seconds after the batch's first invocation
    detail: str
    wall: datetime | None = None
    recovered_after: float | None = None  # seconds until what the fault broke worked again (see _recovered)
    monotonic: float = 0.0


@dataclass
class FaultStep:
    """One fault of :meth:`Soak._fault_steps`: its name, when (seconds after the first invocation), and how."""

    name: str
    at: float
    when_deferred: bool  # only while the score task is deferred (its triggers must move)
    act: Callable[[], None]


class Soak:
    """One soak run: set up, run the DAG under faults, check, report."""

    def __init__(self, items: int, work_dir: Path, seed: int, topology: str = "local") -> None:
        self.items = items
        self.work_dir = work_dir
        self.seed = seed
        self.topology = topology
        self.servers: CeleryServers | None = None
        self.restarts: list[tuple[float, str]] = []
        self.killed_try = 0
        self.score_deferred_at_fault = False
        self._last_recovery_check = 0.0
        self.profile = SHORT if items <= 2000 else FULL
        self.clock = Clock(self.profile.storm_period)
        self.kills: list[Kill] = []
        self.kill_state: BatchState | None = None
        self.kill_time: datetime | None = None
        self.problems: list[str] = []
        self.report: dict[str, Any] = {
            "items": items,
            "profile": "short" if self.profile is SHORT else "full",
            "topology": topology,
        }

    # -- setup ---------------------------------------------------------------------------------------------

    def run(self) -> int:
        started = time.monotonic()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        records_file = self.work_dir / "records.json"
        records = make_records(self.items, self.profile.sleep_scale, self.seed)
        records_file.write_text(json.dumps(records))
        self.records = records
        with contextlib.ExitStack() as stack:
            backend_s3 = stack.enter_context(Proxy("http://127.0.0.1:9", record=False))
            original = backend_module.RuntimeServer

            def runtime_through_proxy(**kwargs: Any) -> Any:
                backend_s3.upstream = str(kwargs["moto_url"]).rstrip("/")
                return original(**{**kwargs, "moto_url": backend_s3.url})

            backend_module.RuntimeServer = runtime_through_proxy  # type: ignore[misc]
            try:
                backend = stack.enter_context(LocalSageMakerAsyncBackend(time_scale=TIME_SCALE))
            finally:
                backend_module.RuntimeServer = original  # type: ignore[misc]
            self.backend = backend
            aws = stack.enter_context(Proxy(backend.endpoint_url, record=False))
            runtime = stack.enter_context(Proxy(backend.runtime_url, record=False))
            sns, sqs = backend.client("sns"), backend.client("sqs")
            success = sns.create_topic(Name="soak-success")["TopicArn"]
            error = sns.create_topic(Name="soak-error")["TopicArn"]
            relay_url = backend.subscribe_queue("soak-relay", [success, error])
            target_url = sqs.create_queue(QueueName="soak-notifications")["QueueUrl"]
            queue_url = target_url.replace(backend.endpoint_url.rstrip("/"), aws.url)
            for name, capacity, instances in ((MAIN_ENDPOINT, 32, 2), (EXPIRE_ENDPOINT, 1, 1)):
                backend.create_endpoint(
                    name,
                    container_command=CONTAINER,
                    success_topic_arn=success,
                    error_topic_arn=error,
                    max_concurrent_invocations_per_instance=capacity,
                    initial_instance_count=instances,
                )
            relay = NotificationRelay(
                sqs,
                relay_url,
                target_url,
                drop=0.03,
                duplicate=0.05,
                delay=0.03,
                delay_range=self.profile.delay_range,
                seed=self.seed,
            ).start()
            stack.callback(relay.stop)
            faults = install_faults(self.clock, aws, runtime, backend_s3)
            config = {
                "records_file": str(records_file),
                "endpoint_name": MAIN_ENDPOINT,
                "expire_endpoint_name": EXPIRE_ENDPOINT,
                "notification_queue_url": queue_url,
                "max_wait_seconds": self.profile.max_wait,
                "max_in_flight": self.profile.max_in_flight,
                "retry_delay_seconds": 5,
                "expire_records": EXPIRE_RECORDS,
                "expire_max_wait_seconds": 90,
            }
            (self.work_dir / "soak-config.json").write_text(json.dumps(config))
            connection = {
                "conn_type": "aws",
                "login": backend.aws_access_key_id,
                "password": backend.aws_secret_access_key,
                "extra": {
                    "region_name": backend.region_name,
                    "endpoint_url": aws.url,
                    "service_config": {"sagemaker-runtime": {"endpoint_url": runtime.url}},
                },
            }
            home = self.work_dir / "airflow"
            (self.work_dir / "logs").mkdir(exist_ok=True)
            if self.topology == "celery":
                self.servers = stack.enter_context(CeleryServers(self.work_dir / "logs"))
            env = airflow_environment(
                home,
                dags_folder=SOAK_DIR / "dags",
                api_port=free_port(),
                servers=self.servers,
                extra={
                    "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(connection),
                    "AWS_ACCESS_KEY_ID": backend.aws_access_key_id,
                    "AWS_SECRET_ACCESS_KEY": backend.aws_secret_access_key,
                    "AWS_DEFAULT_REGION": backend.region_name,
                    "AWS_EC2_METADATA_DISABLED": "true",
                    "SAGEMAKER_ASYNC_SOAK_CONFIG": str(self.work_dir / "soak-config.json"),
                    "AIRFLOW__SAGEMAKER_ASYNC__PUSH_MAX_POLL_INTERVAL": f"{self.profile.push_ceiling:g}",
                    "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "15",
                    "AIRFLOW__TRIGGERER__BLOCKED_MAIN_THREAD_WARNING_THRESHOLD": f"{LAG_THRESHOLD:g}",
                    "AIRFLOW__CORE__DAG_FILE_PROCESSOR_TIMEOUT": "120",
                    "AIRFLOW__CORE__PARALLELISM": "8",  # LocalExecutor worker processes: frugal on 2 cores
                    **(CELERY_SETTINGS if self.servers is not None else {}),
                },
            )
            cluster = stack.enter_context(AirflowCluster(env, log_dir=self.work_dir / "logs"))
            self.cluster = cluster
            print(f"soak: {self.items} items, work dir {self.work_dir}", flush=True)
            cluster.migrate_db()
            cluster.start_components(300)
            if not cluster.celery:  # the Celery topology starts two triggerers of its own
                cluster.start("triggerer-2", "triggerer", "--skip-serve-logs")
            sampler = RssSampler()
            sampler.roots["driver (backend, proxies, relay)"] = psutil.Process().pid
            for name, process in cluster.processes.items():
                sampler.roots[name] = process.pid
            for endpoint in (MAIN_ENDPOINT, EXPIRE_ENDPOINT):
                for index, pid in enumerate(backend.container_pids(endpoint)):
                    sampler.roots[f"container {endpoint}/{index}"] = pid
            sampler.start()
            stack.callback(sampler.stop)
            wait_for(f"the dag-processor to parse {DAG_ID}", self._dag_parsed, 300, cluster, interval=2)
            setup_seconds = time.monotonic() - started
            print(f"soak: Airflow up in {setup_seconds:.0f} s; triggering {DAG_ID}", flush=True)
            run_id = cluster.trigger(DAG_ID)
            self.triggered = time.monotonic()
            relay.enabled.set()
            state = self._drive(run_id, relay, sampler)
            run_seconds = time.monotonic() - self.triggered
            relay.enabled.clear()
            self.report["wall_seconds"] = {
                "total": round(time.monotonic() - started, 1),
                "setup": round(setup_seconds, 1),
                "run": round(run_seconds, 1),
            }
            self.report["run"] = {"run_id": run_id, "state": state}
            self._check(run_id, state)
            relay.stop()
            sampler.stop()
            self.report["faults"] = {name: fault.hits for name, fault in faults.items()}
            counts = relay.counts
            self.report["faults"].update(
                {
                    "notifications_received_by_relay": counts.received,
                    "notifications_dropped": counts.dropped,
                    "notifications_duplicated": counts.duplicated,
                    "notifications_delayed": counts.delayed,
                    "notifications_delay_seconds": (
                        f"{min(counts.delays):.0f}-{max(counts.delays):.0f}" if counts.delays else "-"
                    ),
                    "notifications_delayed_still_held_at_end": counts.delayed_undelivered,
                }
            )
            self.report["faults"]["kills"] = [
                f"{k.what} at +{k.at:.0f} s after the first invocation: {k.detail}; "
                + (f"recovered in {k.recovered_after:.0f} s" if k.recovered_after is not None else "no recovery seen")
                for k in self.kills
            ]
            self.report["requests"] = {
                "aws_proxy": aws.count,
                "runtime_proxy": runtime.count,
                "backend_s3": backend_s3.count,
            }
            self.report["lag"] = self._lag()
            self.report["peak_rss_mib"] = {
                name: {
                    "process": round(sampler.peak_root.get(name, 0), 1),
                    "tree": round(sampler.peak_tree.get(name, 0), 1),
                }
                for name in sampler.roots
            }
            self.report["peak_rss_mib"]["largest task process"] = round(sampler.peak_task, 1)
            self.report["problems"] = self.problems
            (self.work_dir / "report.json").write_text(json.dumps(self.report, indent=2, default=str))
            print(render(self.report), flush=True)
        return 1 if self.problems else 0

    def _dag_parsed(self) -> bool:
        try:
            self.cluster.request("GET", f"/api/v2/dags/{DAG_ID}")
        except urllib.error.HTTPError:
            return False
        return True

    # -- during the run --------------------------------------------------------------------------------------

    def _drive(self, run_id: str, relay: NotificationRelay, sampler: RssSampler) -> str:
        """Inject the kills on their conditions; return the run's final state (or ``timeout``)."""
        cluster, deadline = self.cluster, time.monotonic() + self.profile.run_timeout
        worker_killed = False
        steps = self._fault_steps()
        last_fault = float("-inf")  # when the last step acted (seconds after the first invocation)
        state, last_progress, last_state_check = "queued", 0.0, 0.0
        kill_at = max(20, self.profile.max_in_flight // 4)
        while time.monotonic() < deadline:
            time.sleep(0.5)
            elapsed = self.clock.now() or 0.0
            if not worker_killed:
                sent = len(self.backend.invocations(MAIN_ENDPOINT))
                if sent and self.clock.t0 is None:
                    self.clock.t0 = time.monotonic()  # the fault windows count from here
                if sent >= kill_at:
                    worker_killed = self._kill_worker(run_id, sent)
            elif steps and elapsed >= last_fault + self.profile.fault_gap:
                due = [step for step in steps if elapsed >= step.at]
                deferred = any(step.when_deferred for step in due) and self._score_deferred(run_id)
                # A fault meant for a deferred batch waits for one, but not forever: the fast waves of a
                # batch may never defer; then it acts anyway, and its report line says so.
                waited = self.profile.fault_gap * 3
                if ready := next(
                    (step for step in due if deferred or not step.when_deferred or elapsed >= step.at + waited), None
                ):
                    steps.remove(ready)
                    self.score_deferred_at_fault = deferred
                    ready.act()
                    last_fault = elapsed
            for due, name in list(self.restarts):
                if time.monotonic() >= due:
                    self.restarts.remove((due, name))
                    sampler.roots[name] = self._restart(name).pid
            self._note_recoveries(run_id)
            if time.monotonic() - last_state_check >= 5:
                last_state_check = time.monotonic()
                with contextlib.suppress(OSError):
                    state = cluster.run_state(DAG_ID, run_id)
                if state in TERMINAL and not self.restarts:
                    self.report["faults_not_injected"] = [step.name for step in steps]
                    return state
            if time.monotonic() - last_progress >= 30:
                last_progress = time.monotonic()
                records = self.backend.invocations(MAIN_ENDPOINT)
                final = sum(1 for r in records if r.status.is_final)
                print(
                    f"soak: +{time.monotonic() - self.triggered:.0f} s run {state}: {len(records)} invocations, "
                    f"{final} final; "
                    f"relay {relay.counts.received} in, {relay.counts.forwarded} out",
                    flush=True,
                )
            if (exited := cluster.exited()) is not None and not self._supervise(sampler):
                self.problems.append(f"an Airflow component died on its own: {exited}")
                return "component-exited"
        self.problems.append(f"the run did not end within {self.profile.run_timeout:.0f} s")
        return "timeout"

    def _kill_worker(self, run_id: str, sent: int) -> bool:
        """SIGKILL what runs the ``score`` task's first try; read the batch state right after.

        LocalExecutor: the task process itself ("airflow worker -- <ti id>"), not its supervisor, the executor's
        worker ("airflow worker -- LocalExecutor: ..."), which sees it die and fails the try at once. Celery: the
        whole Celery worker whose tree holds the task process (a host lost), started again 5 s later; the try
        fails when its heartbeat is older than ``[scheduler] task_instance_heartbeat_timeout``.
        """
        try:
            ti = self.cluster.task_instance(DAG_ID, run_id, "score")
        except OSError:
            return False
        if ti["state"] != "running":
            return False
        task_command = f"airflow worker -- {ti['id']}"
        hosts = {name: p for name, p in self.cluster.processes.items() if name.startswith(("scheduler", "worker-"))}
        holder = next(
            (
                (name, process)
                for name, process in hosts.items()
                if any(_cmdline(p).strip() == task_command for p in process_tree(process.pid))
            ),
            None,
        )
        if holder is None:
            return False
        name, process = holder
        if self.servers is None:
            targets = [p for p in process_tree(process.pid) if _cmdline(p).strip() == task_command]
            for target in targets:
                signal_tree(target.pid, signal.SIGKILL)
            what, detail = f"worker (score task process, try {ti['try_number']})", f"pid {targets[0].pid}"
        else:
            tree = signal_tree(self.cluster.forget(name).pid, signal.SIGKILL)
            self.restarts.append((time.monotonic() + 5, name))
            what = f"worker (Celery worker {name} running score's try {ti['try_number']})"
            detail = f"{len(tree)} processes, started again 5 s later"
        self.killed_try = int(ti["try_number"])
        self.kill_time = datetime.now().astimezone()
        tag = batch_tag(DAG_ID, "score", run_id)
        names = BatchNames.of(
            tag, DAG_ID, "score", f"s3://{self.backend.default_bucket}/{MAIN_ENDPOINT}/output/airflow-batch/{tag}", None
        )
        bucket, key = split_s3_uri(names.state_location())
        with contextlib.suppress(Exception):
            body = self.backend.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
            self.kill_state = BatchState.from_json(body)
        recorded = (
            "no state.json yet"
            if self.kill_state is None
            else f"state.json: {self.kill_state.next_index} submitted, {len(self.kill_state.pending)} in flight"
        )
        self._fault(what, f"{detail}; {sent} invocations at the backend; {recorded}")
        return True

    def _fault_steps(self) -> list[FaultStep]:
        """The faults after the worker's, each from its time on (seconds after the batch's first invocation).

        The first due fault whose condition holds acts, at least ``fault_gap`` after the one before; a triggerer
        or scheduler is killed while the score task is deferred (its trigger must move), or once it has waited
        three gaps for that; the servers' faults come at any time.

        LocalExecutor: the first triggerer, started again 5 s later. Celery: both triggerers in turn (each
        started again 5 s later), one scheduler (not started again: the other carries on), a Redis restart,
        Airflow's PostgreSQL connections terminated, a PostgreSQL restart.
        """
        start = self.profile.triggerer_kill_after
        if self.servers is None:
            return [
                FaultStep("triggerer", start, True, lambda: self._kill_component("triggerer", "triggerer-restarted"))
            ]
        servers, gap = self.servers, self.profile.fault_gap
        redis = partial(self._server_fault, "Redis restart", servers.redis.restart)
        connections = partial(
            self._server_fault,
            "PostgreSQL connections terminated (pg_terminate_backend)",
            servers.postgres.terminate_connections,
        )
        postgres = partial(self._server_fault, "PostgreSQL restart (fast shutdown)", servers.postgres.restart)
        return [
            FaultStep("triggerer-1", start, True, lambda: self._kill_component("triggerer-1", "triggerer-1")),
            FaultStep("redis", start, False, redis),
            FaultStep("triggerer-2", start + gap, True, lambda: self._kill_component("triggerer-2", "triggerer-2")),
            FaultStep("postgres connections", start + gap, False, connections),
            FaultStep("scheduler-1", start + 2 * gap, True, lambda: self._kill_component("scheduler-1", None)),
            FaultStep("postgres restart", start + 2 * gap, False, postgres),
        ]

    def _supervise(self, sampler: RssSampler) -> bool:
        """Start again, as a process supervisor would, a component that exited after a server fault; say if all were.

        Airflow's components exit when their metadata DB or broker fails under them (a scheduler's query on a
        terminated connection raises), and deployments run them under a supervisor that starts them again
        (systemd, Kubernetes, MWAA). Within ``SUPERVISED_AFTER_FAULT`` seconds of a server fault the soak does the
        same and reports it; any other exit is a problem.
        """
        servers_faults = [k for k in self.kills if k.what.startswith(("Redis", "PostgreSQL"))]
        if not servers_faults or time.monotonic() - servers_faults[-1].monotonic > SUPERVISED_AFTER_FAULT:
            return False
        for name, process in list(self.cluster.processes.items()):
            if name.endswith("(dead)") or (code := process.exit_code()) is None:
                continue
            self.cluster.forget(name)
            sampler.roots[name] = self.cluster.restart(name).pid
            after = time.monotonic() - servers_faults[-1].monotonic
            self._fault(
                f"{name} exited",
                f"code {code}, {after:.0f} s after '{servers_faults[-1].what}'; started again as a supervisor would",
            )
        return True

    def _score_deferred(self, run_id: str) -> bool:
        with contextlib.suppress(OSError):
            return bool(self.cluster.task_instance(DAG_ID, run_id, "score")["state"] == "deferred")
        return False

    def _restart(self, name: str) -> AirflowProcess:
        """Start a killed component again: as it was (Celery), or a new triggerer (``triggerer-restarted``)."""
        if name == "triggerer-restarted":
            return self.cluster.start(name, "triggerer", "--skip-serve-logs")
        return self.cluster.restart(name)

    def _fault(self, what: str, detail: str) -> Kill:
        elapsed = self.clock.now() or 0.0
        kill = Kill(what, elapsed, detail, datetime.now().astimezone(), monotonic=time.monotonic())
        self.kills.append(kill)
        print(f"soak: +{elapsed:.0f} s {what}: {detail}", flush=True)
        return kill

    def _kill_component(self, name: str, restart_as: str | None) -> None:
        """SIGKILL a component's process tree; start it again 5 s later as ``restart_as`` (None: never)."""
        tree = signal_tree(self.cluster.forget(name).pid, signal.SIGKILL)
        later = f"started again 5 s later as {restart_as}" if restart_as else "not started again"
        waiting = "while score was deferred" if self.score_deferred_at_fault else "while score ran on a worker"
        self._fault(name, f"SIGKILL, {len(tree)} processes, {waiting}; {later}")
        if restart_as is not None:
            self.restarts.append((time.monotonic() + 5, restart_as))

    def _server_fault(self, what: str, act: Callable[[], object]) -> None:
        started = time.monotonic()
        answer = act()
        detail = f"took {time.monotonic() - started:.1f} s" + (f", {answer} connections" if answer is not None else "")
        self._fault(what, detail)

    def _note_recoveries(self, run_id: str) -> None:
        """Set ``recovered_after`` of each fault once what it broke works again (checked every 2 s).

        The score task's worker: its next try is running (or deferred, or done). Anything else: Airflow's health
        endpoint says the metadata DB, a scheduler and a triggerer are healthy, and every killed component that is
        started again has started.
        """
        pending = [kill for kill in self.kills if kill.recovered_after is None]
        if not pending or time.monotonic() - self._last_recovery_check < 2:
            return
        self._last_recovery_check = time.monotonic()
        try:
            health = self.cluster.request("GET", "/api/v2/monitor/health", timeout=5)
            ti = self.cluster.task_instance(DAG_ID, run_id, "score")
        except (OSError, ValueError):
            return
        healthy = all(
            health.get(part, {}).get("status") == "healthy" for part in ("metadatabase", "scheduler", "triggerer")
        )
        for kill in pending:
            if kill.what.startswith("worker"):
                done = ti["try_number"] > self.killed_try and ti["state"] in {"running", "deferred", "success"}
            else:
                done = healthy and not self.restarts
            if done:
                kill.recovered_after = round(time.monotonic() - kill.monotonic, 1)

    # -- the checks ------------------------------------------------------------------------------------------

    def _check(self, run_id: str, state: str) -> None:
        cluster = self.cluster
        if state != "success":
            self.problems.append(f"the DAG run ended {state}, not success")
        try:
            tasks = cluster.task_states(DAG_ID, run_id)
        except OSError as error:
            tasks = {}
            self.problems.append(f"could not read the task states: {error}")
        self.report["run"]["tasks"] = {task: s for (task, _), s in tasks.items()}
        for task in ("records", "score", "expire"):
            if tasks.get((task, -1)) != "success":
                self.problems.append(f"task {task} ended {tasks.get((task, -1))}, not success")
        with contextlib.suppress(OSError, KeyError):
            self.report["run"]["score_try_number"] = cluster.task_instance(DAG_ID, run_id, "score")["try_number"]
        self.report["score"] = self._check_batch(
            run_id, "score", MAIN_ENDPOINT, len(self.records), self.profile.max_wait
        )
        self.report["expire"] = self._check_batch(run_id, "expire", EXPIRE_ENDPOINT, len(EXPIRE_RECORDS), 90)

    def _check_batch(self, run_id: str, task_id: str, endpoint: str, total: int, max_wait: float) -> dict[str, Any]:
        s3 = self.backend.client("s3")
        tag = batch_tag(DAG_ID, task_id, run_id)
        output_dir = f"s3://{self.backend.default_bucket}/{endpoint}/output/airflow-batch/{tag}"
        manifest_uri = join_s3(output_dir, f"{tag}.batch", "manifest.jsonl")
        bucket, key = split_s3_uri(manifest_uri)
        try:
            text = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
        except Exception as error:
            self.problems.append(f"{task_id}: no manifest at {manifest_uri} ({error})")
            return {"manifest": manifest_uri, "lines": 0}
        lines = [json.loads(line) for line in text.splitlines() if line.strip()]
        per_item = Counter(line["item"] for line in lines)
        missing = sorted(set(range(total)) - set(per_item))
        duplicates = sorted(i for i, n in per_item.items() if n > 1)
        extra = sorted(i for i in per_item if not 0 <= i < total)
        if len(lines) != total or missing or duplicates or extra:
            self.problems.append(
                f"{task_id}: {len(lines)} manifest lines for {total} inputs; missing {missing[:10]}, "
                f"duplicated {duplicates[:10]}, unknown {extra[:10]}"
            )
        invocations: dict[int, list[InvocationRecord]] = defaultdict(list)
        for record in self.backend.invocations(endpoint):
            match = re.search(rf"-{tag}-(\d+)$", record.inference_id)
            if match:
                invocations[int(match.group(1))].append(record)
        statuses: Counter[str] = Counter()
        wrong, late, unwritten = [], 0, 0
        for line in lines:
            item = line["item"]
            records = invocations.get(item, [])
            statuses[line["status"]] += 1
            expected, lost = self._expected(records, s3)
            unwritten += lost
            if line["status"] in expected:
                continue
            if line["status"] == "TimedOut" and records and _late(records, line, max_wait):
                late += 1  # ended at the backend after the item's deadline: TimedOut is what the user asked for
                continue
            wrong.append((item, line["status"], sorted(expected), [r.status.value for r in records]))
        if wrong:
            self.problems.append(f"{task_id}: {len(wrong)} wrong statuses, e.g. {wrong[:5]}")
        histogram = Counter(len(invocations.get(i, [])) for i in range(total))
        twice = sorted(i for i in range(total) if len(invocations.get(i, [])) >= 2)
        documented, undocumented = [], []
        for item in twice:
            (documented if self._documented_twice(invocations[item]) else undocumented).append(item)
        if undocumented:
            self.problems.append(
                f"{task_id}: {len(undocumented)} inputs invoked more than once outside the documented at-least-once "
                f"case, e.g. {[(i, len(invocations[i])) for i in undocumented[:10]]}"
            )
        never = [i for i in range(total) if not invocations.get(i)]
        return {
            "manifest": manifest_uri,
            "lines": len(lines),
            "inputs": total,
            "missing": len(missing),
            "duplicate_lines": len(duplicates),
            "statuses": dict(statuses),
            "wrong_statuses": len(wrong),
            "timed_out_after_late_result": late,
            "results_the_backend_could_not_write": unwritten,
            "invocations_per_input": {str(k): v for k, v in sorted(histogram.items())},
            "invoked_twice_documented": documented,
            "invoked_twice_undocumented": undocumented,
            "never_invoked": never[:20],
        }

    def _expected(self, records: list[InvocationRecord], s3: Any) -> tuple[set[str], int]:
        """Return the manifest statuses the backend's records allow for one input, and 1 if its result was lost."""
        expected: set[str] = set()
        lost = 0
        for record in records:
            if record.status is InvocationStatus.COMPLETED:
                expected.add("Completed")
            elif record.status is InvocationStatus.EXPIRED:
                expected.add("TimedOut")
            elif record.status is InvocationStatus.FAILED:
                if record.failure_location and _exists(s3, record.failure_location):
                    expected.add("Failed")
                else:  # the backend could not write its failure object (its S3 was down): nothing to find
                    expected.add("TimedOut")
                    lost = 1
            else:
                expected.add("TimedOut")  # still running at the end
        if "Completed" in expected:
            expected = {"Completed"}  # an output wins over a failure (batch.merge_found)
        return expected or {"Failed"}, lost  # never invoked: only InvokeEndpointAsync refusing it (Failed)

    def _documented_twice(self, records: list[InvocationRecord]) -> bool:
        """Twice, the first by the killed try before the kill and not recorded in its state.json, the second after."""
        if len(records) != 2 or self.kill_time is None:
            return False
        first, second = sorted(records, key=lambda r: r.received_time)
        if not first.received_time <= self.kill_time <= second.received_time:
            return False
        state = self.kill_state
        if state is None:
            return True
        index = int(first.inference_id.rsplit("-", 1)[1])
        return index >= state.next_index and index not in {p.index for p in state.pending}

    def _lag(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, process in self.cluster.processes.items():
            # A triggerer started again under its own name appends to the same log: count that log once.
            if not name.startswith("triggerer"):
                continue
            if name.endswith("(dead)") and name.removesuffix(" (dead)") in self.cluster.processes:
                continue
            text = process.log()
            lags = sorted((float(v) - 0.1 for v in BLOCKED.findall(text)), reverse=True)
            try:
                created = psutil.Process(process.pid).create_time()
                uptime = time.time() - created
            except psutil.Error:
                uptime = None
            ticks = int(uptime / 0.1) if uptime else None
            if ticks and lags and len(lags) >= ticks // 100:
                p99 = f"{lags[max(ticks // 100 - 1, 0)]:.3f} s"
            else:
                p99 = f"< {LAG_THRESHOLD - 0.1:.2f} s (fewer than 1 % of ~{ticks} ticks logged)" if ticks else "?"
            out[name] = {
                "ticks_over_50ms": len(lags),
                "p99": p99,
                "max": f"{lags[0]:.3f} s" if lags else f"< {LAG_THRESHOLD - 0.1:.2f} s",
            }
        return out


def _cmdline(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


def _exists(s3: Any, uri: str) -> bool:
    bucket, key = split_s3_uri(uri)
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except Exception:
        return False
    return True


def _late(records: list[InvocationRecord], line: dict[str, Any], max_wait: float) -> bool:
    deadline = datetime.fromisoformat(line["submitted_at"]) + timedelta(seconds=max_wait)
    last = max(records, key=lambda r: r.received_time)
    return last.finished_time is None or last.finished_time >= deadline - timedelta(seconds=5)


def render(report: dict[str, Any]) -> str:
    """Return the report as text."""
    title = f"SOAK REPORT: {report['items']} items ({report['profile']}, {report.get('topology', 'local')} topology)"
    out = ["", "=" * 78, title, "=" * 78]
    wall = report.get("wall_seconds", {})
    out.append(
        f"wall: {wall.get('total')} s total, {wall.get('setup')} s setup, {wall.get('run')} s from trigger to end"
    )
    run = report.get("run", {})
    out.append(
        f"DAG run {run.get('run_id')}: {run.get('state')}; tasks {run.get('tasks')}; "
        f"score tries {run.get('score_try_number')}"
    )
    for task in ("score", "expire"):
        batch = report.get(task)
        if not batch:
            continue
        out.append(
            f"-- {task}: manifest {batch['lines']} lines for {batch.get('inputs')} inputs; "
            f"missing {batch.get('missing')}, duplicate lines {batch.get('duplicate_lines')}"
        )
        out.append(
            f"   statuses {batch.get('statuses')}; wrong {batch.get('wrong_statuses')}; TimedOut after a late "
            f"result {batch.get('timed_out_after_late_result')}; results the backend could not write "
            f"{batch.get('results_the_backend_could_not_write')}"
        )
        out.append(
            f"   invocations per input {batch.get('invocations_per_input')}; twice (documented: worker killed "
            f"after sending, before recording) {len(batch.get('invoked_twice_documented', []))}: "
            f"{batch.get('invoked_twice_documented', [])[:40]}"
        )
        out.append(f"   twice outside the documented case: {batch.get('invoked_twice_undocumented')}")
    out.append("-- faults injected:")
    for name, value in report.get("faults", {}).items():
        if name == "kills":
            for kill in value:
                out.append(f"   kill: {kill}")
        else:
            out.append(f"   {name}: {value}" + (" (not injected this run)" if value == 0 else ""))
    if report.get("faults_not_injected"):
        out.append(f"   not injected (the run ended first): {report['faults_not_injected']}")
    out.append(f"-- requests through the proxies: {report.get('requests')}")
    out.append("-- triggerer event-loop lag (Airflow's watchdog, 0.1 s ticks logged when > 50 ms late):")
    for name, lag in report.get("lag", {}).items():
        out.append(f"   {name}: {lag['ticks_over_50ms']} ticks > 50 ms; p99 {lag['p99']}; max {lag['max']}")
    out.append("-- peak RSS, MiB (process / whole tree):")
    for name, rss in report.get("peak_rss_mib", {}).items():
        out.append(f"   {name}: {rss['process']} / {rss['tree']}" if isinstance(rss, dict) else f"   {name}: {rss}")
    problems = report.get("problems", [])
    out.append("RESULT: " + ("PASS" if not problems else f"FAIL ({len(problems)} problems)"))
    out += [f"   - {p}" for p in problems]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.soak.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=10_000, help="inputs of the big batch, default 10,000")
    parser.add_argument("--work-dir", type=Path, help="default: a temporary directory (kept on failure)")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument(
        "--topology",
        choices=("local", "celery"),
        help="local (SQLite, LocalExecutor) or celery (PostgreSQL, Redis, two schedulers, two Celery workers); "
        "default $SAGEMAKER_ASYNC_TOPOLOGY, else local",
    )
    args = parser.parse_args(argv)
    logging.getLogger("airflow_sagemaker_async.local").setLevel(logging.WARNING)  # one line per request otherwise
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="sagemaker-async-soak-"))
    code = Soak(args.items, work_dir, args.seed, topology_from(args.topology)).run()
    if code == 0 and args.work_dir is None:
        shutil.rmtree(work_dir, ignore_errors=True)
    elif code:
        print(f"soak: logs kept in {work_dir}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
