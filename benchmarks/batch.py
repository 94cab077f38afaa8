"""
One batch task vs ``.expand`` of the single operator, under a real Airflow, against the local backend.

    .venv/bin/python benchmarks/batch.py            # batch 10,000, expand 100, watch 10,000 for 60 s (~15 min)
    .venv/bin/python benchmarks/batch.py --quick    # batch 1,000, expand 20, watch 1,000 for 30 s (~6 min)
    .venv/bin/python benchmarks/batch.py --m 1000   # the issue's 1,000 mapped inputs (about an hour on 2 cores)

The local backend (``sagemaker-async-local up``) runs in its own process, with an endpoint of its bundled iris
model created here with boto3 (``bench-iris``: 2 instances x 8 concurrent invocations, no SNS notifications,
which nothing here reads). Airflow runs as separate processes on 127.0.0.1 (``AirflowCluster``: scheduler with
the LocalExecutor, dag-processor, triggerer, api-server; SQLite), every setting at its default,
``[sagemaker_async] min_deferral_seconds`` included. The DAGs are ``benchmarks/dags/sagemaker_async_batch_bench.py``;
their inputs are N tiny CSV objects (one iris flower each) that this script uploads under one prefix first.

``.expand`` costs about 1.5 s of CPU per mapped task instance here (a task process that parses the DAG
file, imports the provider and builds its clients; a second one when it defers), so 1,000 of them take about
an hour of wall time on 2 cores; the default of 100 keeps the whole run near 15 minutes, and CPU per input does
not depend on M.

Phases, one after the other in the same cluster:

1. **idle**: 30 s with nothing to do (what each component costs when idle; ``--idle-seconds``).
2. **batch**: all N objects through one ``SageMakerInvokeEndpointAsyncBatchOperator`` (``input_prefix``, the
   fast iris model, defaults: ``max_in_flight`` 1,000).
3. **expand**: the first M objects through ``SageMakerInvokeEndpointAsyncOperator.partial(...).expand(
   input_location=...)`` (defaults: fast-event guard, poll schedule).
4. **watch**: all N objects through the batch operator with a slow model (``custom_attributes="sleep=60"``) and
   ``max_in_flight=N``: once the trigger watches N pending items, the triggerer's CPU over one minute
   (``--watch-seconds``). The run is abandoned afterwards (the cluster and the backend are stopped).

Measured:

- **wall**: trigger (REST ``POST dagRuns``) -> the run's state ``success`` (REST, polled every 2 s: the
  api-server's CPU includes these requests, hence the ratio is also given without the api-server);
- **submissions/s**: the batch task's own log lines (``sent <n> items in <s> s``), summed over its waves;
- **CPU** of each component: a sampler thread reads, every 0.5 s, each component's process tree with psutil:
  the sum over live processes of user + system + children's user + system (a task process that ended and was
  reaped by its LocalExecutor worker is in the worker's children's times). A phase's CPU is the difference
  between its end and its start. *worker* = the scheduler's tree minus the scheduler process itself (the
  LocalExecutor's workers, their supervisors and the task processes);
- **peak RSS**: the largest RSS sampled of each component's main process and of any one process in its tree;
- **S3 requests per check**: the triggerer alone reaches S3 through a recording proxy (``tests/proxy.py``) in
  this process (its ``aws_default`` points at the proxy; every other component's at moto itself). Requests
  are counted by kind (LIST = ``GET ?list-type=2``, HEAD, GET of ``state.json`` once per trigger run); a check
  LISTs the pending blocks in order (output, then failure, per block), so a LIST that does not follow the
  previous one in that order starts a new check (:func:`s3_checks`).

Output: a Markdown table on stdout, ``benchmarks/results/batch.json`` and ``benchmarks/results/batch.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import re
import shutil
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import psutil
from _common import BENCHMARKS_DIR, REPO_DIR, RESULTS_DIR, fmt, markdown_table, run_script, write_json
from aiohttp import web
from botocore.config import Config

from airflow_sagemaker_async.local.harness import (
    COMPONENTS,
    AirflowCluster,
    BackendProcess,
    airflow_environment,
    free_port,
    wait_for,
)

sys.path.insert(0, str(REPO_DIR))  # the recording proxy of the tests
from tests.proxy import Proxy

BATCH_DAG = "sagemaker_async_bench_batch"
EXPAND_DAG = "sagemaker_async_bench_expand"
WATCH_STATE_DAG = "sagemaker_async_bench_watch_state"
INPUT_KEY_PREFIX = "bench-batch/inputs"
#: The benchmark's endpoint: the bundled iris model without SNS notifications (nothing here reads them).
ENDPOINT_NAME = "bench-iris"
IRIS_IMAGE = "sagemaker-async-local/iris:latest"
#: One flower per input object, cycling (all well-formed: every item should end Completed).
ROWS = ("5.1,3.5,1.4,0.2\n", "6.7,3.0,5.2,2.3\n", "5.9,3.0,4.2,1.5\n")
SAMPLE_SECONDS = 0.5
#: How often the run's state is asked of the REST API (each request costs the api-server some CPU, measured too).
POLL_SECONDS = 2.0
#: Silence between two checks of the trigger, seconds (its requests within a check follow each other).
CHECK_GAP_SECONDS = 0.8
SENT = re.compile(r"sent (\d+) items in ([0-9.]+) s")
TARGET_BATCH_SECONDS = 300
TARGET_BATCH_100K_SECONDS = 900
TARGET_FIRST_WAVE_SECONDS = 60
TARGET_WORKER_RSS_MB = 500
ROLLING_SECONDS = 60.0
TARGET_TRIGGERER_CORE_PERCENT = 5.0
TARGET_CPU_RATIO = 20.0


# -- what the worker and the triggerer ask S3 -------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One request a proxy forwarded: when (``time.time()``), what, and its body bytes each way."""

    at: float
    kind: str  # LIST (GET ?list-type=2), GET, PUT, HEAD, DELETE, POST, or the X-Amz-Target operation
    prefix: str  # a LIST's Prefix, else the path
    sent: int
    received: int


class CountingProxy(Proxy):
    """The tests' proxy, keeping no body: each request's time, kind, prefix and bytes (:class:`Request`)."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream, record=False)
        self.log: list[Request] = []

    def __enter__(self) -> CountingProxy:
        super().__enter__()
        return self

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        at = time.time()
        response = await super()._handle(request)
        body = await request.read()  # cached by aiohttp: the body the proxy forwarded
        received = response.body if isinstance(response, web.Response) else None
        self.log.append(
            Request(
                at,
                _kind(request),
                _prefix(request),
                len(body),
                len(received) if isinstance(received, (bytes, bytearray)) else 0,
            )
        )
        return response

    def window(self, start: float, end: float) -> list[Request]:
        """Return the requests that arrived between ``start`` and ``end`` (``time.time()``)."""
        return [request for request in list(self.log) if start <= request.at < end]


def _kind(request: web.Request) -> str:
    target = request.headers.get("X-Amz-Target")
    if target:
        return target.rsplit(".", 1)[-1]
    if request.method == "GET" and "list-type=2" in request.query_string:
        return "LIST"
    return request.method


def _prefix(request: web.Request) -> str:
    """A LIST's ``Prefix`` (and ``StartAfter`` after a space, when given), else the path."""
    if "list-type=2" in request.query_string:
        query = urllib.parse.parse_qs(request.query_string)
        start_after = query.get("start-after", [""])[0]
        return query.get("prefix", [""])[0] + (f" {start_after}" if start_after else "")
    return request.path


def _list_order(prefix: str) -> tuple[int, int]:
    """``(first item, 0 for output / 1 for failure)`` of a batch LIST (``StartAfter=.../<tag>-<first:07d>``)."""
    first = re.search(r"-(\d{7})$", prefix)
    return (int(first.group(1)) if first else -1, 1 if "/failure/" in f"/{prefix}" else 0)


def traffic(requests: list[Request]) -> dict[str, Any]:
    """Count requests by kind, and bytes sent and received."""
    counts: dict[str, int] = {}
    for request in requests:
        counts[request.kind] = counts.get(request.kind, 0) + 1
    return {
        "requests": len(requests),
        "by_kind": counts,
        "bytes_sent": sum(r.sent for r in requests),
        "bytes_received": sum(r.received for r in requests),
    }


def s3_checks(requests: list[Request]) -> dict[str, Any]:
    """
    Count the triggerer's requests by kind, and its checks.

    A check LISTs the runs of pending blocks in order, output before failure (``list_requests``): a LIST that does
    not come after the previous one in that order, or the first after the trigger read its state (GET), starts a
    new check. Also counted: bursts of LIST/HEAD separated by more than CHECK_GAP_SECONDS (a cross-check).
    """
    counts: dict[str, int] = {}
    checks, previous = 0, None
    for request in requests:
        counts[request.kind] = counts.get(request.kind, 0) + 1
        if request.kind == "GET":
            previous = None
        elif request.kind == "LIST":
            order = _list_order(request.prefix)
            if previous is None or order <= previous:
                checks += 1
            previous = order
    polls = sorted(r.at for r in requests if r.kind in {"LIST", "HEAD"})
    bursts = sum(
        1 for before, after in zip([-math.inf, *polls], polls, strict=False) if after - before > CHECK_GAP_SECONDS
    )
    return {
        "requests": counts,
        "checks": checks,
        "per_check": (len(polls) / checks) if checks else None,
        "bursts": bursts,
        "bytes_received": sum(r.received for r in requests),
    }


# -- CPU and RSS of each component ------------------------------------------------------------------------------


@dataclass
class Usage:
    """CPU seconds of each component's tree at one moment (and of the scheduler process alone)."""

    at: float
    cpu: dict[str, float]


@dataclass
class Sampler:
    """Samples every component's process tree every 0.5 s in a thread: CPU (cumulative) and peak RSS."""

    roots: dict[str, int]
    latest: Usage | None = None
    peak_root_rss: dict[str, int] = field(default_factory=dict)
    peak_any_rss: dict[str, tuple[int, str]] = field(default_factory=dict)
    #: ``(time.time(), triggerer CPU s so far, largest worker process RSS bytes)`` of every sample.
    series: list[tuple[float, float, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self.sample()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self.sample()

    def sample(self) -> Usage:
        """Read every tree now; return (and keep) the cumulative CPU of each component."""
        cpu: dict[str, float] = {}
        worker_rss = 0
        for name, pid in self.roots.items():
            total = 0.0
            try:
                root = psutil.Process(pid)
                members = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                members = []
            for member in members:
                try:
                    with member.oneshot():
                        times = member.cpu_times()
                        rss = member.memory_info().rss
                        label = " ".join(member.cmdline())[:90] or member.name()
                except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                    continue
                total += times.user + times.system + times.children_user + times.children_system
                if name == "scheduler" and member.pid != pid:
                    worker_rss = max(worker_rss, rss)  # a LocalExecutor worker, its supervisor or a task
                with self._lock:
                    if member.pid == pid:
                        cpu[f"{name} (process)"] = times.user + times.system
                        self.peak_root_rss[name] = max(self.peak_root_rss.get(name, 0), rss)
                    if rss > self.peak_any_rss.get(name, (0, ""))[0]:
                        self.peak_any_rss[name] = (rss, label)
            cpu[name] = total
        usage = Usage(time.monotonic(), cpu)
        with self._lock:
            self.latest = usage
            self.series.append((time.time(), cpu.get("triggerer", 0.0), worker_rss))
        return usage


def cpu_between(before: Usage, after: Usage) -> dict[str, float]:
    """CPU seconds of each component between two samples, with ``worker`` split off the scheduler."""
    delta = {name: after.cpu.get(name, 0.0) - before.cpu.get(name, 0.0) for name in after.cpu}
    scheduler_alone = delta.pop("scheduler (process)", 0.0)
    components = {name: value for name, value in delta.items() if not name.endswith("(process)")}
    components["worker"] = components.pop("scheduler", 0.0) - scheduler_alone
    components["scheduler"] = scheduler_alone
    components["total"] = sum(value for name, value in components.items())
    return components


# -- the run ----------------------------------------------------------------------------------------------------


def client(ready: dict[str, Any], service: str) -> Any:
    """Return a boto3 client of ``service`` on the backend's moto server."""
    return boto3.client(
        service,
        endpoint_url=ready["endpoint_url"],
        region_name=ready["region_name"],
        aws_access_key_id=ready["aws_access_key_id"],
        aws_secret_access_key=ready["aws_secret_access_key"],
        config=Config(max_pool_connections=16),
    )


def create_endpoint(ready: dict[str, Any], bucket: str, instances: int, concurrency: int) -> None:
    """Create the benchmark's async endpoint (bundled iris, no notifications) with boto3; wait for ``InService``."""
    sagemaker = client(ready, "sagemaker")
    model, config = f"{ENDPOINT_NAME}-model", f"{ENDPOINT_NAME}-config"
    sagemaker.create_model(
        ModelName=model,
        ExecutionRoleArn=f"arn:aws:iam::{ready['account_id']}:role/sagemaker-async-local",
        PrimaryContainer={"Image": IRIS_IMAGE},
    )
    sagemaker.create_endpoint_config(
        EndpointConfigName=config,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": model,
                "InstanceType": "ml.m5.large",
                "InitialInstanceCount": instances,
            }
        ],
        AsyncInferenceConfig={
            "ClientConfig": {"MaxConcurrentInvocationsPerInstance": concurrency},
            "OutputConfig": {
                "S3OutputPath": f"s3://{bucket}/{ENDPOINT_NAME}/output",
                "S3FailurePath": f"s3://{bucket}/{ENDPOINT_NAME}/failure",
            },
        },
    )
    sagemaker.create_endpoint(EndpointName=ENDPOINT_NAME, EndpointConfigName=config)
    wait_for(
        f"{ENDPOINT_NAME} to be InService",
        lambda: sagemaker.describe_endpoint(EndpointName=ENDPOINT_NAME)["EndpointStatus"] == "InService",
        120,
    )


def upload_inputs(ready: dict[str, Any], bucket: str, count: int) -> float:
    """PUT ``count`` tiny CSV objects under the input prefix (16 threads); return the seconds it took."""
    started = time.perf_counter()
    s3 = client(ready, "s3")

    def put(index: int) -> None:
        key = f"{INPUT_KEY_PREFIX}/{index:05d}.csv"
        s3.put_object(Bucket=bucket, Key=key, Body=ROWS[index % len(ROWS)].encode(), ContentType="text/csv")

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, range(count)))
    return time.perf_counter() - started


def start_cluster(cluster: AirflowCluster, own_env: dict[str, dict[str, str]]) -> None:
    """Start the components as ``start_components`` does; those in ``own_env`` with these variables added."""
    for name, command in COMPONENTS:
        arguments = [argument.format(port=cluster.port) for argument in command]
        cluster.start(name, *arguments, env=own_env.get(name))
    wait_for("the api-server to answer", cluster.answers, 240, cluster, interval=1)
    wait_for("the admin password", cluster.password_file().exists, 60, cluster)
    cluster.login()


def proxied_connection(ready: dict[str, Any], proxy: CountingProxy) -> str:
    """Return ``AIRFLOW_CONN_AWS_DEFAULT`` with S3 and the control plane through ``proxy`` (the runtime direct)."""
    connection = json.loads(ready["airflow_conn_aws_default"])
    connection["extra"]["endpoint_url"] = proxy.url
    return json.dumps(connection)


def run_dag(cluster: AirflowCluster, sampler: Sampler, dag_id: str, timeout: float) -> dict[str, Any]:
    """Trigger ``dag_id``, wait for its end; return its run id, state, wall seconds and CPU by component."""
    before = sampler.sample()
    started, triggered_at = time.monotonic(), time.time()
    run_id = cluster.trigger(dag_id)
    state = wait_for(
        f"{dag_id} to finish",
        lambda: (s := cluster.run_state(dag_id, run_id)) in {"success", "failed"} and s,
        timeout,
        cluster,
        interval=POLL_SECONDS,
    )
    wall = time.monotonic() - started
    after = sampler.sample()
    return {
        "run_id": run_id,
        "state": state,
        "wall_s": wall,
        "triggered_at": triggered_at,
        "ended_at": time.time(),
        "cpu_s": cpu_between(before, after),
    }


def task_logs(cluster: AirflowCluster, dag_id: str, run_id: str, task_id: str, pattern: str) -> str:
    """Return the text of the task's log files matching ``pattern`` (attempts, or their triggers' logs)."""
    folder = cluster.task_log_dir(dag_id, run_id, task_id)
    return "".join(path.read_text(errors="replace") for path in sorted(folder.glob(pattern)))


def submissions(log: str) -> dict[str, float]:
    """Sum the batch task's ``sent <n> items in <s> s`` lines: items, seconds, items per second."""
    waves = [(int(n), float(s)) for n, s in SENT.findall(log)]
    items, seconds = sum(n for n, _ in waves), sum(s for _, s in waves)
    return {"items": items, "seconds": seconds, "per_s": items / seconds if seconds else None, "waves": len(waves)}


def log_times(log: str) -> list[tuple[float, str]]:
    """Return ``(time.time(), event)`` of every JSON line of a task log (Airflow 3 writes JSON lines)."""
    lines = []
    for text in log.splitlines():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            record = json.loads(text)
            moment = datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00"))
            lines.append((moment.timestamp(), str(record["event"])))
    return sorted(lines)


def waves(log: str, worker: CountingProxy, triggerer: CountingProxy, start: float) -> list[dict[str, Any]]:
    """
    Return the batch's waves from its log: each ``sent <n> items in <s> s`` line is the end of a wave.

    A wave's S3 figures are those of the requests between the end of the wave before it (or ``start``) and its
    own end: its bookkeeping (LIST, ended part, state), its submissions' look-ups, and the triggerer's checks
    while the task waited. ``at`` is seconds since ``start`` (the trigger of the run).
    """
    found: list[dict[str, Any]] = []
    previous = start
    for at, event in log_times(log):
        match = SENT.search(event)
        if not match:
            continue
        items, seconds = int(match.group(1)), float(match.group(2))
        worker_traffic = traffic(worker.window(previous, at))
        triggerer_traffic = traffic(triggerer.window(previous, at))
        found.append(
            {
                "at": at - start,
                "items": items,
                "seconds": seconds,
                "per_s": items / seconds if seconds else None,
                "since_previous_s": at - previous,
                "worker_s3": worker_traffic,
                "triggerer_s3": triggerer_traffic,
                "s3_requests": worker_traffic["requests"] + triggerer_traffic["requests"],
                "s3_bytes": sum(t["bytes_sent"] + t["bytes_received"] for t in (worker_traffic, triggerer_traffic)),
            }
        )
        previous = at
    return found


def run_timeout(n: int) -> float:
    """Seconds to wait for a run of ``n`` items: 900 s up to 10,000, then in proportion (10 per second and more)."""
    return max(900.0, n / 10)


def target_seconds(n: int) -> float:
    """The wall-time target of a batch of ``n``: 300 s up to 10,000 (issue 9), 900 s for 100,000 (issue 21)."""
    return TARGET_BATCH_SECONDS if n <= 10_000 else TARGET_BATCH_100K_SECONDS


def watch_phase(
    cluster: AirflowCluster, sampler: Sampler, proxy: CountingProxy, n: int, seconds: float
) -> dict[str, Any]:
    """Trigger the state-only watch DAG; once its trigger watches ``n`` items, measure the triggerer for ``seconds``."""
    started = time.monotonic()
    run_id = cluster.trigger(WATCH_STATE_DAG)
    watching = re.compile(rf"Watching batch \w+: {n} in flight")
    wait_for(
        f"the watch trigger to watch {n} items",
        lambda: watching.search(task_logs(cluster, WATCH_STATE_DAG, run_id, "watch", "attempt=*.log.trigger.*.log")),
        600,
        cluster,
        interval=1,
    )
    deferred_after = time.monotonic() - started
    time.sleep(min(5.0, seconds / 4))  # past the trigger's state read and first check
    submitted = sampler.sample()
    window_start, wall_start = time.monotonic(), time.time()
    time.sleep(seconds)
    after = sampler.sample()
    window = time.monotonic() - window_start
    cpu = cpu_between(submitted, after)
    return {
        "run_id": run_id,
        "items": n,
        "how": "state-only: a task writes N pending items and defers to the real batch trigger (no submission)",
        "write_and_defer_s": deferred_after,
        "window_s": window,
        "cpu_s": cpu,
        "triggerer_cpu_s_per_min": cpu["triggerer"] * 60 / window,
        "triggerer_core_percent": cpu["triggerer"] / window * 100,
        "s3": s3_checks(proxy.window(wall_start, wall_start + window)),
        "state_at_end": cluster.run_state(WATCH_STATE_DAG, run_id),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="batch 1,000, expand 20, watch 30 s")
    parser.add_argument("--n", type=int, help="batch items (default 10,000; 1,000 with --quick)")
    parser.add_argument("--m", type=int, help="mapped single-operator inputs (default 100; 20 with --quick; 0: skip)")
    parser.add_argument("--watch-seconds", type=float, help="triggerer measurement window (default 60; 30 quick)")
    parser.add_argument("--idle-seconds", type=float, default=30.0, help="idle measurement, s; default 30")
    parser.add_argument("--instances", type=int, default=2, help="endpoint instances (model processes); default 2")
    parser.add_argument("--concurrency", type=int, default=8, help="invocations per instance at once; default 8")
    parser.add_argument("--skip-watch", action="store_true", help="skip the watch phase")
    parser.add_argument("--out-dir", default=str(RESULTS_DIR), help="default benchmarks/results")
    parser.add_argument(
        "--report-only", action="store_true", help="print the tables of batch.json and draw the chart of batch-n*.json"
    )
    args = parser.parse_args(argv)
    if args.report_only:
        report(json.loads((Path(args.out_dir) / "batch.json").read_text()), Path(args.out_dir))
        return 0
    n = args.n or (1_000 if args.quick else 10_000)
    m = args.m if args.m is not None else (20 if args.quick else 100)
    watch_seconds = args.watch_seconds or (30.0 if args.quick else 60.0)

    out_dir = Path(args.out_dir)
    work_dir = out_dir / "batch"
    shutil.rmtree(work_dir, ignore_errors=True)
    started = time.perf_counter()
    document: dict[str, Any] = {
        "benchmark": "batch",
        "created_at": datetime.now(UTC).isoformat(),
        "settings": {
            "n": n,
            "m": m,
            "watch_seconds": watch_seconds,
            "endpoint": {"name": ENDPOINT_NAME, "instances": args.instances, "concurrency": args.concurrency},
        },
        "machine": {"cpus": psutil.cpu_count(), "load_average_at_start": list(psutil.getloadavg())},
    }
    print(f"local backend, {n} input objects ...", file=sys.stderr, flush=True)
    with (
        BackendProcess(work_dir, quiet=True) as backend,
        CountingProxy(backend.ready["endpoint_url"]) as worker_proxy,
        CountingProxy(backend.ready["endpoint_url"]) as triggerer_proxy,
    ):
        ready = backend.ready
        bucket = ready["demo"]["bucket"]
        create_endpoint(ready, bucket, args.instances, args.concurrency)
        extra = {
            "SAGEMAKER_ASYNC_ENDPOINT": ENDPOINT_NAME,
            "SAGEMAKER_ASYNC_BENCH_INPUT_PREFIX": f"s3://{bucket}/{INPUT_KEY_PREFIX}",
            "SAGEMAKER_ASYNC_BENCH_EXPAND_M": str(m),
            "SAGEMAKER_ASYNC_BENCH_WATCH_STATE_N": str(n),
            "SAGEMAKER_ASYNC_BENCH_WATCH_STATE_OUTPUT": f"s3://{bucket}/{ENDPOINT_NAME}/output",
        }
        env = airflow_environment(
            work_dir / "airflow-home",
            ready=ready,
            dags_folder=BENCHMARKS_DIR / "dags",
            api_port=free_port(),
            extra=extra,
        )
        own_env = {
            "scheduler": {"AIRFLOW_CONN_AWS_DEFAULT": proxied_connection(ready, worker_proxy)},  # its task processes
            "triggerer": {"AIRFLOW_CONN_AWS_DEFAULT": proxied_connection(ready, triggerer_proxy)},
        }
        with ThreadPoolExecutor(1) as uploader, AirflowCluster(env) as cluster:
            upload = uploader.submit(upload_inputs, ready, bucket, n)
            cluster.migrate_db()
            print("airflow components ...", file=sys.stderr, flush=True)
            start_cluster(cluster, own_env)
            wait_for(
                "the dag-processor to parse the benchmark DAGs",
                lambda: all(cluster.dag_count(d) == 1 for d in (BATCH_DAG, EXPAND_DAG, WATCH_STATE_DAG)),
                240,
                cluster,
                interval=1,
            )
            document["upload_s"] = upload.result()
            sampler = Sampler({name: process.pid for name, process in cluster.processes.items()})
            sampler.start()
            try:
                print(f"idle {args.idle_seconds:g} s ...", file=sys.stderr, flush=True)
                before = sampler.sample()
                time.sleep(args.idle_seconds)
                idle = cpu_between(before, sampler.sample())
                document["idle"] = {
                    "seconds": args.idle_seconds,
                    "cpu_s": idle,
                    "cpu_s_per_min": {k: v * 60 / args.idle_seconds for k, v in idle.items()},
                }

                print(f"batch of {n} ...", file=sys.stderr, flush=True)
                batch = run_dag(cluster, sampler, BATCH_DAG, run_timeout(n))
                start, end = batch["triggered_at"], batch["ended_at"]
                summary = cluster.xcom(BATCH_DAG, batch["run_id"], "score") if batch["state"] == "success" else None
                attempts = task_logs(cluster, BATCH_DAG, batch["run_id"], "score", "attempt=*.log")
                lines = log_times(attempts)
                s3 = s3_checks(triggerer_proxy.window(start, end))
                s3["trigger_runs"] = s3["requests"].get("GET", 0)  # each run reads state.json once
                series = [(at - start, cpu, rss) for at, cpu, rss in list(sampler.series) if start <= at <= end]
                batch_waves = waves(attempts, worker_proxy, triggerer_proxy, start)
                batch.update(
                    items=n,
                    summary=summary,
                    submissions=submissions(attempts),
                    s3=s3,
                    worker_s3=traffic(worker_proxy.window(start, end)),
                    triggerer_s3=traffic(triggerer_proxy.window(start, end)),
                    waves=batch_waves,
                    task_started_s=(lines[0][0] - start) if lines else None,
                    first_wave_sent_s=(batch_waves[0]["at"] - batch_waves[0]["seconds"]) if batch_waves else None,
                    worker_peak_rss_mb=max((rss for _, _, rss in series), default=0) / 2**20,
                    series=[{"t": t, "triggerer_cpu_s": cpu, "worker_rss_mb": rss / 2**20} for t, cpu, rss in series],
                    triggerer_cpu_s_per_min=batch["cpu_s"]["triggerer"] * 60 / batch["wall_s"],
                )
                document["batch"] = batch

                if m:
                    print(f".expand over {m} inputs ...", file=sys.stderr, flush=True)
                    expand = run_dag(cluster, sampler, EXPAND_DAG, 1800)
                    states = cluster.task_states(EXPAND_DAG, expand["run_id"]) if m <= 100 else {}
                    expand.update(items=m, task_states_sample=sorted({str(s) for s in states.values()}))
                    document["expand"] = expand

                if not args.skip_watch:
                    print(f"watch: {n} pending items, {watch_seconds:g} s ...", file=sys.stderr, flush=True)
                    document["watch"] = watch_phase(cluster, sampler, triggerer_proxy, n, watch_seconds)
            finally:
                sampler.stop()
                document["peak_rss_mb"] = {
                    name: {
                        "process": sampler.peak_root_rss.get(name, 0) / 2**20,
                        "largest_in_tree": sampler.peak_any_rss.get(name, (0, ""))[0] / 2**20,
                        "largest_is": sampler.peak_any_rss.get(name, (0, ""))[1],
                    }
                    for name in sampler.roots
                }
                document["wall_s"] = time.perf_counter() - started
                document["machine"]["load_average_at_end"] = list(psutil.getloadavg())
                write_json(out_dir / "batch.json", document)
                write_json(out_dir / f"batch-n{n}.json", document)
    report(document, out_dir)
    expand_ok = "expand" not in document or document["expand"]["state"] == "success"
    return 0 if document["batch"]["state"] == "success" and expand_ok else 1


# -- report -----------------------------------------------------------------------------------------------------


def report(document: dict[str, Any], out_dir: Path) -> None:
    """Print the tables, add the derived figures and targets to the JSON, draw the chart of every run kept."""
    batch, expand, watch = document["batch"], document.get("expand"), document.get("watch")
    n = batch["items"]
    per_input_batch = batch["cpu_s"]["total"] / n
    per_input_expand = expand["cpu_s"]["total"] / expand["items"] if expand else None
    ratio = per_input_expand / per_input_batch if per_input_expand and per_input_batch else None
    document["derived"] = {
        "cpu_per_input_batch_s": per_input_batch,
        "cpu_per_input_expand_s": per_input_expand,
        "cpu_per_input_ratio": ratio,
    }
    if expand:
        without_api = [(run["cpu_s"]["total"] - run["cpu_s"]["api-server"]) / run["items"] for run in (batch, expand)]
        document["derived"]["cpu_per_input_ratio_without_api_server"] = (
            without_api[1] / without_api[0] if without_api[0] else None
        )
    target = target_seconds(n)
    first_wave = batch.get("first_wave_sent_s")
    rss = batch.get("worker_peak_rss_mb")
    document["targets"] = {
        "cpu_per_input_ratio_ge_20": None if ratio is None else ratio >= TARGET_CPU_RATIO,
        f"batch_within_{target:.0f}_s": batch["state"] == "success" and batch["wall_s"] <= target,
        "first_wave_within_60_s": first_wave is not None and first_wave <= TARGET_FIRST_WAVE_SECONDS,
        "worker_peak_rss_under_500_mb": rss is not None and rss < TARGET_WORKER_RSS_MB,
        "watch_triggerer_lt_5_percent": watch is not None
        and watch["triggerer_core_percent"] < TARGET_TRIGGERER_CORE_PERCENT,
    }
    write_json(out_dir / "batch.json", document)
    write_json(out_dir / f"batch-n{n}.json", document)

    components = ("worker", "scheduler", "triggerer", "dag-processor", "api-server", "total")
    rows = [
        [
            f"batch of {n:,}",
            batch["state"],
            f"{batch['wall_s']:,.1f} ({n / batch['wall_s']:,.0f} inputs/s)",
            fmt(batch["submissions"]["per_s"], 0),
            *(fmt(batch["cpu_s"][c], 1) for c in components),
            fmt(per_input_batch * 1000, 2),
        ]
    ]
    if expand:
        rows.append(
            [
                f".expand over {expand['items']:,}",
                expand["state"],
                f"{expand['wall_s']:,.1f} ({expand['items'] / expand['wall_s']:,.2f} inputs/s)",
                "-",
                *(fmt(expand["cpu_s"][c], 1) for c in components),
                fmt(per_input_expand * 1000 if per_input_expand else None, 2),
            ]
        )
    print("\n### Batch (and .expand, same Airflow, same run)\n")
    print(
        markdown_table(
            ["run", "state", "wall s", "submissions/s", *(f"{c} CPU s" for c in components), "CPU ms per input"],
            rows,
        )
    )
    summary = batch.get("summary") or {}
    s3 = batch["s3"]
    print(
        f"\nBatch summary: counts {summary.get('counts')}, invocations {summary.get('invocations')}, deferrals "
        f"{summary.get('deferrals')}; submitted {batch['submissions']['items']:,} items in "
        f"{batch['submissions']['seconds']:.1f} s over {batch['submissions']['waves']} waves. Task started "
        f"{fmt(batch.get('task_started_s'), 1)} s after the trigger, first wave sent at {fmt(first_wave, 1)} s. "
        f"Triggerer S3 requests {s3['requests']} over {s3.get('trigger_runs')} trigger runs, {s3.get('checks')} "
        f"checks ({fmt(s3['per_check'], 1)} LIST/HEAD per check)."
    )
    if "worker_s3" in batch:
        for who in ("worker_s3", "triggerer_s3"):
            t = batch[who]
            print(
                f"{who.replace('_s3', '')}: {t['requests']:,} requests {t['by_kind']}, "
                f"{t['bytes_sent'] / 2**20:,.1f} MB sent, {t['bytes_received'] / 2**20:,.1f} MB received"
            )
    if ratio is not None:
        print(f"**CPU per input, .expand / batch: {fmt(ratio, 1)}x** (target >= {TARGET_CPU_RATIO:g}x)")

    if batch.get("waves"):
        print(f"\n### Waves of the batch of {n:,} (S3: worker + triggerer since the wave before)\n")
        wave_rows = []
        shown = batch["waves"]
        if len(shown) > 40:  # the first 10, every k-th, the last 10
            step = math.ceil((len(shown) - 20) / 20)
            keep = set(range(10)) | set(range(10, len(shown) - 10, step)) | set(range(len(shown) - 10, len(shown)))
            shown = [w for i, w in enumerate(shown) if i in keep]
        for wave in shown:
            wave_rows.append(
                [
                    str(batch["waves"].index(wave) + 1),
                    fmt(wave["at"], 1),
                    f"{wave['items']:,}",
                    fmt(wave["seconds"], 1),
                    fmt(wave["per_s"], 0),
                    fmt(wave["since_previous_s"], 1),
                    f"{wave['worker_s3']['requests']:,}",
                    f"{wave['triggerer_s3']['requests']:,}",
                    fmt((wave["worker_s3"]["bytes_sent"] + wave["worker_s3"]["bytes_received"]) / 1024, 0),
                    fmt((wave["triggerer_s3"]["bytes_sent"] + wave["triggerer_s3"]["bytes_received"]) / 1024, 0),
                ]
            )
        print(
            markdown_table(
                [
                    "wave",
                    "sent at s",
                    "items",
                    "send s",
                    "sent/s",
                    "s since previous",
                    "worker S3 req",
                    "triggerer S3 req",
                    "worker S3 KB",
                    "triggerer S3 KB",
                ],
                wave_rows,
            )
        )

    if watch is not None:
        idle = document["idle"]["cpu_s_per_min"]["triggerer"]
        print(f"\n### Triggerer watching {watch['items']:,} pending items ({watch.get('how', 'slow model')})\n")
        print(
            markdown_table(
                ["what", "value"],
                [
                    ["window (s)", fmt(watch["window_s"], 1)],
                    ["triggerer CPU per minute of watching (s)", fmt(watch["triggerer_cpu_s_per_min"], 2)],
                    ["... as % of one core", fmt(watch["triggerer_core_percent"], 2, " %")],
                    ["idle triggerer, CPU per minute (s)", fmt(idle, 2)],
                    ["S3 requests in the window", str(watch["s3"]["requests"])],
                    ["checks in the window", str(watch["s3"].get("checks"))],
                    ["S3 requests per check", fmt(watch["s3"]["per_check"], 1)],
                    ["per-block LISTs before issue 21", str(2 * math.ceil(watch["items"] / 1000))],
                ],
            )
        )

    print("\n### Peak RSS (MB)\n")
    print(
        markdown_table(
            ["component", "main process", "largest process in its tree", "which"],
            [
                [name, fmt(value["process"], 0), fmt(value["largest_in_tree"], 0), f"`{value['largest_is'][:60]}`"]
                for name, value in document["peak_rss_mb"].items()
            ],
        )
    )
    print(f"Worker (largest process under the scheduler) during the batch: {fmt(rss, 0)} MB")
    print("\n### Targets\n")

    def met(key: str) -> str:
        value = document["targets"][key]
        return "-" if value is None else "yes" if value else "no"

    print(
        markdown_table(
            ["target", "result", "met"],
            [
                [
                    f"batch of {n:,} within {target:.0f} s",
                    f"{batch['wall_s']:.0f} s",
                    met(f"batch_within_{target:.0f}_s"),
                ],
                [
                    "first wave sent within 60 s of the trigger",
                    f"{fmt(first_wave, 1)} s",
                    met("first_wave_within_60_s"),
                ],
                ["worker peak RSS < 500 MB", f"{fmt(rss, 0)} MB", met("worker_peak_rss_under_500_mb")],
                [
                    "triggerer < 5 % of a core watching all pending",
                    "-" if watch is None else f"{watch['triggerer_core_percent']:.2f} %",
                    met("watch_triggerer_lt_5_percent"),
                ],
                ["CPU per input .expand / batch >= 20x", f"{fmt(ratio, 1)}x", met("cpu_per_input_ratio_ge_20")],
            ],
        )
    )
    runs = sorted(
        (json.loads(path.read_text()) for path in out_dir.glob("batch-n*.json")), key=lambda d: d["batch"]["items"]
    )
    _chart(runs or [document], out_dir / "batch.png")
    print(f"\nJSON: {out_dir / 'batch.json'}  chart: {out_dir / 'batch.png'} ({len(runs)} runs)")
    print(f"Total wall time: {document['wall_s']:,.0f} s; machine {document['machine']}")


def _chart(runs: list[dict[str, Any]], path: Path) -> None:
    """Draw every run (e.g. 10,000 and 100,000 items) on one PNG: wall, sent/s per wave, S3 per wave, RSS, watch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 5, figsize=(26, 5))
    wall, rate, requests, memory, watch = axes
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:purple"]
    labels = [f"{run['batch']['items']:,}" for run in runs]
    walls = [run["batch"]["wall_s"] for run in runs]
    wall.bar(labels, walls, color=colours[: len(runs)])
    for x, (value, run) in enumerate(zip(walls, runs, strict=True)):
        done = run["batch"]["state"] == "success"
        text = f"{value:,.0f} s" if done else f"{value:,.0f} s: stopped,\n{run['batch']['submissions']['items']:,} sent"
        wall.annotate(text, (x, value), ha="center", va="bottom", fontsize=9)
        wall.plot(
            [x - 0.4, x + 0.4], [target_seconds(run["batch"]["items"])] * 2, color="red", linestyle="--", linewidth=1
        )
    wall.set_ylim(0, max([*walls, *(target_seconds(r["batch"]["items"]) for r in runs)]) * 1.25)
    wall.set_xlabel("items")
    wall.set_ylabel("s, trigger -> success")
    wall.set_title("Wall time (red: target)")
    for colour, label, run in zip(colours, labels, runs, strict=False):
        found = run["batch"].get("waves") or []
        rate.plot([w["at"] for w in found], [w["per_s"] or 0 for w in found], ".", color=colour, alpha=0.35)
        rolling = [
            sum(v["items"] for v in found if w["at"] - ROLLING_SECONDS < v["at"] <= w["at"]) / ROLLING_SECONDS
            for w in found
        ]
        rate.plot(
            [w["at"] for w in found], rolling, "-", color=colour, linewidth=2, label=f"{label}: sent/s, last 60 s"
        )
        requests.plot(
            range(1, len(found) + 1), [w["s3_requests"] for w in found], ".-", color=colour, label=f"{label}: requests"
        )
        series = run["batch"].get("series") or []
        memory.plot([p["t"] for p in series], [p["worker_rss_mb"] for p in series], color=colour, label=label)
    rate.set_xlabel("s since the trigger (end of each wave's sends)")
    rate.set_ylabel("items sent / s (dots: during each wave)")
    rate.set_title("Submissions per wave, and over the last 60 s")
    rate.legend(fontsize=8)
    requests.set_xlabel("wave")
    requests.set_yscale("log")
    requests.set_ylabel("S3 requests since the wave before (log; wave 1 lists and pins)")
    requests.set_title("S3 requests per wave")
    requests.legend(fontsize=8)
    memory.axhline(TARGET_WORKER_RSS_MB, color="red", linestyle="--", label="500 MB")
    memory.set_xlabel("s since the trigger")
    memory.set_ylabel("MB (largest process under the scheduler)")
    memory.set_title("Worker RSS")
    memory.legend(fontsize=8)
    bars = {
        f"{label}\npending": run["watch"]["triggerer_core_percent"]
        for label, run in zip(labels, runs, strict=True)
        if run.get("watch")
    }
    watch.bar(list(bars), list(bars.values()), color="tab:green")
    watch.axhline(TARGET_TRIGGERER_CORE_PERCENT, color="red", linestyle="--", label="target: 5 % of one core")
    watch.set_ylabel("% of one core")
    watch.set_title("Triggerer CPU while watching")
    watch.legend(fontsize=8)
    figure.suptitle("Batch operator under a real Airflow (LocalExecutor) against the local backend")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


if __name__ == "__main__":
    run_script(main)
