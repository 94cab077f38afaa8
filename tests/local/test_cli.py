from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest

from airflow_sagemaker_async.local.cli import build_parser
from tests.local.test_scale_to_zero import wait_until


def _command() -> list[str]:
    script = Path(sys.executable).with_name("sagemaker-async-local")
    return [str(script)] if script.exists() else [sys.executable, "-m", "airflow_sagemaker_async.local.cli"]


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"no ready file; exit code {process.poll()}: {process.communicate()}")
        time.sleep(0.1)
    return json.loads(path.read_text())


def _children(pid: int) -> list[int]:
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread may end meanwhile
            children += [int(child) for child in (task / "children").read_text().split()]
    return children


@pytest.fixture
def cli_up(tmp_path):
    ready = tmp_path / "ready.json"
    process = subprocess.Popen(
        [*_command(), "up", "--ready-file", str(ready), "--time-scale", "0.01"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield process, ready, _wait_for(ready, process)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc/<pid>/task/<tid>/children")
def test_up_serves_the_demo_endpoint_logs_state_changes_and_stops_cleanly_on_sigterm(cli_up):
    process, ready, document = cli_up
    assert document["endpoint_url"].startswith("http://127.0.0.1:")
    assert document["runtime_url"].startswith("http://127.0.0.1:")
    assert json.loads(document["airflow_conn_aws_default"])["extra"]["endpoint_url"] == document["endpoint_url"]
    demo = document["demo"]
    credentials = {
        "region_name": document["region_name"],
        "aws_access_key_id": document["aws_access_key_id"],
        "aws_secret_access_key": document["aws_secret_access_key"],
    }
    runtime = boto3.client("sagemaker-runtime", endpoint_url=document["runtime_url"], **credentials)
    sqs = boto3.client("sqs", endpoint_url=document["endpoint_url"], **credentials)
    sagemaker = boto3.client("sagemaker", endpoint_url=document["endpoint_url"], **credentials)
    assert sagemaker.describe_endpoint(EndpointName=demo["endpoint_name"])["EndpointStatus"] == "InService"

    good = runtime.invoke_endpoint_async(EndpointName=demo["endpoint_name"], Body=b"5.1,3.5,1.4,0.2")
    runtime.invoke_endpoint_async(EndpointName=demo["endpoint_name"], Body=b"not,numbers")
    statuses = set()
    deadline = time.monotonic() + 15
    while statuses != {"Completed", "Failed"} and time.monotonic() < deadline:
        for message in sqs.receive_message(QueueUrl=demo["notification_queue_url"], MaxNumberOfMessages=10).get(
            "Messages", []
        ):
            body = json.loads(json.loads(message["Body"])["Message"])
            statuses.add(body.get("invocationStatus"))
        statuses.discard(None)
    assert statuses == {"Completed", "Failed"}

    realtime = runtime.invoke_endpoint(EndpointName=demo["realtime_endpoint_name"], Body=b"5.1,3.5,1.4,0.2")
    assert b"setosa" in realtime["Body"].read()
    streamed = runtime.invoke_endpoint_with_response_stream(EndpointName=demo["streaming_endpoint_name"], Body=b"hi")
    assert [event["PayloadPart"]["Bytes"] for event in streamed["Body"]]

    containers = _children(process.pid)
    assert len(containers) == 3, "the demo's three endpoints run one container process each"

    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0
    for pid in containers:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert "export AIRFLOW_CONN_AWS_DEFAULT='" in stdout
    assert document["aws_secret_access_key"] in stdout
    assert stdout.rstrip().endswith("Stopped.")
    assert f"{good['InferenceId']} queued" in stderr
    assert f"{good['InferenceId']} started" in stderr
    assert f"{good['InferenceId']} completed" in stderr
    assert " failed after " in stderr
    assert not ready.exists(), "the ready file is removed on stop"


def test_up_without_demo_creates_no_endpoint_and_stops_on_ctrl_c(tmp_path):
    ready = tmp_path / "ready.json"
    process = subprocess.Popen(
        [*_command(), "up", "--no-demo", "--quiet", "--ready-file", str(ready)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        document = _wait_for(ready, process)
        assert document["demo"] is None
        sagemaker = boto3.client(
            "sagemaker",
            endpoint_url=document["endpoint_url"],
            region_name=document["region_name"],
            aws_access_key_id=document["aws_access_key_id"],
            aws_secret_access_key=document["aws_secret_access_key"],
        )
        assert sagemaker.list_endpoints()["Endpoints"] == []
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 0
        assert stderr == ""
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_parser_documents_the_script_options():
    arguments = build_parser().parse_args(["up", "--time-scale", "0.5", "--ready-file", "r.json", "--no-demo"])
    assert (arguments.time_scale, str(arguments.ready_file), arguments.no_demo) == (0.5, "r.json", True)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_containers_die_with_a_backend_killed_by_sigkill(cli_up):
    process, _, _ = cli_up
    containers = _children(process.pid)
    assert containers, "the demo endpoint's container runs as a child of the backend"

    process.kill()
    process.communicate(timeout=10)

    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() and _is_running(pid) for pid in containers):
        assert time.monotonic() < deadline, f"containers {containers} outlived their killed backend"
        time.sleep(0.1)


def _is_running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--cold-start-seconds", "3"], "--cold-start-seconds only apply with --scale-to-zero"),
        (["--scale-in-idle-seconds", "3"], "--scale-in-idle-seconds only apply with --scale-to-zero"),
        (["--scale-to-zero", "--cold-start-seconds", "-1"], "must be >= 0 seconds"),
    ],
)
def test_scale_to_zero_options_are_refused_before_anything_starts(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from airflow_sagemaker_async.local.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["up", "--no-demo", *argv])

    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_up_with_scale_to_zero_scales_the_demo_endpoint_in_and_back_up_with_a_step_policy(tmp_path: Path) -> None:
    ready = tmp_path / "ready.json"
    process = subprocess.Popen(
        [
            *_command(),
            *("up", "--quiet", "--ready-file", str(ready)),
            *("--scale-to-zero", "--cold-start-seconds", "0.5", "--scale-in-idle-seconds", "0.2"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        document = _wait_for(ready, process)
        assert document["scale_to_zero"]["cold_start_seconds"] == 0.5
        credentials = {
            "endpoint_url": document["endpoint_url"],
            "region_name": document["region_name"],
            "aws_access_key_id": document["aws_access_key_id"],
            "aws_secret_access_key": document["aws_secret_access_key"],
        }
        name = document["demo"]["endpoint_name"]
        sagemaker = boto3.client("sagemaker", **credentials)
        autoscaling = boto3.client("application-autoscaling", **credentials)
        s3 = boto3.client("s3", **credentials)

        def instances() -> int:
            (variant,) = sagemaker.describe_endpoint(EndpointName=name)["ProductionVariants"]
            return int(variant["CurrentInstanceCount"])

        assert instances() == 1
        target = {
            "ServiceNamespace": "sagemaker",
            "ResourceId": f"endpoint/{name}/variant/AllTraffic",
            "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
        }
        autoscaling.register_scalable_target(**target, MinCapacity=0, MaxCapacity=1)
        wait_until(lambda: instances() == 0, timeout=30, what="scale-in to 0")
        autoscaling.put_scaling_policy(
            **target,
            PolicyName="HasBacklogWithoutCapacity-ScalingPolicy",
            PolicyType="StepScaling",
            StepScalingPolicyConfiguration={
                "AdjustmentType": "ChangeInCapacity",
                "StepAdjustments": [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}],
            },
        )
        answer = boto3.client("sagemaker-runtime", **{**credentials, "endpoint_url": document["runtime_url"]})
        output = answer.invoke_endpoint_async(EndpointName=name, Body=b"5.1,3.5,1.4,0.2")["OutputLocation"]
        bucket, key = output.removeprefix("s3://").split("/", 1)

        wait_until(
            lambda: s3.list_objects_v2(Bucket=bucket, Prefix=key)["KeyCount"] == 1,
            timeout=30,
            what="the output after the cold start",
        )
        assert instances() == 1
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)
        assert process.returncode == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
