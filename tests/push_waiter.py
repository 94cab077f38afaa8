"""
A triggerer stand-in for tests/test_push.py: one process, one event loop, many push-woken waits.

Reads one JSON document from stdin once it has printed ``ready``::

    {"queue_url": "...", "waits": [{"inference_id", "output_location", "failure_location", "endpoint_name"}, ...],
     "poll_interval": 3600, "max_poll_interval": 3600}

runs one ``SageMakerAsyncInferenceTrigger`` per wait, prints ``watching`` once every wait is subscribed to
the queue and has made its first check, then one JSON line per event
(``{"inference_id", "status", "checks", "seconds", "at"}``, ``at`` the wall clock), then ``done``. The AWS
connection comes from ``AIRFLOW_CONN_AWS_DEFAULT``. Its log lines may come on stdout too.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import timedelta
from typing import Any

from airflow_sagemaker_async.common.watch import isoformat, utcnow
from airflow_sagemaker_async.inference.triggers import SageMakerAsyncInferenceTrigger
from airflow_sagemaker_async.push import receiver


async def main() -> None:
    print("ready", flush=True)
    document = json.loads(await asyncio.to_thread(sys.stdin.readline))
    subscribed = asyncio.Event()
    count = 0
    add = receiver.NotificationReceiver.add

    def counting_add(self: Any, inbox: Any) -> None:
        nonlocal count
        add(self, inbox)
        count += 1
        if count == len(document["waits"]):
            subscribed.set()

    receiver.NotificationReceiver.add = counting_add  # type: ignore[method-assign]
    started = time.monotonic()
    deadline = isoformat(utcnow() + timedelta(hours=1))

    async def wait(spec: dict) -> None:
        trigger = SageMakerAsyncInferenceTrigger(
            deadline=deadline,
            notification_queue_url=document["queue_url"],
            poll_interval=document["poll_interval"],
            max_poll_interval=document["max_poll_interval"],
            **spec,
        )
        async for event in trigger.run():
            payload = event.payload
            line = {
                "inference_id": payload["inference_id"],
                "status": payload["status"],
                "checks": payload["checks"],
                "seconds": time.monotonic() - started,
                "at": time.time(),
            }
            print(json.dumps(line), flush=True)

    tasks = [asyncio.ensure_future(wait(spec)) for spec in document["waits"]]
    await subscribed.wait()
    await asyncio.sleep(1.0)  # each first check (subscribed before it) HEADs two locations
    print("watching", flush=True)
    await asyncio.gather(*tasks)
    print("done", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
