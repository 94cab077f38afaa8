"""Benchmark of the local SageMaker async backend: startup, 2,000 queued submissions, drain, memory.

Run:  .venv/bin/python benchmarks/local_backend.py [--requests 2000] [--concurrency 64] [--json PATH]

Prints: backend startup time, iris endpoint creation time (container start + /ping), time for the runtime
to accept N submissions sent by aiobotocore with a bounded number in flight (with accept-latency
percentiles and the deepest queue seen), time until every request is completed, written to S3 and
notified, and the resident memory of this process (moto + runtime) and of the container.

The endpoint has success and error SNS topics, so every request is also published to SNS. With
``--subscribe-queue`` an SQS queue (left unread) is subscribed to them: moto's SQS then recomputes its
queue attributes over every stored message on each delivery (O(queue length)), which dominates the drain
time beyond a few hundred stored messages; that is moto's cost, not the runtime's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import threading
import time
from pathlib import Path

import psutil
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from airflow_sagemaker_async.local import InvocationStatus, LocalSageMakerAsyncBackend

ROW = b"5.1,3.5,1.4,0.2"


def mib(value: float) -> str:
    return f"{value / 2**20:.0f} MiB"


class PeakRss:
    """Samples the RSS of this process and its children every 50 ms in a thread."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.peak_self = 0
        self.peak_children = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.sample()

    def sample(self) -> None:
        self.peak_self = max(self.peak_self, self.process.memory_info().rss)
        children = 0
        for child in self.process.children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                children += child.memory_info().rss
        self.peak_children = max(self.peak_children, children)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


async def submit_all(backend: LocalSageMakerAsyncBackend, endpoint: str, count: int, concurrency: int) -> list[float]:
    latencies: list[float] = []
    limit = asyncio.Semaphore(concurrency)
    config = AioConfig(max_pool_connections=concurrency, retries={"max_attempts": 1})
    async with get_session().create_client(
        "sagemaker-runtime", config=config, **backend.client_kwargs("sagemaker-runtime")
    ) as runtime:

        async def one(index: int) -> None:
            async with limit:
                started = time.perf_counter()
                answer = await runtime.invoke_endpoint_async(
                    EndpointName=endpoint, Body=ROW, ContentType="text/csv", InferenceId=f"bench-{index}"
                )
                latencies.append(time.perf_counter() - started)
                assert answer["ResponseMetadata"]["HTTPStatusCode"] == 202

        await asyncio.gather(*(one(index) for index in range(count)))
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64, help="submissions in flight at once")
    parser.add_argument("--max-concurrent-invocations", type=int, default=4)
    parser.add_argument(
        "--subscribe-queue", action="store_true", help="subscribe an (unread) SQS queue to the endpoint's topics"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    arguments = parser.parse_args()

    figures: dict[str, object] = {"requests": arguments.requests, "submit_concurrency": arguments.concurrency}
    with PeakRss() as rss:
        started = time.perf_counter()
        backend = LocalSageMakerAsyncBackend().start()
        try:
            figures["startup_s"] = round(time.perf_counter() - started, 3)
            figures["rss_after_startup"] = psutil.Process().memory_info().rss
            started = time.perf_counter()
            sns = backend.client("sns")
            topics = [sns.create_topic(Name=name)["TopicArn"] for name in ("bench-success", "bench-error")]
            if arguments.subscribe_queue:
                backend.subscribe_queue("bench-notifications", topics)
            backend.create_endpoint(
                "bench",
                success_topic_arn=topics[0],
                error_topic_arn=topics[1],
                max_concurrent_invocations_per_instance=arguments.max_concurrent_invocations,
            )
            figures["endpoint_in_service_s"] = round(time.perf_counter() - started, 3)

            started = time.perf_counter()
            latencies = asyncio.run(submit_all(backend, "bench", arguments.requests, arguments.concurrency))
            accepted = time.perf_counter() - started
            records = backend.invocations("bench")
            queued = sum(r.status is InvocationStatus.QUEUED for r in records)
            backend.wait_idle(timeout=600, poll_interval=0.2)
            drained = time.perf_counter() - started
            records = backend.invocations("bench")
            statuses = {status.value: 0 for status in InvocationStatus}
            for record in records:
                statuses[record.status.value] += 1
            latencies.sort()
            figures.update(
                accept_all_s=round(accepted, 3),
                accept_rate_per_s=round(arguments.requests / accepted),
                accept_latency_p50_ms=round(statistics.median(latencies) * 1000, 1),
                accept_latency_p99_ms=round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 1),
                queued_when_all_accepted=queued,
                drained_all_s=round(drained, 3),
                statuses=statuses,
                notified=sum(record.notified for record in records),
            )
        finally:
            stop_started = time.perf_counter()
            backend.stop()
            figures["stop_s"] = round(time.perf_counter() - stop_started, 3)
    figures["peak_rss_backend"] = rss.peak_self
    figures["peak_rss_containers"] = rss.peak_children

    print(
        f"local backend benchmark: {arguments.requests} requests, {arguments.concurrency} in flight, "
        f"{arguments.max_concurrent_invocations} concurrent invocations, "
        f"SNS topics{' + unread SQS queue' if arguments.subscribe_queue else ''}"
    )
    print(f"  startup (moto + runtime + bucket):     {figures['startup_s']:.2f} s")
    print(f"  iris endpoint InService:               {figures['endpoint_in_service_s']:.2f} s")
    print(
        f"  accept {arguments.requests} submissions:             {figures['accept_all_s']:.2f} s "
        f"({figures['accept_rate_per_s']}/s; p50 {figures['accept_latency_p50_ms']} ms, "
        f"p99 {figures['accept_latency_p99_ms']} ms)"
    )
    print(f"  still queued when all were accepted:   {figures['queued_when_all_accepted']}")
    print(f"  all completed, written and notified:   {figures['drained_all_s']:.2f} s after the first submission")
    print(f"  outcomes:                              {figures['statuses']}")
    print(f"  notifications published:               {figures['notified']}")
    print(f"  RSS after startup:                     {mib(figures['rss_after_startup'])}")  # type: ignore[arg-type]
    print(f"  peak RSS backend process:              {mib(figures['peak_rss_backend'])}")  # type: ignore[arg-type]
    print(f"  peak RSS container(s):                 {mib(figures['peak_rss_containers'])}")  # type: ignore[arg-type]
    print(f"  stop:                                  {figures['stop_s']:.2f} s")
    if arguments.json:
        arguments.json.parent.mkdir(parents=True, exist_ok=True)
        arguments.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
