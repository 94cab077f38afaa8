"""``sagemaker-async-local``: run the local SageMaker async backend from a shell.

``sagemaker-async-local up`` starts moto and the runtime on 127.0.0.1, creates a demo endpoint (unless
``--no-demo``), prints where everything is, logs one line per request state change, and stops cleanly
on Ctrl-C or SIGTERM (exit code 0).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import FrameType

    from airflow_sagemaker_async.local.backend import LocalSageMakerAsyncBackend

DEMO_ENDPOINT = "iris-endpoint"
DEMO_REALTIME_ENDPOINT = "iris-realtime"
DEMO_STREAMING_ENDPOINT = "text-streaming"
DEMO_SUCCESS_TOPIC = "sagemaker-async-local-success"
DEMO_ERROR_TOPIC = "sagemaker-async-local-error"
DEMO_QUEUE = "sagemaker-async-local-notifications"


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``sagemaker-async-local``."""
    parser = argparse.ArgumentParser(
        prog="sagemaker-async-local",
        description="A local, offline SageMaker asynchronous inference backend (moto + our runtime).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start the backend and serve until Ctrl-C / SIGTERM")
    up.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="multiply RequestTTLSeconds and InvocationTimeoutSeconds (0.01: a 60 s TTL lasts 0.6 s); default 1",
    )
    up.add_argument("--region", default="us-east-1", help="AWS region of every resource; default us-east-1")
    up.add_argument(
        "--ready-file",
        type=Path,
        help="write a JSON file with URLs, credentials and the demo's names once ready (removed on stop)",
    )
    up.add_argument("--no-demo", action="store_true", help="do not create the demo endpoint, topics and queue")
    up.add_argument("--quiet", action="store_true", help="log warnings only (no line per request state change)")
    return parser


def create_demo(backend: LocalSageMakerAsyncBackend) -> dict[str, Any]:
    """Create the demo: topics, a queue, ``iris-endpoint`` using them, and the real-time endpoints.

    The real-time endpoints are ``iris-realtime`` (iris) and ``text-streaming`` (the streaming text model).

    :return: the demo's names, as written to the ready file under ``demo``.
    """
    sns = backend.client("sns")
    success = sns.create_topic(Name=DEMO_SUCCESS_TOPIC)["TopicArn"]
    error = sns.create_topic(Name=DEMO_ERROR_TOPIC)["TopicArn"]
    queue_url = backend.subscribe_queue(DEMO_QUEUE, [success, error])
    endpoint = backend.create_endpoint(DEMO_ENDPOINT, success_topic_arn=success, error_topic_arn=error)
    backend.create_endpoint(DEMO_REALTIME_ENDPOINT, async_inference=False)
    backend.create_endpoint(DEMO_STREAMING_ENDPOINT, model="text", async_inference=False)
    return {
        "endpoint_name": endpoint.endpoint_name,
        "bucket": backend.default_bucket,
        "s3_output_path": endpoint.s3_output_path,
        "s3_failure_path": endpoint.s3_failure_path,
        "success_topic_arn": success,
        "error_topic_arn": error,
        "notification_queue_url": queue_url,
        "realtime_endpoint_name": DEMO_REALTIME_ENDPOINT,
        "streaming_endpoint_name": DEMO_STREAMING_ENDPOINT,
    }


def ready_document(backend: LocalSageMakerAsyncBackend, demo: dict[str, Any] | None) -> dict[str, Any]:
    """Return what the ready file holds (see the README for its shape)."""
    return {
        "endpoint_url": backend.endpoint_url,
        "runtime_url": backend.runtime_url,
        "region_name": backend.region_name,
        "aws_access_key_id": backend.aws_access_key_id,
        "aws_secret_access_key": backend.aws_secret_access_key,
        "account_id": backend.account_id,
        "airflow_conn_aws_default": backend.airflow_connection_env(),
        "time_scale": backend.time_scale,
        "pid": os.getpid(),
        "demo": demo,
    }


def _write_atomically(path: Path, document: dict[str, Any]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(document, indent=2) + "\n")
    temporary.replace(path)


def _banner(document: dict[str, Any]) -> str:
    lines = [
        "Local SageMaker async backend is up (127.0.0.1 only).",
        f"  moto (S3, SNS, SQS, SageMaker): {document['endpoint_url']}",
        f"  sagemaker-runtime:              {document['runtime_url']}",
        f"  region: {document['region_name']}   time scale: {document['time_scale']:g}",
        f"  AWS_ACCESS_KEY_ID={document['aws_access_key_id']}",
        f"  AWS_SECRET_ACCESS_KEY={document['aws_secret_access_key']}",
        f"  export AIRFLOW_CONN_AWS_DEFAULT='{document['airflow_conn_aws_default']}'",
    ]
    demo = document["demo"]
    if demo:
        lines += [
            f"  demo endpoint: {demo['endpoint_name']} (iris; CSV rows of 4 floats or JSON instances)",
            f"    output: {demo['s3_output_path']}   failure: {demo['s3_failure_path']}",
            f"    notifications: {demo['success_topic_arn']}, {demo['error_topic_arn']} -> "
            f"{demo['notification_queue_url']}",
            f"  real-time endpoints: {demo['realtime_endpoint_name']} (iris), "
            f'{demo["streaming_endpoint_name"]} (streaming text; JSON {{"inputs": ...}} or plain text)',
        ]
    lines.append("Press Ctrl-C to stop.")
    return "\n".join(lines)


def up(arguments: argparse.Namespace) -> int:
    """Run ``up`` until SIGINT / SIGTERM; return the exit code."""
    from airflow_sagemaker_async.local.backend import LocalSageMakerAsyncBackend

    logging.basicConfig(
        level=logging.WARNING if arguments.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    started = time.perf_counter()
    backend = LocalSageMakerAsyncBackend(time_scale=arguments.time_scale, region_name=arguments.region)
    try:
        backend.start()
        demo = None if arguments.no_demo else create_demo(backend)
        document = ready_document(backend, demo)
        if arguments.ready_file is not None:
            _write_atomically(arguments.ready_file, document)
        print(_banner(document), flush=True)
        logging.getLogger("airflow_sagemaker_async.local").info("ready in %.2fs", time.perf_counter() - started)
        while not stop.wait(0.5):
            pass
        print("Stopping...", flush=True)
    finally:
        backend.stop()
        if arguments.ready_file is not None:
            arguments.ready_file.unlink(missing_ok=True)
    print("Stopped.", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sagemaker-async-local`` console script."""
    arguments = build_parser().parse_args(argv)
    if arguments.command == "up":
        return up(arguments)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
