"""``sagemaker-async-local``: run the local SageMaker async backend from a shell.

``sagemaker-async-local up`` starts moto and the runtime on 127.0.0.1, creates a demo endpoint (unless
``--no-demo``) and the endpoints of ``--model NAME=COMMAND`` (your own containers), emulates scale-to-zero with
``--scale-to-zero``, prints where everything is, logs one line per request state change, and stops cleanly on
Ctrl-C or SIGTERM (exit code 0).

``invocations``, ``counts`` and ``time-scale`` talk to a running backend's control surface
(:mod:`~airflow_sagemaker_async.local.control`) from another shell.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shlex
import signal
import sys
import threading
import time
import urllib.error
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import FrameType

    from airflow_sagemaker_async.local.backend import LocalSageMakerAsyncBackend
    from airflow_sagemaker_async.local.capacity import ScaleToZero

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
    up.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME=COMMAND",
        help="serve your own container: create the async endpoint NAME whose container is COMMAND (split as a "
        "shell does; it serves GET /ping and POST /invocations on 127.0.0.1:$SAGEMAKER_BIND_TO_PORT); repeatable",
    )
    up.add_argument(
        "--realtime-model",
        action="append",
        default=[],
        metavar="NAME=COMMAND",
        help="as --model, for a real-time endpoint (InvokeEndpoint / InvokeEndpointWithResponseStream); repeatable",
    )
    up.add_argument(
        "--image",
        action="append",
        default=[],
        metavar="IMAGE=COMMAND",
        help="serve models whose PrimaryContainer.Image is IMAGE with COMMAND, for endpoints you create yourself "
        "(boto3, Terraform, ...); repeatable",
    )
    up.add_argument(
        "--scale-to-zero",
        action="store_true",
        help="emulate scale-to-zero for every async endpoint created: idle scale-in with MinCapacity 0, a backlog "
        "at 0 instances, scale-up only with a step-scaling policy (local/capacity.py)",
    )
    up.add_argument(
        "--cold-start-seconds",
        type=float,
        help="with --scale-to-zero: seconds from the first request queued at 0 instances to the instance serving; "
        "default 5",
    )
    up.add_argument(
        "--scale-in-idle-seconds",
        type=float,
        help="with --scale-to-zero: seconds without a queued or running request before an endpoint whose "
        "MinCapacity is 0 scales in; default 60",
    )
    for name, help_text in (
        ("invocations", "print the async requests the backend accepted, one JSON object a line"),
        ("counts", "print the number of async requests by endpoint and status (JSON)"),
        ("time-scale", "print the time scale, or set it with VALUE (requests accepted from now)"),
    ):
        command = commands.add_parser(name, help=help_text)
        where = command.add_mutually_exclusive_group(required=True)
        where.add_argument("--url", help="the backend's runtime_url (printed by 'up', and in its ready file)")
        where.add_argument("--ready-file", type=Path, help="read runtime_url from the ready file of 'up'")
        if name == "invocations":
            command.add_argument("--endpoint", help="only the requests of this endpoint")
        if name == "time-scale":
            command.add_argument("value", nargs="?", type=float, help="the new time scale (> 0)")
    return parser


def parse_assignment(text: str, option: str) -> tuple[str, list[str]]:
    """Split ``NAME=COMMAND`` into the name and the command's argv (split as a POSIX shell does).

    :raises ValueError: without ``=``, or with an empty name or command.
    """
    name, separator, command = text.partition("=")
    argv = shlex.split(command)
    if not separator or not name.strip() or not argv:
        raise ValueError(f"{option} {text!r}: expected NAME=COMMAND, e.g. {option} 'my-model=python -m my_server'")
    return name.strip(), argv


def scale_to_zero_settings(arguments: argparse.Namespace) -> ScaleToZero | None:
    """Return the ``--scale-to-zero`` settings of ``up`` (``None`` when off).

    :raises ValueError: ``--cold-start-seconds`` or ``--scale-in-idle-seconds`` without ``--scale-to-zero``, or a
        negative value.
    """
    from airflow_sagemaker_async.local.capacity import ScaleToZero

    given = {
        name: value
        for name, value in (
            ("cold_start_seconds", arguments.cold_start_seconds),
            ("scale_in_idle_seconds", arguments.scale_in_idle_seconds),
        )
        if value is not None
    }
    if not arguments.scale_to_zero:
        if given:
            options = ", ".join("--" + name.replace("_", "-") for name in given)
            raise ValueError(f"{options} only apply with --scale-to-zero; add it, or leave them out.")
        return None
    if any(value < 0 for value in given.values()):
        raise ValueError(f"--cold-start-seconds and --scale-in-idle-seconds must be >= 0 seconds; got {given}.")
    return ScaleToZero(**given)


def create_models(backend: LocalSageMakerAsyncBackend, arguments: argparse.Namespace) -> list[dict[str, Any]]:
    """Register the ``--image`` commands and create the ``--model`` / ``--realtime-model`` endpoints.

    :return: one entry per endpoint created, as written to the ready file under ``models``.
    """
    for text in arguments.image:
        backend.register_container(*parse_assignment(text, "--image"))
    models = []
    for option, texts, is_async in (
        ("--model", arguments.model, True),
        ("--realtime-model", arguments.realtime_model, False),
    ):
        for text in texts:
            name, argv = parse_assignment(text, option)
            endpoint = backend.create_endpoint(name, container_command=argv, async_inference=is_async)
            models.append(
                {
                    "endpoint_name": name,
                    "image": endpoint.image,
                    "command": argv,
                    "async": is_async,
                    "s3_output_path": endpoint.s3_output_path or None,
                    "s3_failure_path": endpoint.s3_failure_path,
                }
            )
    return models


def control(arguments: argparse.Namespace) -> int:
    """Run ``invocations`` / ``counts`` / ``time-scale`` against a running backend; return the exit code."""
    from airflow_sagemaker_async.local.control import request

    url = arguments.url or json.loads(arguments.ready_file.read_text())["runtime_url"]
    try:
        if arguments.command == "invocations":
            query = f"?endpoint={urllib.parse.quote(arguments.endpoint)}" if arguments.endpoint else ""
            for record in request(url, f"invocations{query}")["invocations"]:
                print(json.dumps(record))
        elif arguments.command == "counts":
            print(json.dumps(request(url, "counts"), indent=2))
        else:
            body = None if arguments.value is None else {"time_scale": arguments.value}
            print(request(url, "time-scale", body)["time_scale"])
    except urllib.error.URLError as error:
        print(
            f"sagemaker-async-local {arguments.command}: the backend at {url} did not answer: {error}", file=sys.stderr
        )
        return 1
    return 0


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


def ready_document(
    backend: LocalSageMakerAsyncBackend, demo: dict[str, Any] | None, models: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
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
        "scale_to_zero": None if backend.scale_to_zero is None else dataclasses.asdict(backend.scale_to_zero),
        "pid": os.getpid(),
        "demo": demo,
        "models": models or [],
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
    if document["scale_to_zero"] is not None:
        settings = document["scale_to_zero"]
        lines.append(
            f"  scale to zero: cold start {settings['cold_start_seconds']:g} s, scale-in after "
            f"{settings['scale_in_idle_seconds']:g} s idle (register MinCapacity 0 and a step-scaling policy)"
        )
    for model in document["models"]:
        kind = "async" if model["async"] else "real-time"
        lines.append(f"  {kind} endpoint {model['endpoint_name']}: {' '.join(model['command'])}")
    lines.append(f"  control: sagemaker-async-local invocations|counts|time-scale --url {document['runtime_url']}")
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
    backend = LocalSageMakerAsyncBackend(
        time_scale=arguments.time_scale, region_name=arguments.region, scale_to_zero=scale_to_zero_settings(arguments)
    )
    try:
        backend.start()
        demo = None if arguments.no_demo else create_demo(backend)
        models = create_models(backend, arguments)
        document = ready_document(backend, demo, models)
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
        try:
            for option, texts in (("--model", arguments.model), ("--realtime-model", arguments.realtime_model)):
                for text in texts:
                    parse_assignment(text, option)
            for text in arguments.image:
                parse_assignment(text, "--image")
            scale_to_zero_settings(arguments)
        except ValueError as error:
            build_parser().error(str(error))
        return up(arguments)
    if arguments.command in ("invocations", "counts", "time-scale"):
        return control(arguments)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
