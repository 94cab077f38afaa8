"""
Push vs poll: N concurrent waits on one event loop, woken by SageMaker's notifications (SQS) or by polling S3.

    .venv/bin/python benchmarks/push_vs_poll.py                # N = 1,000 and 10,000, poll and push (~20 min here)
    .venv/bin/python benchmarks/push_vs_poll.py --n 1000       # one N (~5 min)
    .venv/bin/python benchmarks/push_vs_poll.py --n 10000 --modes push --push-ceiling 600   # another safety ceiling

Modes, side by side in the same run (same backend, same N, fresh worker process each):

- ``poll``: ``SageMakerAsyncInferenceTrigger`` without a queue: checks at the polling ceiling (30 s).
- ``push``: the same trigger with ``notification_queue_url``: one shared SQS receiver (long polling) wakes
  the wait; safety polling at its ceiling (300 s).

**Steady state.** A wait's interval grows 2 s x1.5 up to its ceiling; a triggerer that has held waits for
a while holds them at the ceiling, each at its own phase. The worker models that population directly: every
trigger starts with ``poll_interval = max_poll_interval = ceiling``, and the first delay after its initial
check is drawn uniformly from [0, ceiling] (a patch of ``PollSchedule.next_delay`` in the worker only), so
the checks are spread as in a long-running triggerer at once, without waiting for ceilings to be reached.
Once every trigger has made its first check (ramp-up, not measured), the worker measures CPU (user + sys of
the process, all threads) and the AWS requests for ``--window`` seconds (60): **CPU per minute of
steady-state waiting**.

**Detection.** Then a writer process (the "model") completes ``--completions`` of the N inferences (default
1,000, spread over the N) at random times over ``completions / 50`` seconds (at least 20): it PUTs each output
and, in push mode, publishes SageMaker's ``Completed`` notification to the SNS topic the queue is subscribed
to (envelope delivery), after the PUT, as SageMaker does. The other waits keep waiting: the loop holds N
waits throughout, and the local S3 (moto, one Python process that closes every connection) is not asked
for more completions per second than it can serve beside the polling. Detection latency =
event received from the trigger - PUT returned (same clock), broken down in the JSON into publish delay
(PUT returned -> SNS publish returned, in the writer), queue dwell (SQS SentTimestamp -> received) and wake
-> event (notification in the wait's inbox -> event, i.e. the confirming HEAD).

**Requests per inference** = what a wait costs while it waits (S3 HEADs per wait-minute in the steady
window) x its duration + what its completion costs (the detection phase's requests beyond the steady rate,
per completion: the confirming HEAD, the SQS receives and deletes). The table shows it for an inference that
waits 10 minutes.

The backend (``sagemaker-async-local up --no-demo``: moto S3 / SNS / SQS) runs in its own process. Output: a
Markdown table on stdout and ``benchmarks/results/push_vs_poll.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _common import RESULTS_DIR, client_kwargs, fmt, markdown_table, percentile, write_json

from airflow_sagemaker_async.local.harness import BackendProcess, airflow_environment

MODES = ("poll", "push")
DEFAULT_NS = (1000, 10000)
BUCKET = "bench-push"
TOPIC = "bench-push-success"
CEILINGS = {"poll": 30.0, "push": 300.0}
#: The loop-lag probe's period, seconds (coarse: it must not weigh in the CPU measured).
LAG_TICK = 0.5
KILL_GRACE = 120.0
S3_OPERATIONS = {"HeadObject", "GetObject", "ListObjectsV2"}


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


# --------------------------------------------------------------------------------------------------
# Worker: one (mode, N) in one process and one event loop, like a triggerer.
# --------------------------------------------------------------------------------------------------


def _spread_first_delay() -> None:
    """Draw each schedule's first delay uniformly from [0, ceiling]: a population at its ceiling, phases spread."""
    from airflow_sagemaker_async.common.watch import PollSchedule

    original = PollSchedule.next_delay
    rng = random.Random(7)  # a spread, not cryptography

    def next_delay(self: Any, now: datetime | None = None) -> float | None:
        if not getattr(self, "_bench_spread", False):
            self._bench_spread = True
            original(self, now)
            return rng.uniform(0, self.max_poll_interval)
        return original(self, now)

    PollSchedule.next_delay = next_delay  # type: ignore[method-assign]


def _count_calls(calls: Counter[str]) -> None:
    from aiobotocore.client import AioBaseClient

    original = AioBaseClient._make_api_call

    async def counted(self: Any, operation_name: str, api_params: dict[str, Any]) -> Any:
        calls[operation_name] += 1
        return await original(self, operation_name, api_params)

    AioBaseClient._make_api_call = counted  # type: ignore[method-assign]


def _record_deliveries() -> dict[str, float]:
    """Record when each inference's first notification reached its wait's inbox."""
    from airflow_sagemaker_async.push.receiver import Inbox

    delivered: dict[str, float] = {}
    original = Inbox.deliver

    def deliver(self: Any, notification: Any) -> None:
        delivered.setdefault(notification.inference_id, time.time())
        original(self, notification)

    Inbox.deliver = deliver  # type: ignore[method-assign]
    return delivered


def _record_queue_dwell() -> list[float]:
    """Record, per message received, the seconds it spent in SQS (receive time - ``SentTimestamp``)."""
    from airflow_sagemaker_async.push.receiver import NotificationReceiver

    dwell: list[float] = []
    original = NotificationReceiver._handle

    def handle(self: Any, messages: list[dict[str, Any]]) -> None:
        now = time.time()
        dwell.extend(now - int(m.get("Attributes", {}).get("SentTimestamp", now * 1000)) / 1000 for m in messages)
        original(self, messages)

    NotificationReceiver._handle = handle  # type: ignore[method-assign]
    return dwell


def _keys(run_id: str, n: int) -> list[str]:
    return [f"{run_id}/{index:05d}.out" for index in range(n)]


async def _worker(args: argparse.Namespace) -> None:
    from airflow_sagemaker_async.inference.triggers import SageMakerAsyncInferenceTrigger

    _spread_first_delay()
    calls: Counter[str] = Counter()
    _count_calls(calls)
    dwell = _record_queue_dwell()
    delivered = _record_deliveries()
    keys = _keys(args.run_id, args.n)
    ceiling = args.ceiling or CEILINGS[args.mode]
    deadline = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    triggers = [
        SageMakerAsyncInferenceTrigger(
            inference_id=f"{args.run_id}-{index:05d}",
            output_location=f"s3://{BUCKET}/{key}",
            failure_location=f"s3://{BUCKET}/{key.removesuffix('.out')}-error.out",
            deadline=deadline,
            endpoint_name="bench",
            poll_interval=ceiling,
            max_poll_interval=ceiling,
            notification_queue_url=args.queue_url if args.mode == "push" else None,
        )
        for index, key in enumerate(keys)
    ]
    events: dict[str, float] = {}
    statuses: Counter[str] = Counter()
    lags: list[float] = []

    async def drive(trigger: Any, key: str) -> None:
        async for event in trigger.run():
            events[key] = time.time()
            statuses[str(event.payload["status"])] += 1
            break

    async def monitor() -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(LAG_TICK)
            lags.append(max(0.0, loop.time() - before - LAG_TICK))

    started_wall, started_cpu = time.perf_counter(), _cpu()
    lag_task = asyncio.create_task(monitor())
    tasks = [asyncio.create_task(drive(t, k)) for t, k in zip(triggers, keys, strict=True)]
    # Ramp-up: every trigger has made its initial check (two HEADs) -- not measured.
    while calls["HeadObject"] < 2 * args.n:  # noqa: ASYNC110 - a counter, polled 5 times a second
        await asyncio.sleep(0.2)
    ramp_wall, ramp_cpu = time.perf_counter() - started_wall, _cpu() - started_cpu
    await asyncio.sleep(2)  # let the last first-checks' event-loop work settle
    lags.clear()
    window_calls = Counter(calls)
    window_cpu, window_wall = _cpu(), time.perf_counter()
    await asyncio.sleep(args.window)
    steady_cpu, steady_wall = _cpu() - window_cpu, time.perf_counter() - window_wall
    steady_calls = calls - window_calls
    steady_lags = list(lags)

    completions = min(args.n, args.completions)
    write_window = max(20.0, completions / 50)
    phase_calls, phase_wall = Counter(calls), time.perf_counter()
    writer = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "_writer",
        "--mode",
        args.mode,
        "--endpoint-url",
        args.endpoint_url,
        "--topic-arn",
        args.topic_arn,
        "--run-id",
        args.run_id,
        "--n",
        str(args.n),
        "--completions",
        str(completions),
        "--write-window",
        str(write_window),
        "--writes-file",
        args.writes_file,
    )
    done = asyncio.create_task(asyncio.wait(tasks))
    await asyncio.wait({done}, timeout=write_window + args.detect_budget)
    await writer.wait()
    phase_calls, phase_wall = calls - phase_calls, time.perf_counter() - phase_wall
    steady_heads_per_s = steady_calls["HeadObject"] / steady_wall
    extra_s3 = sum(v for k, v in phase_calls.items() if k in S3_OPERATIONS) - steady_heads_per_s * phase_wall
    sqs_phase = sum(v for k, v in phase_calls.items() if k not in S3_OPERATIONS)
    written = json.loads(Path(args.writes_file).read_text())  # noqa: ASYNC240 - after measuring
    writes: dict[str, float] = written["written"]
    published: dict[str, float] = written["published"]
    latencies = [events[key] - writes[key] for key in events if key in writes]
    publish_delays = [published[key] - writes[key] for key in published]
    by_id = {f"{args.run_id}-{index:05d}": key for index, key in enumerate(keys)}
    wake_to_event = [events[by_id[i]] - t for i, t in delivered.items() if by_id.get(i) in events]
    lag_task.cancel()
    result = {
        "mode": args.mode,
        "n": args.n,
        "ceiling_s": ceiling,
        "finished": len(events) >= min(args.n, args.completions),
        "events": len(events),
        "statuses": dict(statuses),
        "ramp_wall_s": ramp_wall,
        "ramp_cpu_s": ramp_cpu,
        "steady_window_s": steady_wall,
        "steady_cpu_s": steady_cpu,
        "steady_cpu_per_min_s": 60 * steady_cpu / steady_wall,
        "steady_core_percent": 100 * steady_cpu / steady_wall,
        "steady_calls": dict(steady_calls),
        "steady_lag_p99_ms": 1000 * (percentile(steady_lags, 99) or 0),
        "steady_lag_max_ms": 1000 * max(steady_lags, default=0),
        "detection_p50_s": percentile(latencies, 50),
        "detection_p95_s": percentile(latencies, 95),
        "detection_max_s": max(latencies, default=None),
        "queue_dwell_p50_s": percentile(dwell, 50),
        "queue_dwell_p95_s": percentile(dwell, 95),
        "publish_delay_p50_s": percentile(publish_delays, 50),
        "publish_delay_p95_s": percentile(publish_delays, 95),
        "wake_to_event_p50_s": percentile(wake_to_event, 50),
        "wake_to_event_p95_s": percentile(wake_to_event, 95),
        "ended_by_notification": len(delivered),
        "calls": dict(calls),
        "completions": completions,
        "s3_per_wait_minute": 60 * steady_heads_per_s / args.n,
        "s3_per_completion": max(0.0, extra_s3) / max(len(latencies), 1),
        "sqs_per_completion": sqs_phase / max(len(latencies), 1),
        "s3_per_10min_inference": 600 * steady_heads_per_s / args.n + max(0.0, extra_s3) / max(len(latencies), 1),
        "write_window_s": write_window,
        "wall_total_s": time.perf_counter() - started_wall,
    }
    write_json(Path(args.result_file), result)
    sys.stdout.flush()
    os._exit(0)  # skip closing thousands of tasks: the process is done


# --------------------------------------------------------------------------------------------------
# Writer: the "model": PUT each output at a random time over the window, then (push) publish its notification.
# --------------------------------------------------------------------------------------------------


def _writer(args: argparse.Namespace) -> None:
    import boto3
    from botocore.config import Config

    config = Config(max_pool_connections=32, retries={"mode": "standard"})
    s3 = boto3.client("s3", endpoint_url=args.endpoint_url, config=config)
    sns = boto3.client("sns", endpoint_url=args.endpoint_url, config=config)
    rng = random.Random(args.n)  # a spread of times, not cryptography
    start = time.time() + 0.5
    keys = _keys(args.run_id, args.n)
    chosen = keys[:: max(1, args.n // args.completions)][: args.completions]
    schedule = sorted((start + rng.uniform(0, args.write_window), key) for key in chosen)

    published: dict[str, float] = {}

    def put(item: tuple[float, str]) -> tuple[str, float]:
        due, key = item
        if (delay := due - time.time()) > 0:
            time.sleep(delay)
        s3.put_object(Bucket=BUCKET, Key=key, Body=b'{"predictions": [0]}', ContentType="application/json")
        written = time.time()
        if args.mode == "push":
            index = int(key.rsplit("/", 1)[1].removesuffix(".out"))
            message = {
                "awsRegion": "us-east-1",
                "eventTime": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                "receivedTime": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                "invocationStatus": "Completed",
                "requestParameters": {"endpointName": "bench", "contentType": "text/csv"},
                "responseParameters": {"contentType": "application/json", "outputLocation": f"s3://{BUCKET}/{key}"},
                "inferenceId": f"{args.run_id}-{index:05d}",
                "eventVersion": "1.0",
                "eventSource": "aws:sagemaker",
                "eventName": "InferenceResult",
            }
            sns.publish(TopicArn=args.topic_arn, Message=json.dumps(message))
            published[key] = time.time()
        return key, written

    with ThreadPoolExecutor(max_workers=16) as pool:
        written = dict(pool.map(put, schedule))
    write_json(Path(args.writes_file), {"written": written, "published": published})


# --------------------------------------------------------------------------------------------------
# Orchestrator
# --------------------------------------------------------------------------------------------------


def _run_one(args: argparse.Namespace, ready: dict[str, Any], setup: dict[str, str], mode: str, n: int) -> dict:
    work_dir = Path(args.out_dir) / "push_vs_poll"
    run_id = f"{mode}-{n}-{uuid.uuid4().hex[:6]}"
    result_file, writes_file, log_file = (work_dir / f"{run_id}{suffix}" for suffix in (".json", "-w.json", ".log"))
    command = [sys.executable, __file__, "_worker", "--mode", mode, "--n", str(n), "--run-id", run_id]
    command += ["--endpoint-url", ready["endpoint_url"], "--queue-url", setup["queue_url"]]
    command += ["--topic-arn", setup["topic_arn"], "--window", str(args.window)]
    command += ["--detect-budget", str(args.detect_budget), "--completions", str(args.completions)]
    command += ["--result-file", str(result_file), "--writes-file", str(writes_file)]
    if mode == "push" and args.push_ceiling:
        command += ["--ceiling", str(args.push_ceiling)]
    env = airflow_environment(work_dir / "airflow-home", ready=ready)
    budget = args.window + max(20.0, min(n, args.completions) / 50) + args.detect_budget + 600
    with log_file.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            process.wait(timeout=budget + KILL_GRACE)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    result: dict[str, Any] = json.loads(result_file.read_text()) if result_file.exists() else {}
    result.setdefault("finished", False)
    result.update(mode=mode, n=n, log=str(log_file), returncode=process.returncode)
    return result


def _table(results: list[dict[str, Any]]) -> str:
    headers = [
        "N",
        "mode",
        "detection p50 / p95 s",
        "steady CPU s per minute (% of a core)",
        "steady HEAD/s",
        "S3 HEAD per wait-minute (steady)",
        "S3 / SQS requests per completion",
        "S3 requests per 10-min inference",
        "loop lag p99 / max ms (steady)",
        "result",
    ]
    rows = []
    for r in results:
        steady_heads = r.get("steady_calls", {}).get("HeadObject", 0) / max(r.get("steady_window_s") or 1, 1e-9)
        rows.append(
            [
                f"{r['n']:,}",
                f"{r['mode']} (ceiling {fmt(r.get('ceiling_s'), 0)} s)",
                " / ".join(fmt(r.get(k), 2) for k in ("detection_p50_s", "detection_p95_s")),
                f"{fmt(r.get('steady_cpu_per_min_s'), 2)} ({fmt(r.get('steady_core_percent'), 1)} %)",
                fmt(steady_heads, 1),
                fmt(r.get("s3_per_wait_minute"), 2),
                f"{fmt(r.get('s3_per_completion'), 2)} / {fmt(r.get('sqs_per_completion'), 2)}",
                fmt(r.get("s3_per_10min_inference"), 1),
                " / ".join(fmt(r.get(k), 0) for k in ("steady_lag_p99_ms", "steady_lag_max_ms")),
                _result(r),
            ]
        )
    return markdown_table(headers, rows)


def _result(r: dict[str, Any]) -> str:
    detected, completions = int(r.get("events") or 0), int(r.get("completions") or r["n"])
    return f"{detected:,} of {completions:,} completions detected" + ("" if detected >= completions else " in budget")


def _ratios(results: list[dict[str, Any]]) -> list[str]:
    lines = []
    by = {(r["mode"], r["n"]): r for r in results}
    for n in sorted({r["n"] for r in results}):
        poll, push = by.get(("poll", n)), by.get(("push", n))
        if poll and push and push.get("steady_cpu_s") and poll.get("steady_cpu_s"):
            lines.append(
                f"N={n:,}: steady-state CPU, poll / push = {poll['steady_cpu_s'] / push['steady_cpu_s']:.1f}x; "
                f"detection p50 {fmt(poll.get('detection_p50_s'))} s -> {fmt(push.get('detection_p50_s'))} s"
            )
    return lines


def _orchestrate(args: argparse.Namespace) -> int:
    ns = tuple(args.n or DEFAULT_NS)
    work_dir = Path(args.out_dir) / "push_vs_poll"
    work_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    with BackendProcess(work_dir, demo=False, quiet=True) as backend:
        ready = backend.ready
        import boto3

        kwargs = client_kwargs(ready)
        boto3.client("s3", **kwargs).create_bucket(Bucket=BUCKET)
        sns, sqs = boto3.client("sns", **kwargs), boto3.client("sqs", **kwargs)
        for n in ns:
            for mode in args.modes:
                # A fresh queue per run: nothing left over from the previous one.
                topic_arn = sns.create_topic(Name=f"{TOPIC}-{mode}-{n}")["TopicArn"]
                queue_url = sqs.create_queue(QueueName=f"bench-push-{mode}-{n}")["QueueUrl"]
                queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
                    "QueueArn"
                ]
                sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
                print(f"[{time.perf_counter() - started:6.0f} s] {mode} N={n:,} ...", file=sys.stderr, flush=True)
                result = _run_one(args, ready, {"queue_url": queue_url, "topic_arn": topic_arn}, mode, n)
                results.append(result)
                print(
                    f"[{time.perf_counter() - started:6.0f} s]   {result.get('events', 0):,} events; steady CPU "
                    f"{fmt(result.get('steady_core_percent'), 1)} % of a core; detection p50/p95 "
                    f"{fmt(result.get('detection_p50_s'))} / {fmt(result.get('detection_p95_s'))} s",
                    file=sys.stderr,
                    flush=True,
                )
    write_json(Path(args.out_dir) / "push_vs_poll.json", {"results": results, "wall_s": time.perf_counter() - started})
    print(_table(results))
    print()
    for line in _ratios(results):
        print(f"- {line}")
    print(f"\n(total {time.perf_counter() - started:.0f} s; details in {args.out_dir}/push_vs_poll.json)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    worker = sub.add_parser("_worker")
    for name in (
        "--mode",
        "--run-id",
        "--endpoint-url",
        "--queue-url",
        "--topic-arn",
        "--result-file",
        "--writes-file",
    ):
        worker.add_argument(name, required=True)
    worker.add_argument("--n", type=int, required=True)
    worker.add_argument("--window", type=float, default=60.0)
    worker.add_argument("--detect-budget", type=float, default=120.0)
    worker.add_argument("--completions", type=int, default=1000)
    worker.add_argument("--ceiling", type=float)
    writer = sub.add_parser("_writer")
    for name in ("--mode", "--run-id", "--endpoint-url", "--topic-arn", "--writes-file"):
        writer.add_argument(name, required=True)
    writer.add_argument("--n", type=int, required=True)
    writer.add_argument("--completions", type=int, required=True)
    writer.add_argument("--write-window", type=float, required=True)
    parser.add_argument("--n", type=int, action="append", help="N concurrent waits (repeatable); default 1000, 10000")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--window", type=float, default=60.0, help="seconds of steady state measured, default 60")
    parser.add_argument("--detect-budget", type=float, default=120.0, help="seconds after the writes, default 120")
    parser.add_argument("--completions", type=int, default=1000, help="inferences completed per run, default 1000")
    parser.add_argument(
        "--push-ceiling", type=float, help="push's safety-poll ceiling, s (push_max_poll_interval); default 300"
    )
    parser.add_argument("--out-dir", default=str(RESULTS_DIR))
    args = parser.parse_args()
    if args.command == "_worker":
        asyncio.run(_worker(args))
        return 0
    if args.command == "_writer":
        _writer(args)
        return 0
    return _orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
