"""
Push latency tail with several triggerers on one queue: 40 waits shared by 2 and by 4 triggerer processes.

    .venv/bin/python benchmarks/push_tail.py                      # 2 and 4 processes, 5 runs each (~3 min here)
    .venv/bin/python benchmarks/push_tail.py --processes 4 --runs 10 --waits 40

Each run: a fresh SNS topic and SQS queue (SNS envelope delivery) on the local backend (moto, in its own
process); ``--processes`` triggerer stand-ins, each one process with one event loop running its share of
the ``--waits`` ``SageMakerAsyncInferenceTrigger``\\ s (round robin) with ``notification_queue_url`` and polling
once an hour (so only a notification ends a wait within the run). Once every wait is subscribed, this
process completes the inferences at random moments over ``--spread`` seconds (4): it PUTs each output, then
publishes SageMaker's documented ``Completed`` notification to the topic with plain boto3.

**Latency** = the trigger's event (wall clock, in the waiter) - the moment the publish call was made (wall
clock, here; same machine; moto may deliver the message before the call returns). Reported per process
count over all runs: exact p50 / p95 / p99 / max, and how many messages the triggerers received and how
many of those they handed back (another's). Output: a Markdown table on stdout
and ``benchmarks/results/push_tail.json``.
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
from datetime import timedelta
from pathlib import Path
from typing import Any

from _common import RESULTS_DIR, client_kwargs, fmt, markdown_table, percentile, run_script, write_json

from airflow_sagemaker_async.local.harness import BackendProcess

BUCKET = "bench-push-tail"
HOUR = 3600.0


def _message(inference_id: str, output_location: str) -> str:
    """SageMaker's success notification, as the developer guide shows it."""
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    return json.dumps(
        {
            "awsRegion": "us-east-1",
            "eventTime": now,
            "receivedTime": now,
            "invocationStatus": "Completed",
            "requestParameters": {"contentType": "text/csv", "endpointName": "bench", "inputLocation": "s3://b/in"},
            "responseParameters": {"contentType": "text/csv; charset=utf-8", "outputLocation": output_location},
            "inferenceId": inference_id,
            "eventVersion": "1.0",
            "eventSource": "aws:sagemaker",
            "eventName": "InferenceResult",
        }
    )


# -- the triggerer stand-in ------------------------------------------------------------------------------------


async def _waiter() -> None:
    """Read the waits from stdin, run a trigger each; print ``watching`` once all subscribed, then the events."""
    from airflow_sagemaker_async.common.watch import isoformat, utcnow
    from airflow_sagemaker_async.inference.triggers import SageMakerAsyncInferenceTrigger
    from airflow_sagemaker_async.push import receiver

    if pause := os.environ.get("PUSH_TAIL_HANDBACK_PAUSE"):
        receiver.HANDBACK_PAUSE_SECONDS = float(pause)  # type: ignore[misc]

    subscribed = 0
    all_subscribed = asyncio.Event()
    original_add = receiver.NotificationReceiver.add
    instances: list[Any] = []

    def counting_add(self: Any, inbox: Any) -> None:
        nonlocal subscribed
        subscribed += 1
        if self not in instances:
            instances.append(self)
        original_add(self, inbox)
        if subscribed == len(document["waits"]):
            all_subscribed.set()

    receiver.NotificationReceiver.add = counting_add  # type: ignore[method-assign]
    print("ready", flush=True)
    document = json.loads(await asyncio.to_thread(sys.stdin.readline))
    deadline = isoformat(utcnow() + timedelta(hours=1))

    async def wait(spec: dict[str, Any]) -> None:
        trigger = SageMakerAsyncInferenceTrigger(
            deadline=deadline,
            notification_queue_url=document["queue_url"],
            poll_interval=HOUR,
            max_poll_interval=HOUR,
            **spec,
        )
        async for event in trigger.run():
            line = {"inference_id": event.payload["inference_id"], "status": event.payload["status"], "at": time.time()}
            print(json.dumps(line), flush=True)

    tasks = [asyncio.ensure_future(wait(spec)) for spec in document["waits"]]
    await all_subscribed.wait()
    await asyncio.sleep(1.0)  # every first check (HEAD output, HEAD failure) done
    print("watching", flush=True)
    await asyncio.gather(*tasks)
    counters = [
        {name: getattr(r, name) for name in ("received", "routed", "deleted", "released", "malformed", "errors")}
        for r in instances
    ]
    print(json.dumps({"receivers": counters}), flush=True)
    print("done", flush=True)


# -- one run -----------------------------------------------------------------------------------------------------


def _connection_env(ready: dict[str, Any]) -> str:
    return json.dumps(
        {
            "conn_type": "aws",
            "login": ready["aws_access_key_id"],
            "password": ready["aws_secret_access_key"],
            "extra": {"endpoint_url": ready["endpoint_url"], "region_name": ready["region_name"]},
        }
    )


def _read_until(worker: subprocess.Popen[str], word: str) -> None:
    """Read the waiter's stdout (its log lines too) up to the line ``word``."""
    assert worker.stdout is not None
    for line in worker.stdout:
        if line.strip() == word:
            return
    raise RuntimeError(f"a waiter exited before saying {word!r}")


def run_once(
    clients: dict[str, Any],
    ready: dict[str, Any],
    *,
    processes: int,
    waits: int,
    spread: float,
    handback_pause: float | None = None,
) -> dict:
    """One run: ``waits`` waits over ``processes`` waiter processes; return the latencies and counters."""
    s3, sns, sqs = clients["s3"], clients["sns"], clients["sqs"]
    name = f"tail-{uuid.uuid4().hex[:10]}"
    topic = sns.create_topic(Name=name)["TopicArn"]
    queue_url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
    env = {**os.environ, "AIRFLOW_CONN_AWS_DEFAULT": _connection_env(ready)}
    if handback_pause is not None:
        env["PUSH_TAIL_HANDBACK_PAUSE"] = str(handback_pause)
    workers = [
        subprocess.Popen(
            [sys.executable, __file__, "_waiter"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    specs = []
    for _ in range(waits):
        key = uuid.uuid4().hex
        specs.append(
            {
                "inference_id": f"tail-{key[:12]}",
                "output_location": f"s3://{BUCKET}/out/{key}.out",
                "failure_location": f"s3://{BUCKET}/fail/{key}-error.out",
                "endpoint_name": "bench",
            }
        )
    try:
        for worker in workers:
            _read_until(worker, "ready")
        for index, worker in enumerate(workers):
            assert worker.stdin is not None
            worker.stdin.write(json.dumps({"queue_url": queue_url, "waits": specs[index::processes]}) + "\n")
            worker.stdin.flush()
        for worker in workers:
            _read_until(worker, "watching")
        published: dict[str, float] = {}
        moments = sorted(random.uniform(0, spread) for _ in specs)
        started = time.monotonic()
        for spec, moment in zip(random.sample(specs, len(specs)), moments, strict=True):
            time.sleep(max(0.0, moment - (time.monotonic() - started)))
            s3.put_object(Bucket=BUCKET, Key=spec["output_location"].split("/", 3)[3], Body=b"{}")
            published[spec["inference_id"]] = time.time()  # before: moto may deliver before publish returns
            sns.publish(TopicArn=topic, Message=_message(spec["inference_id"], spec["output_location"]))
        outputs = [worker.communicate(timeout=120)[0] for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    events, receivers = [], []
    for output in outputs:
        for line in output.splitlines():
            if line.startswith('{"inference_id"'):
                events.append(json.loads(line))
            elif line.startswith('{"receivers"'):
                receivers += json.loads(line)["receivers"]
    latencies = [event["at"] - published[event["inference_id"]] for event in events]
    return {
        "processes": processes,
        "waits": waits,
        "events": len(events),
        "statuses": sorted({event["status"] for event in events}),
        "latencies_s": latencies,
        "receivers": receivers,
    }


def summarise(processes: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Exact percentiles over every wait of every run with ``processes`` waiters."""
    latencies = [value for run in runs for value in run["latencies_s"]]
    received = sum(r["received"] for run in runs for r in run["receivers"])
    released = sum(r["released"] for run in runs for r in run["receivers"])
    return {
        "processes": processes,
        "runs": len(runs),
        "waits": sum(run["waits"] for run in runs),
        "events": sum(run["events"] for run in runs),
        "p50_s": percentile(latencies, 50),
        "p95_s": percentile(latencies, 95),
        "p99_s": percentile(latencies, 99),
        "max_s": max(latencies) if latencies else None,
        "received": received,
        "handed_back": released,
        "per_run_max_s": [max(run["latencies_s"], default=None) for run in runs],
    }


def _orchestrate(args: argparse.Namespace) -> int:
    work_dir = Path(args.out_dir) / "push_tail"
    work_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    summaries = []
    with BackendProcess(work_dir, demo=False, quiet=True) as backend:
        import boto3

        ready = backend.ready
        kwargs = client_kwargs(ready)
        clients = {name: boto3.client(name, **kwargs) for name in ("s3", "sns", "sqs")}
        clients["s3"].create_bucket(Bucket=BUCKET)
        for processes in args.processes:
            runs = []
            for number in range(args.runs):
                run = run_once(
                    clients,
                    ready,
                    processes=processes,
                    waits=args.waits,
                    spread=args.spread,
                    handback_pause=args.handback_pause,
                )
                runs.append(run)
                print(
                    f"[{time.perf_counter() - started:5.0f} s] {processes} processes, run {number + 1}: "
                    f"{run['events']}/{run['waits']} events, max {fmt(max(run['latencies_s'], default=None))} s",
                    file=sys.stderr,
                    flush=True,
                )
            summaries.append(summarise(processes, runs))
    write_json(Path(args.out_dir) / "push_tail.json", {"summaries": summaries, "wall_s": time.perf_counter() - started})
    headers = ["triggerers", "runs x waits", "events", "p50 s", "p95 s", "p99 s", "max s", "handed back / received"]
    rows = [
        [
            str(s["processes"]),
            f"{s['runs']} x {s['waits'] // max(s['runs'], 1)}",
            str(s["events"]),
            fmt(s["p50_s"], 3),
            fmt(s["p95_s"], 3),
            fmt(s["p99_s"], 3),
            fmt(s["max_s"], 3),
            f"{s['handed_back']} / {s['received']}",
        ]
        for s in summaries
    ]
    print(markdown_table(headers, rows))
    print(f"\n(total {time.perf_counter() - started:.0f} s; details in {args.out_dir}/push_tail.json)")
    return 0


def main() -> int:
    if sys.argv[1:2] == ["_waiter"]:
        asyncio.run(_waiter())
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, nargs="+", default=[2, 4], help="triggerer processes (2 4)")
    parser.add_argument("--runs", type=int, default=5, help="runs per process count (5)")
    parser.add_argument("--waits", type=int, default=40, help="waits per run, shared by the processes (40)")
    parser.add_argument("--spread", type=float, default=4.0, help="seconds over which results arrive (4)")
    parser.add_argument(
        "--handback-pause", type=float, default=None, help="seconds; default the package's HANDBACK_PAUSE_SECONDS"
    )
    parser.add_argument("--out-dir", default=str(RESULTS_DIR))
    return _orchestrate(parser.parse_args())


if __name__ == "__main__":
    run_script(main)
