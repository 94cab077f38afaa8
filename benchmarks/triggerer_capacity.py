"""
Triggerer capacity: N concurrent waits on one asyncio event loop, stock pattern vs ours.

    .venv/bin/python benchmarks/triggerer_capacity.py            # N = 100, 1000, 5000, 10000 (~25 min)
    .venv/bin/python benchmarks/triggerer_capacity.py --quick    # N = 100, 1000 (~4 min)

Patterns, side by side in the same run:

- ``stock``: the amazon provider's ``S3KeyTrigger`` (one per inference, on the output key,
  ``poke_interval=5``): each trigger opens its own aiobotocore client through ``AwsBaseHook.get_async_conn()``.
- ``ours``: ``SageMakerAsyncInferenceTrigger`` (output + failure location, default schedule 2 s x1.5 up
  to 30 s): one aiobotocore client shared by every trigger of the loop.

Each (pattern, N) runs in a fresh process (``_worker``), like a triggerer: one event loop, all triggers
started at once. The local S3 (moto, ``sagemaker-async-local up --no-demo``) runs in another process, and
so does the writer (``_writer``) that PUTs the N output objects spread over ``--write-window`` seconds once
every trigger is watching, recording when each PUT returned. Measured in the worker:

- CPU (user+sys of the process, all threads) and wall seconds from the first trigger's creation until
  every trigger has made its first HeadObject ("all watching");
- peak RSS (``ru_maxrss``) and the RSS after imports, before any trigger;
- event-loop lag: a coroutine sleeps 50 ms in a loop and records the overshoot (p50/p99/max, and how
  many stalls exceeded Airflow's 0.2 s warning);
- S3 requests per inference: HeadObject calls counted by wrapping ``AioBaseClient._make_api_call``
  (both patterns go through it);
- detection latency: object written (PUT returned, in the writer) -> event received from the trigger.

A run is aborted at ``--budget-seconds`` or ``--max-rss-mb`` and reported "did not finish within budget"
with what it measured until then. Output: a Markdown table on stdout,
``benchmarks/results/triggerer_capacity.json`` and ``benchmarks/results/triggerer_capacity.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _common import RESULTS_DIR, fmt, markdown_table, percentile, write_json

from airflow_sagemaker_async.local.harness import BackendProcess, airflow_environment

PATTERNS = ("stock", "ours")
DEFAULT_NS = (100, 1000, 5000, 10000)
QUICK_NS = (100, 1000)
BUCKET = "bench-capacity"
LAG_TICK = 0.05
PROGRESS_EVERY = 2.0
#: Extra seconds the orchestrator grants a worker past its own budget before killing it.
KILL_GRACE = 60.0


# --------------------------------------------------------------------------------------------------
# Worker: one (pattern, N) in one process and one event loop, like a triggerer.
# --------------------------------------------------------------------------------------------------


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class Recorder:
    """Everything the worker measures; written to the result file as it goes."""

    def __init__(self, args: argparse.Namespace, output_keys: list[str]) -> None:
        self.args = args
        self.n = args.n
        self.output_keys = set(output_keys)
        self.started_wall = 0.0
        self.started_cpu = 0.0
        self.api_calls: Counter[str] = Counter()
        self.head_errors: Counter[str] = Counter()
        self.watching: set[str] = set()
        self.all_watching = asyncio.Event()
        self.watch_wall: float | None = None
        self.watch_cpu: float | None = None
        self.watch_heads: int | None = None
        self.events: dict[str, tuple[float, str]] = {}
        self.statuses: Counter[str] = Counter()
        self.lags: list[float] = []
        self.lags_ramp_up: list[float] = []
        self.rss_samples: list[tuple[float, float]] = []
        self.abort_reason: str | None = None
        self.baseline_rss_mb = _rss_mb()
        self.import_cpu = _cpu()
        self.loadavg_at_start = 0.0

    def start(self) -> None:
        self.started_wall = time.perf_counter()
        self.started_cpu = _cpu()
        self.loadavg_at_start = os.getloadavg()[0]

    def elapsed(self) -> float:
        return time.perf_counter() - self.started_wall

    def first_head(self, key: str) -> None:
        if key in self.output_keys and key not in self.watching:
            self.watching.add(key)
            if len(self.watching) == self.n:
                self.watch_wall = self.elapsed()
                self.watch_cpu = _cpu() - self.started_cpu
                self.watch_heads = self.api_calls["HeadObject"]
                self.all_watching.set()

    def snapshot(self, writes: dict[str, float] | None = None, finished: bool = False) -> dict[str, Any]:
        heads = self.api_calls["HeadObject"]
        latencies = [
            detected - writes[key] for key, (detected, status) in self.events.items() if writes and key in writes
        ]
        return {
            "pattern": self.args.pattern,
            "n": self.n,
            "finished": finished,
            "abort_reason": self.abort_reason,
            "elapsed_s": self.elapsed(),
            "cpu_total_s": _cpu() - self.started_cpu,
            "cpu_imports_s": self.import_cpu,
            "watching": len(self.watching),
            "watch_wall_s": self.watch_wall,
            "watch_cpu_s": self.watch_cpu,
            "watch_heads": self.watch_heads,
            "events": len(self.events),
            "statuses": dict(self.statuses),
            "baseline_rss_mb": self.baseline_rss_mb,
            "peak_rss_mb": _peak_rss_mb(),
            "lag_p50_ms": _ms(percentile(self.lags, 50)),
            "lag_p99_ms": _ms(percentile(self.lags, 99)),
            "lag_max_ms": _ms(max(self.lags, default=None)),
            "lag_ramp_up_max_ms": _ms(max(self.lags_ramp_up, default=None)),
            "stalls_over_200ms": sum(1 for lag in self.lags if lag > 0.2),
            "api_calls": dict(self.api_calls),
            "head_errors": dict(self.head_errors),
            "heads_per_inference": heads / self.n,
            "heads_per_inference_watching": (heads / len(self.events)) if finished and self.events else None,
            "cpu_per_head_ms": (1000 * (_cpu() - self.started_cpu) / heads) if heads else None,
            "writes": len(writes or {}),
            "detection_p50_s": percentile(latencies, 50),
            "detection_p95_s": percentile(latencies, 95),
            "detection_max_s": max(latencies, default=None),
            "loadavg_1min_at_start": self.loadavg_at_start,
            "loadavg_1min_now": os.getloadavg()[0],
            "rss_samples": self.rss_samples,
        }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def _count_api_calls(recorder: Recorder) -> None:
    """Wrap ``AioBaseClient._make_api_call``: count every call, note each output key's first HeadObject."""
    from aiobotocore.client import AioBaseClient

    original = AioBaseClient._make_api_call

    async def counted(self: Any, operation_name: str, api_params: dict[str, Any]) -> Any:
        recorder.api_calls[operation_name] += 1
        try:
            return await original(self, operation_name, api_params)
        except Exception as error:
            if operation_name == "HeadObject":
                code = getattr(error, "response", {}).get("Error", {}).get("Code", type(error).__name__)
                recorder.head_errors[str(code)] += 1
            raise
        finally:
            if operation_name == "HeadObject":
                recorder.first_head(api_params.get("Key", ""))

    AioBaseClient._make_api_call = counted  # type: ignore[method-assign]


def _output_keys(run_id: str, n: int) -> list[str]:
    return [f"{run_id}/{index:05d}.out" for index in range(n)]


def _build_triggers(args: argparse.Namespace, keys: list[str]) -> list[Any]:
    if args.pattern == "stock":
        from airflow.providers.amazon.aws.triggers.s3 import S3KeyTrigger

        return [S3KeyTrigger(bucket_name=args.bucket, bucket_key=key, poke_interval=args.poke_interval) for key in keys]
    from airflow_sagemaker_async.inference.triggers import SageMakerAsyncInferenceTrigger

    deadline = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    return [
        SageMakerAsyncInferenceTrigger(
            inference_id=f"{args.run_id}-{index:05d}",
            output_location=f"s3://{args.bucket}/{key}",
            failure_location=f"s3://{args.bucket}/{key.removesuffix('.out')}-error.out",
            deadline=deadline,
        )
        for index, key in enumerate(keys)
    ]


async def _drive(trigger: Any, key: str, recorder: Recorder) -> None:
    """Run one trigger as the triggerer does: iterate ``run()`` and take its (first) event."""
    async for event in trigger.run():
        recorder.events[key] = (time.time(), str(event.payload.get("status")))
        recorder.statuses[str(event.payload.get("status"))] += 1
        break


async def _monitor(recorder: Recorder, result_file: Path, stop: asyncio.Event) -> None:
    """Record event-loop lag every 50 ms; write progress; abort the run past its budget."""
    loop = asyncio.get_running_loop()
    next_progress = loop.time() + PROGRESS_EVERY
    while not stop.is_set():
        before = loop.time()
        await asyncio.sleep(LAG_TICK)
        now = loop.time()
        lag = max(0.0, now - before - LAG_TICK)
        recorder.lags.append(lag)
        if not recorder.all_watching.is_set():
            recorder.lags_ramp_up.append(lag)
        if now >= next_progress:
            next_progress = now + PROGRESS_EVERY
            rss = _rss_mb()
            recorder.rss_samples.append((round(recorder.elapsed(), 2), round(rss, 1)))
            write_json(result_file, recorder.snapshot())
            if rss > recorder.args.max_rss_mb:
                recorder.abort_reason = f"RSS {rss:,.0f} MB over the {recorder.args.max_rss_mb:,.0f} MB budget"
            elif recorder.elapsed() > recorder.args.budget_seconds:
                recorder.abort_reason = f"not done within the {recorder.args.budget_seconds:.0f} s budget"
            if recorder.abort_reason:
                stop.set()


async def _worker(args: argparse.Namespace) -> None:
    result_file = Path(args.result_file)
    keys = _output_keys(args.run_id, args.n)
    # Imports before the clock starts: a triggerer has them loaded before its first trigger.
    from airflow.providers.amazon.aws.triggers import s3  # noqa: F401

    import airflow_sagemaker_async.inference.triggers  # noqa: F401

    recorder = Recorder(args, keys)
    recorder.baseline_rss_mb = _rss_mb()
    recorder.import_cpu = _cpu()
    _count_api_calls(recorder)
    stop = asyncio.Event()
    monitor = asyncio.create_task(_monitor(recorder, result_file, stop))
    recorder.start()
    triggers = _build_triggers(args, keys)
    tasks = [asyncio.create_task(_drive(trigger, key, recorder)) for trigger, key in zip(triggers, keys, strict=True)]
    all_done = asyncio.create_task(asyncio.wait(tasks))
    stopped = asyncio.create_task(stop.wait())

    writer: asyncio.subprocess.Process | None = None
    watching = asyncio.create_task(recorder.all_watching.wait())
    await asyncio.wait({watching, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if recorder.all_watching.is_set() and not stop.is_set():
        writer = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "_writer",
            "--endpoint-url",
            args.endpoint_url,
            "--bucket",
            args.bucket,
            "--write-window",
            str(args.write_window),
            "--writes-file",
            args.writes_file,
            "--run-id",
            args.run_id,
            "--n",
            str(args.n),
        )
        await asyncio.wait({all_done, stopped}, return_when=asyncio.FIRST_COMPLETED)

    writes: dict[str, float] = {}
    if writer is not None:
        if recorder.abort_reason is None:
            await writer.wait()
        elif writer.returncode is None:
            writer.kill()
        writes_file = Path(args.writes_file)
        if writer.returncode == 0 and writes_file.exists():  # noqa: ASYNC240 - after the measurement
            writes = json.loads(writes_file.read_text())  # noqa: ASYNC240
    finished = recorder.abort_reason is None and len(recorder.events) == args.n
    stop.set()
    monitor.cancel()
    snapshot = recorder.snapshot(writes, finished=finished)
    snapshot["wall_total_s"] = recorder.elapsed()
    write_json(result_file, snapshot)
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip cancelling thousands of tasks and closing thousands of clients: the process is done.
    os._exit(0)


# --------------------------------------------------------------------------------------------------
# Writer: PUT the output objects over a window, in another process; record when each PUT returned.
# --------------------------------------------------------------------------------------------------


def _writer(args: argparse.Namespace) -> None:
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=args.endpoint_url,
        config=Config(max_pool_connections=16, retries={"mode": "standard"}),
    )
    rng = random.Random(args.n)  # a spread of times, not cryptography
    start = time.time() + 0.5
    schedule = sorted((start + rng.uniform(0, args.write_window), key) for key in _output_keys(args.run_id, args.n))

    def put(item: tuple[float, str]) -> tuple[str, float]:
        due, key = item
        if (delay := due - time.time()) > 0:
            time.sleep(delay)
        client.put_object(Bucket=args.bucket, Key=key, Body=b'{"predictions": [0]}', ContentType="application/json")
        return key, time.time()

    with ThreadPoolExecutor(max_workers=8) as pool:
        written = dict(pool.map(put, schedule))
    write_json(Path(args.writes_file), written)


# --------------------------------------------------------------------------------------------------
# Orchestrator: the backend, one fresh worker per (pattern, N), the table, the JSON, the chart.
# --------------------------------------------------------------------------------------------------


def _run_one(args: argparse.Namespace, ready: dict[str, Any], pattern: str, n: int, work_dir: Path) -> dict[str, Any]:
    run_id = f"{pattern}-{n}-{int(time.time())}"
    result_file = work_dir / f"{run_id}.json"
    writes_file = work_dir / f"{run_id}-writes.json"
    log_file = work_dir / f"{run_id}.log"
    command = [
        sys.executable,
        __file__,
        "_worker",
        "--pattern",
        pattern,
        "--n",
        str(n),
        "--run-id",
        run_id,
        "--bucket",
        BUCKET,
        "--endpoint-url",
        ready["endpoint_url"],
        "--poke-interval",
        str(args.poke_interval),
        "--write-window",
        str(args.write_window),
        "--budget-seconds",
        str(args.budget_seconds),
        "--max-rss-mb",
        str(args.max_rss_mb),
        "--result-file",
        str(result_file),
        "--writes-file",
        str(writes_file),
    ]
    env = airflow_environment(work_dir / "airflow-home", ready=ready)
    started = time.perf_counter()
    with log_file.open("w") as log:
        # Trigger logs (INFO, as in a triggerer) go to a file, not to this console.
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            process.wait(timeout=args.budget_seconds + KILL_GRACE)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    result: dict[str, Any] = json.loads(result_file.read_text()) if result_file.exists() else {}
    if process.returncode == -9 and not result.get("abort_reason"):
        limit = args.budget_seconds + KILL_GRACE
        result["abort_reason"] = f"killed at {limit:.0f} s: its event loop was too stalled to stop itself"
    elif process.returncode != 0 and not result.get("abort_reason"):
        result["abort_reason"] = f"worker exited with {process.returncode} (see {log_file.name})"
    result.update(pattern=pattern, n=n, process_wall_s=time.perf_counter() - started, log=str(log_file))
    result.setdefault("finished", False)
    return result


def _status(result: dict[str, Any]) -> str:
    if result.get("skipped"):
        return "not run (--stock-max-n)"
    if result["finished"]:
        return "finished"
    return f"did not finish within budget: {result.get('abort_reason')}"


def _table(results: list[dict[str, Any]]) -> str:
    headers = [
        "N",
        "pattern",
        "CPU s until all watching",
        "wall s until all watching",
        "peak RSS MB",
        "loop lag p50 / p99 / max ms",
        "stalls > 0.2 s",
        "HEAD per inference",
        "detection p50 / p95 s",
        "result",
    ]
    rows = []
    for result in results:
        if result.get("skipped"):
            rows.append([f"{result['n']:,}", result["pattern"], *(["-"] * 7), _status(result)])
            continue
        watching = result.get("watching", 0)
        partial = "" if result.get("watch_wall_s") is not None else f" (only {watching:,} watching)"
        watch_cpu = result.get("watch_cpu_s")
        watch_wall = result.get("watch_wall_s")
        rows.append(
            [
                f"{result['n']:,}",
                result["pattern"],
                fmt(watch_cpu, 1) if watch_cpu is not None else f"> {fmt(result.get('cpu_total_s'), 1)}{partial}",
                fmt(watch_wall, 1) if watch_wall is not None else f"> {fmt(result.get('elapsed_s'), 1)}",
                fmt(result.get("peak_rss_mb"), 0),
                " / ".join(fmt(result.get(k), 0) for k in ("lag_p50_ms", "lag_p99_ms", "lag_max_ms")),
                str(result.get("stalls_over_200ms", "-")),
                fmt(result.get("heads_per_inference"), 1),
                " / ".join(fmt(result.get(k), 2) for k in ("detection_p50_s", "detection_p95_s")),
                _status(result),
            ]
        )
    return markdown_table(headers, rows)


def _ratios(results: list[dict[str, Any]]) -> list[str]:
    lines = []
    by_key = {(r["pattern"], r["n"]): r for r in results if not r.get("skipped")}
    for n in sorted({r["n"] for r in results}):
        stock, ours = by_key.get(("stock", n)), by_key.get(("ours", n))
        if not stock or not ours or ours.get("watch_cpu_s") is None:
            continue
        stock_cpu = stock.get("watch_cpu_s")
        if stock_cpu is not None:
            lines.append(f"N={n:,}: stock used {stock_cpu / max(ours['watch_cpu_s'], 1e-9):,.0f}x the CPU of ours")
        else:
            lines.append(
                f"N={n:,}: stock used > {stock.get('cpu_total_s', 0) / max(ours['watch_cpu_s'], 1e-9):,.0f}x "
                f"the CPU of ours (stopped with {stock.get('watching', 0):,} of {n:,} watching)"
            )
    return lines


def _chart(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("watch_cpu_s", "cpu_total_s", "CPU s until all watching", True),
        ("watch_wall_s", "elapsed_s", "wall s until all watching", True),
        ("peak_rss_mb", "peak_rss_mb", "peak RSS MB", True),
        ("lag_p99_ms", "lag_p99_ms", "event-loop lag p99 ms", True),
        ("lag_max_ms", "lag_max_ms", "event-loop lag max ms", True),
        ("detection_p95_s", None, "detection latency p95 s", False),
    ]
    figure, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    colours = {"stock": "tab:red", "ours": "tab:blue"}
    labels = {"stock": "stock S3KeyTrigger (client per trigger)", "ours": "SageMakerAsyncInferenceTrigger (shared)"}
    for axis, (key, partial_key, title, log_y) in zip(axes.flat, panels, strict=True):
        for pattern in PATTERNS:
            runs = [r for r in results if r["pattern"] == pattern and not r.get("skipped")]
            done = [(r["n"], r[key]) for r in runs if r.get(key) is not None and r.get("finished")]
            cut = [
                (r["n"], r.get(partial_key))
                for r in runs
                if not r.get("finished") and partial_key and r.get(partial_key) is not None
            ]
            if done:
                axis.plot(*zip(*done, strict=True), marker="o", color=colours[pattern], label=labels[pattern])
            if cut:
                axis.scatter(
                    *zip(*cut, strict=True),
                    marker="^",
                    facecolors="none",
                    edgecolors=colours[pattern],
                    s=80,
                    label=f"{pattern}: stopped at budget (lower bound)",
                )
        axis.set_xscale("log")
        if log_y:
            axis.set_yscale("log")
        axis.set_title(title)
        axis.set_xlabel("concurrent waits N")
        axis.grid(True, which="both", alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    figure.suptitle("Triggerer capacity: one event loop, local S3 (moto) in another process")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def _orchestrate(args: argparse.Namespace) -> int:
    ns = QUICK_NS if args.quick else tuple(args.n or DEFAULT_NS)
    out_dir = Path(args.out_dir)
    work_dir = out_dir / "triggerer_capacity"
    work_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    with BackendProcess(work_dir, demo=False, quiet=True) as backend:
        ready = backend.ready
        import boto3

        s3 = boto3.client(
            "s3",
            endpoint_url=ready["endpoint_url"],
            region_name=ready["region_name"],
            aws_access_key_id=ready["aws_access_key_id"],
            aws_secret_access_key=ready["aws_secret_access_key"],
        )
        s3.create_bucket(Bucket=BUCKET)
        for n in ns:
            for pattern in args.patterns:
                if pattern == "stock" and args.stock_max_n is not None and n > args.stock_max_n:
                    results.append({"pattern": pattern, "n": n, "skipped": True, "finished": False})
                    continue
                print(f"[{time.perf_counter() - started:6.0f} s] {pattern} N={n:,} ...", file=sys.stderr, flush=True)
                result = _run_one(args, ready, pattern, n, work_dir)
                results.append(result)
                print(
                    f"[{time.perf_counter() - started:6.0f} s]   {_status(result)}; "
                    f"all watching after {fmt(result.get('watch_wall_s'), 1)} s wall, "
                    f"{fmt(result.get('watch_cpu_s'), 1)} s CPU; peak RSS {fmt(result.get('peak_rss_mb'), 0)} MB",
                    file=sys.stderr,
                    flush=True,
                )
    document = {
        "benchmark": "triggerer_capacity",
        "created_at": datetime.now(UTC).isoformat(),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "settings": {
            "stock_poke_interval_s": args.poke_interval,
            "ours_schedule": "2 s, x1.5 per check, 30 s ceiling, jitter 0.8-1.0 (defaults)",
            "write_window_s": args.write_window,
            "budget_seconds": args.budget_seconds,
            "max_rss_mb": args.max_rss_mb,
            "s3_connections": "moto (werkzeug) answers Connection: close: one TCP connection per request",
        },
        "wall_s": time.perf_counter() - started,
        "results": results,
    }
    write_json(out_dir / "triggerer_capacity.json", document)
    _chart(results, out_dir / "triggerer_capacity.png")
    print(_table(results))
    print()
    for line in _ratios(results):
        print(f"- {line}")
    print(f"\nJSON: {out_dir / 'triggerer_capacity.json'}  chart: {out_dir / 'triggerer_capacity.png'}")
    print(f"Total wall time: {time.perf_counter() - started:,.0f} s")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command")

    _orchestrator_options(parser)

    worker = commands.add_parser("_worker", help=argparse.SUPPRESS)
    worker.add_argument("--pattern", choices=PATTERNS, required=True)
    worker.add_argument("--n", type=int, required=True)
    worker.add_argument("--run-id", required=True)
    worker.add_argument("--bucket", required=True)
    worker.add_argument("--endpoint-url", required=True)
    worker.add_argument("--poke-interval", type=float, required=True)
    worker.add_argument("--write-window", type=float, required=True)
    worker.add_argument("--budget-seconds", type=float, required=True)
    worker.add_argument("--max-rss-mb", type=float, required=True)
    worker.add_argument("--result-file", required=True)
    worker.add_argument("--writes-file", required=True)

    writer = commands.add_parser("_writer", help=argparse.SUPPRESS)
    writer.add_argument("--endpoint-url", required=True)
    writer.add_argument("--bucket", required=True)
    writer.add_argument("--write-window", type=float, required=True)
    writer.add_argument("--writes-file", required=True)
    writer.add_argument("--run-id", required=True)
    writer.add_argument("--n", type=int, required=True)
    return parser


def _orchestrator_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="N = 100, 1000 only")
    parser.add_argument("--n", type=int, action="append", help="a value of N (repeatable); default 100 1000 5000 10000")
    parser.add_argument("--patterns", nargs="+", choices=PATTERNS, default=list(PATTERNS))
    parser.add_argument("--poke-interval", type=float, default=5.0, help="stock S3KeyTrigger poke_interval, s")
    parser.add_argument(
        "--write-window", type=float, default=30.0, help="seconds over which the N objects are written; default 30"
    )
    parser.add_argument(
        "--budget-seconds", type=float, default=300.0, help="abort a (pattern, N) run after this long; default 300"
    )
    parser.add_argument("--max-rss-mb", type=float, default=8192.0, help="abort a run above this RSS; default 8192")
    parser.add_argument("--stock-max-n", type=int, help="skip the stock pattern above this N")
    parser.add_argument("--out-dir", default=str(RESULTS_DIR), help="default benchmarks/results")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "_worker":
        asyncio.run(_worker(args))
        return 0
    if args.command == "_writer":
        _writer(args)
        return 0
    return _orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
