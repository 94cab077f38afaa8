from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from airflow_sagemaker_async.local import (
    BackendAlreadyRunningError,
    InvocationStatus,
    LocalBackendError,
    LocalSageMakerAsyncBackend,
)
from tests.local.conftest import ECHO_COMMAND, IRIS_ROW, object_exists, read_object, wait_final

ECHO_IMAGE = "tests/echo:latest"


def create_with_boto3(backend, name, image, *, environment=None, failure_path=True, max_concurrent=2):
    sagemaker = backend.client("sagemaker")
    container = {"Image": image, **({"Environment": environment} if environment else {})}
    sagemaker.create_model(
        ModelName=f"{name}-model", ExecutionRoleArn="arn:aws:iam::123456789012:role/r", PrimaryContainer=container
    )
    output = {"S3OutputPath": f"s3://sagemaker-async-local/{name}/out"}
    if failure_path:
        output["S3FailurePath"] = f"s3://sagemaker-async-local/{name}/failed"
    sagemaker.create_endpoint_config(
        EndpointConfigName=f"{name}-config",
        ProductionVariants=[
            {"VariantName": "v", "ModelName": f"{name}-model", "InstanceType": "ml.m5.large", "InitialInstanceCount": 1}
        ],
        AsyncInferenceConfig={
            "ClientConfig": {"MaxConcurrentInvocationsPerInstance": max_concurrent},
            "OutputConfig": output,
        },
    )
    sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-config")


def status(backend, name):
    return backend.client("sagemaker").describe_endpoint(EndpointName=name)["EndpointStatus"]


def process_gone(pid: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(scope="module")
def echo_image(backend):
    backend.register_container(ECHO_IMAGE, ECHO_COMMAND, {"GREETING": "from-register"})
    return ECHO_IMAGE


def test_boto3_created_endpoint_is_creating_until_ping_answers_then_serves(backend, echo_image):
    create_with_boto3(backend, "local-slow-start", echo_image, environment={"START_DELAY": "1"})
    assert status(backend, "local-slow-start") == "Creating"

    backend.wait_endpoint_in_service("local-slow-start", timeout=20)
    assert status(backend, "local-slow-start") == "InService"
    answer = backend.client("sagemaker-runtime").invoke_endpoint_async(
        EndpointName="local-slow-start", Body=b"hello", ContentType="text/plain", Accept="application/json"
    )
    assert wait_final(backend, "local-slow-start", answer["InferenceId"]).status is InvocationStatus.COMPLETED
    echoed = json.loads(read_object(backend, answer["OutputLocation"])[0])
    assert echoed["body"] == "hello"
    assert echoed["content_type"] == "text/plain"
    assert echoed["accept"] == "application/json"
    assert echoed["port"] == str(int(echoed["port"]))


def test_model_environment_overrides_the_registered_environment(backend, echo_image):
    create_with_boto3(backend, "local-greeting", echo_image, environment={"GREETING": "from-model"})
    backend.wait_endpoint_in_service("local-greeting", timeout=20)
    answer = backend.client("sagemaker-runtime").invoke_endpoint_async(EndpointName="local-greeting", Body=b"x")
    wait_final(backend, "local-greeting", answer["InferenceId"])
    assert json.loads(read_object(backend, answer["OutputLocation"])[0])["greeting"] == "from-model"


def test_endpoint_without_failure_path_answers_no_failure_location_and_writes_no_failure_object(backend):
    endpoint = backend.create_endpoint("local-no-failure-path", s3_failure_path=None)
    assert endpoint.s3_failure_path is None
    answer = backend.client("sagemaker-runtime").invoke_endpoint_async(
        EndpointName=endpoint.endpoint_name, Body=IRIS_ROW, CustomAttributes="status=503"
    )
    assert "FailureLocation" not in answer
    assert "x-amzn-sagemaker-failurelocation" not in answer["ResponseMetadata"]["HTTPHeaders"]
    final = wait_final(backend, endpoint.endpoint_name, answer["InferenceId"])
    assert final.status is InvocationStatus.FAILED
    assert final.failure_location is None
    listed = backend.client("s3").list_objects_v2(Bucket="sagemaker-async-local", Prefix="local-no-failure-path/")
    assert listed.get("KeyCount", 0) == 0


def test_unregistered_image_makes_the_endpoint_failed_with_an_actionable_reason(backend):
    create_with_boto3(backend, "local-unknown-image", "someone/else:1")
    with pytest.raises(LocalBackendError, match=r"register_container\('someone/else:1'"):
        backend.wait_endpoint_in_service("local-unknown-image", timeout=20)
    described = backend.client("sagemaker").describe_endpoint(EndpointName="local-unknown-image")
    assert described["EndpointStatus"] == "Failed"
    assert "someone/else:1" in described["FailureReason"]


def test_container_exiting_at_start_fails_create_endpoint_with_its_exit_code(backend):
    with pytest.raises(LocalBackendError, match="exited with code 3 before answering /ping"):
        backend.create_endpoint(
            "local-exits-at-start", container_command=ECHO_COMMAND, environment={"EXIT_AT_START": "3"}
        )
    assert status(backend, "local-exits-at-start") == "Failed"


def test_killed_container_fails_running_and_queued_requests_without_hanging(backend):
    endpoint = backend.create_endpoint("local-mortal", max_concurrent_invocations_per_instance=1)
    runtime = backend.client("sagemaker-runtime")
    answers = [runtime.invoke_endpoint_async(EndpointName="local-mortal", Body=IRIS_ROW, CustomAttributes="sleep=5")]
    answers += [runtime.invoke_endpoint_async(EndpointName="local-mortal", Body=IRIS_ROW) for _ in range(2)]
    time.sleep(0.3)
    (pid,) = backend.container_pids(endpoint.endpoint_name)

    started = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    finals = [wait_final(backend, "local-mortal", a["InferenceId"], timeout=4) for a in answers]

    assert time.monotonic() - started < 4
    assert [f.status for f in finals] == [InvocationStatus.FAILED] * 3
    for final in finals:
        assert final.failure_reason.startswith("ModelError: ")
        assert "local-mortal/0" in final.failure_reason
    for answer in answers:
        assert object_exists(backend, answer["FailureLocation"])
        assert not object_exists(backend, answer["OutputLocation"])


def test_exit_knob_kills_the_container_and_the_request_fails(backend):
    backend.create_endpoint("local-exit-knob")
    answer = backend.client("sagemaker-runtime").invoke_endpoint_async(
        EndpointName="local-exit-knob", Body=IRIS_ROW, CustomAttributes="exit=1"
    )
    final = wait_final(backend, "local-exit-knob", answer["InferenceId"], timeout=5)
    assert final.status is InvocationStatus.FAILED
    assert "Could not get an answer from the model container" in final.failure_reason


def test_deleting_an_endpoint_stops_its_container_and_fails_what_was_queued(backend):
    backend.create_endpoint("local-deleted", container_command=ECHO_COMMAND, max_concurrent_invocations_per_instance=1)
    (pid,) = backend.container_pids("local-deleted")
    os.kill(pid, signal.SIGSTOP)  # a stuck model: the request stays in progress, the next one queued
    runtime = backend.client("sagemaker-runtime")
    answers = [runtime.invoke_endpoint_async(EndpointName="local-deleted", Body=b"x") for _ in range(2)]

    backend.delete_endpoint("local-deleted")

    assert process_gone(pid)
    finals = [wait_final(backend, "local-deleted", a["InferenceId"], timeout=15) for a in answers]
    assert {f.status for f in finals} == {InvocationStatus.FAILED}
    assert all("endpoint was deleted" in f.failure_reason for f in finals)
    with pytest.raises(runtime.exceptions.ValidationError, match="not found"):
        runtime.invoke_endpoint_async(EndpointName="local-deleted", Body=b"x")


def test_endpoint_without_async_config_is_served_in_real_time_and_refused_async(backend, echo_image):
    sagemaker = backend.client("sagemaker")
    sagemaker.create_model(
        ModelName="local-realtime-model",
        ExecutionRoleArn="arn:aws:iam::123456789012:role/r",
        PrimaryContainer={"Image": echo_image},
    )
    sagemaker.create_endpoint_config(
        EndpointConfigName="local-realtime-config",
        ProductionVariants=[
            {
                "VariantName": "v",
                "ModelName": "local-realtime-model",
                "InstanceType": "ml.m5.large",
                "InitialInstanceCount": 1,
            }
        ],
    )
    sagemaker.create_endpoint(EndpointName="local-realtime", EndpointConfigName="local-realtime-config")
    backend.wait_endpoint_in_service("local-realtime", timeout=20)
    runtime = backend.client("sagemaker-runtime")
    answer = runtime.invoke_endpoint(EndpointName="local-realtime", Body=b"x", ContentType="text/plain")
    assert json.loads(answer["Body"].read())["body"] == "x"  # the echo container answered
    assert answer["InvokedProductionVariant"] == "v"
    with pytest.raises(runtime.exceptions.ValidationError, match="not configured for asynchronous inference"):
        runtime.invoke_endpoint_async(EndpointName="local-realtime", Body=b"x")


def test_creating_an_existing_endpoint_is_refused_as_on_aws(backend, iris):
    sagemaker = backend.client("sagemaker")
    with pytest.raises(sagemaker.exceptions.ClientError, match="Cannot create already existing endpoint"):
        sagemaker.create_endpoint(EndpointName=iris.name, EndpointConfigName="local-iris-config")


def _listening(predicate) -> set[str]:
    """Addresses of listening TCP sockets (``/proc/net/tcp``) whose (port, inode) satisfies ``predicate``."""
    addresses = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        address, hex_port = fields[1].split(":")
        if fields[3] == "0A" and predicate(int(hex_port, 16), fields[9]):
            addresses.add(".".join(str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0)))
    return addresses


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd)
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux's /proc/net/tcp")
def test_moto_runtime_and_model_containers_listen_on_loopback_only(backend, iris):
    for url in (backend.endpoint_url, backend.runtime_url):
        port = int(url.rsplit(":", 1)[1])
        assert _listening(lambda p, _inode, port=port: p == port) == {"127.0.0.1"}
    (pid,) = backend.container_pids(iris.name)
    inodes = _socket_inodes(pid)
    assert _listening(lambda _port, inode: inode in inodes) == {"127.0.0.1"}


def test_second_backend_in_the_same_region_is_refused(backend):
    with pytest.raises(BackendAlreadyRunningError, match="sagemaker_async_backend"):
        LocalSageMakerAsyncBackend(region_name=backend.region_name).start()


def test_backend_in_another_region_stops_its_containers_and_threads(backend):
    before = {t.name for t in threading.enumerate()}
    with LocalSageMakerAsyncBackend(region_name="eu-west-1", default_bucket="local-eu") as other:
        other.create_endpoint("local-eu", container_command=ECHO_COMMAND)
        (pid,) = other.container_pids("local-eu")
        assert other.client("sagemaker").describe_endpoint(EndpointName="local-eu")["EndpointStatus"] == "InService"
        with pytest.raises(backend.client("sagemaker").exceptions.ClientError):
            backend.client("sagemaker").describe_endpoint(EndpointName="local-eu")
    assert process_gone(pid)
    leftover = {t.name for t in threading.enumerate()} - before
    assert not {name for name in leftover if name.startswith("sagemaker-async-local")}
