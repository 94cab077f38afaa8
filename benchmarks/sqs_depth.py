"""
moto's SQS with and without :mod:`airflow_sagemaker_async.local.moto_speedups`, at growing queue depths.

    .venv/bin/python benchmarks/sqs_depth.py            # depths 100, 1,000, 3,000 (~1 min)
    .venv/bin/python benchmarks/sqs_depth.py --depths 100 5000

What a queue shared by triggerers sees during a large batch: it holds ``depth`` unclaimed notifications, and a
receiver keeps receiving 10 and releasing them (ChangeMessageVisibilityBatch, visibility 0) while SNS-like
senders add one message at a time. For each depth and each variant (moto as it is, then with the speed-ups),
in one run on the same moto server (``MotoServer``, in this process, so this process's CPU is the server's):
``--rounds`` rounds of one ReceiveMessage of 10 + one release + one SendMessage. Printed: CPU ms per round
(``time.process_time``, server and client together) and the ratio.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import boto3
from _common import markdown_table

from airflow_sagemaker_async.local import moto_speedups
from airflow_sagemaker_async.local.control_plane import MotoServer


def _round_cpu_ms(sqs: Any, url: str, rounds: int) -> float:
    started = time.process_time()
    for _ in range(rounds):
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        entries = [
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
            for i, m in enumerate(got.get("Messages", []))
        ]
        if entries:
            sqs.change_message_visibility_batch(QueueUrl=url, Entries=entries)
        sqs.send_message(QueueUrl=url, MessageBody="{}")
    return (time.process_time() - started) * 1000 / rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1].strip())
    parser.add_argument("--depths", type=int, nargs="+", default=[100, 1000, 3000])
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    server = MotoServer()
    server.start()
    try:
        sqs = boto3.client(
            "sqs",
            endpoint_url=server.url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        rows = []
        for depth in args.depths:
            url = sqs.create_queue(QueueName=f"depth-{depth}")["QueueUrl"]
            for start in range(0, depth, 10):
                entries = [{"Id": str(i), "MessageBody": "{}"} for i in range(min(10, depth - start))]
                sqs.send_message_batch(QueueUrl=url, Entries=entries)
            moto_speedups.uninstall()
            stock = _round_cpu_ms(sqs, url, args.rounds)
            moto_speedups.install()
            faster = _round_cpu_ms(sqs, url, args.rounds)
            rows.append([f"{depth:,}", f"{stock:.1f}", f"{faster:.1f}", f"{stock / faster:.1f}x"])
            sqs.delete_queue(QueueUrl=url)
    finally:
        server.stop()
    print(markdown_table(["queue depth", "moto: CPU ms / round", "with speed-ups", "ratio"], rows))


if __name__ == "__main__":
    main()
