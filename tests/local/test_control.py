"""
The local backend from outside Python: ``up --model NAME=COMMAND`` serves your own container, the control
surface (``invocations`` / ``counts`` / ``time-scale`` subcommands on the runtime's 127.0.0.1 port) answers
another process, an unregistered image's FailureReason names the CLI option, and UpdateEndpoint is answered
as AWS answers an operation it does not know (not moto's HTML 500).
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from airflow_sagemaker_async.local.cli import build_parser, parse_assignment
from airflow_sagemaker_async.local.harness import BackendProcess

if TYPE_CHECKING:
    from collections.abc import Iterator

ECHO = Path(__file__).with_name("echo_container.py")


def cli(*arguments: str) -> str:
    command = [sys.executable, "-m", "airflow_sagemaker_async.local.cli", *arguments]
    return subprocess.run(command, check=True, capture_output=True, text=True, timeout=60).stdout


def client(ready: dict[str, Any], service: str, url_key: str = "endpoint_url") -> Any:
    return boto3.client(
        service,
        endpoint_url=ready[url_key],
        region_name=ready["region_name"],
        aws_access_key_id=ready["aws_access_key_id"],
        aws_secret_access_key=ready["aws_secret_access_key"],
        config=Config(retries={"max_attempts": 1}),
    )


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackendProcess]:
    process = BackendProcess(tmp_path_factory.mktemp("control"), demo=False, quiet=True)
    process.command += ["--model", f"echo-async={sys.executable} {ECHO}"]
    process.command += ["--realtime-model", f"echo-realtime={sys.executable} {ECHO}"]
    process.command += ["--image", f"my/echo:1={sys.executable} {ECHO}"]
    with process:
        yield process


def test_parse_assignment_splits_the_command_as_a_shell_does() -> None:
    assert parse_assignment("m=python -m 'my server' --port 1", "--model") == (
        "m",
        ["python", "-m", "my server", "--port", "1"],
    )
    for bad in ("no-equals", "=python", "m="):
        with pytest.raises(ValueError, match="NAME=COMMAND"):
            parse_assignment(bad, "--model")


def test_up_rejects_a_malformed_model_option_before_starting() -> None:
    result = subprocess.run(  # noqa: PLW1510 - the exit code is what is checked
        [sys.executable, "-m", "airflow_sagemaker_async.local.cli", "up", "--model", "oops"],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 2
    assert "expected NAME=COMMAND" in result.stderr


def test_control_subcommands_need_a_url_or_a_ready_file() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["counts"])


def test_model_option_serves_your_own_container_as_an_async_and_a_real_time_endpoint(backend: BackendProcess) -> None:
    ready = backend.ready
    runtime = client(ready, "sagemaker-runtime", "runtime_url")

    assert [m["endpoint_name"] for m in ready["models"]] == ["echo-async", "echo-realtime"]
    answer = runtime.invoke_endpoint(EndpointName="echo-realtime", Body=b"hi", ContentType="text/plain")
    assert json.loads(answer["Body"].read())["body"] == "hi"
    submitted = runtime.invoke_endpoint_async(
        EndpointName="echo-async", InputLocation="s3://sagemaker-async-local/none", InferenceId="ctl-1"
    )
    assert submitted["OutputLocation"].startswith("s3://sagemaker-async-local/echo-async/output/")


def test_control_subcommands_show_invocations_counts_and_change_the_time_scale(backend: BackendProcess) -> None:
    ready = backend.ready
    runtime = client(ready, "sagemaker-runtime", "runtime_url")
    runtime.invoke_endpoint_async(EndpointName="echo-async", Body=b"{}", InferenceId="ctl-2")

    lines = cli("invocations", "--url", ready["runtime_url"], "--endpoint", "echo-async").splitlines()
    records = [json.loads(line) for line in lines]
    counts = json.loads(cli("counts", "--ready-file", str(backend.ready_file)))

    assert "ctl-2" in [r["inference_id"] for r in records]
    assert {r["endpoint_name"] for r in records} == {"echo-async"}
    assert counts["total"] == sum(counts["counts"]["echo-async"].values()) >= 1
    assert cli("time-scale", "--url", ready["runtime_url"]).strip() == "1.0"
    assert cli("time-scale", "--url", ready["runtime_url"], "0.01").strip() == "0.01"
    runtime.invoke_endpoint_async(EndpointName="echo-async", Body=b"{}", InferenceId="ctl-3", RequestTTLSeconds=60)
    [record] = [json.loads(line) for line in cli("invocations", "--url", ready["runtime_url"]).splitlines()[-1:]]
    assert record["inference_id"] == "ctl-3"
    cli("time-scale", "--url", ready["runtime_url"], "1")


def test_time_scale_refuses_a_value_that_is_not_positive(backend: BackendProcess) -> None:
    result = subprocess.run(  # noqa: PLW1510 - the exit code is what is checked
        [
            sys.executable,
            "-m",
            "airflow_sagemaker_async.local.cli",
            "time-scale",
            "--url",
            backend.ready["runtime_url"],
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 1
    assert "did not answer" in result.stderr


def test_only_the_control_paths_skip_the_signature_check(backend: BackendProcess) -> None:
    unsigned = urllib.request.Request(
        f"{backend.ready['runtime_url']}/endpoints/echo-realtime/invocations", data=b"x", method="POST"
    )

    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(unsigned, timeout=30)
    info.value.close()

    assert info.value.code == 403


def test_an_endpoint_of_an_image_registered_with_the_image_option_starts(backend: BackendProcess) -> None:
    sagemaker = client(backend.ready, "sagemaker")
    sagemaker.create_model(
        ModelName="byo-model",
        ExecutionRoleArn="arn:aws:iam::123456789012:role/r",
        PrimaryContainer={"Image": "my/echo:1"},
    )
    sagemaker.create_endpoint_config(
        EndpointConfigName="byo-config",
        ProductionVariants=[
            {"VariantName": "v", "ModelName": "byo-model", "InstanceType": "ml.m5.large", "InitialInstanceCount": 1}
        ],
    )
    sagemaker.create_endpoint(EndpointName="byo", EndpointConfigName="byo-config")

    sagemaker.get_waiter("endpoint_in_service").wait(EndpointName="byo", WaiterConfig={"Delay": 1, "MaxAttempts": 60})


def test_an_unregistered_image_fails_with_a_reason_that_names_the_cli_option(backend: BackendProcess) -> None:
    sagemaker = client(backend.ready, "sagemaker")
    sagemaker.create_model(
        ModelName="ghost-model",
        ExecutionRoleArn="arn:aws:iam::123456789012:role/r",
        PrimaryContainer={"Image": "ghost:1"},
    )
    sagemaker.create_endpoint_config(
        EndpointConfigName="ghost-config",
        ProductionVariants=[
            {"VariantName": "v", "ModelName": "ghost-model", "InstanceType": "ml.m5.large", "InitialInstanceCount": 1}
        ],
    )
    sagemaker.create_endpoint(EndpointName="ghost", EndpointConfigName="ghost-config")

    with pytest.raises(Exception, match="Failed"):
        sagemaker.get_waiter("endpoint_in_service").wait(
            EndpointName="ghost", WaiterConfig={"Delay": 1, "MaxAttempts": 30}
        )
    reason = sagemaker.describe_endpoint(EndpointName="ghost")["FailureReason"]
    assert "sagemaker-async-local up --image ghost:1=COMMAND" in reason


def test_update_endpoint_is_answered_as_an_unknown_operation_not_an_html_500(backend: BackendProcess) -> None:
    sagemaker = client(backend.ready, "sagemaker")

    with pytest.raises(ClientError) as info:
        sagemaker.update_endpoint(EndpointName="echo-async", EndpointConfigName="echo-async-config")

    assert info.value.response["Error"]["Code"] == "UnknownOperationException"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert "not emulated" in info.value.response["Error"]["Message"]
