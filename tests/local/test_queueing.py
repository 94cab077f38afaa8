from __future__ import annotations

import json
import time

import pytest

from airflow_sagemaker_async.local import InvocationStatus
from tests.local.conftest import IRIS_ROW, create_notified_endpoint, object_exists, read_object, wait_final


@pytest.fixture(scope="module")
def serial(backend):
    """One instance, one invocation at a time: the second request always waits."""
    return create_notified_endpoint(backend, "local-serial", max_concurrent_invocations_per_instance=1)


@pytest.fixture(scope="module")
def pair(backend):
    """Two instances (two container processes), one invocation each."""
    return backend.create_endpoint("local-pair", max_concurrent_invocations_per_instance=1, initial_instance_count=2)


def invoke(backend, endpoint_name, **kwargs):
    return backend.client("sagemaker-runtime").invoke_endpoint_async(
        EndpointName=endpoint_name, Body=IRIS_ROW, ContentType="text/csv", **kwargs
    )


def test_request_waits_while_the_only_slot_is_busy(backend, serial):
    slow = invoke(backend, serial.name, CustomAttributes="sleep=1")
    waiting = invoke(backend, serial.name)
    time.sleep(0.3)

    states = {r.inference_id: r.status for r in backend.invocations(serial.name)}
    assert states[slow["InferenceId"]] is InvocationStatus.IN_PROGRESS
    assert states[waiting["InferenceId"]] is InvocationStatus.QUEUED

    first = wait_final(backend, serial.name, slow["InferenceId"])
    second = wait_final(backend, serial.name, waiting["InferenceId"])
    assert second.status is InvocationStatus.COMPLETED
    assert (second.started_time - first.started_time).total_seconds() >= 1.0


def test_request_queued_longer_than_its_ttl_expires_writes_nothing_and_notifies_expired(backend, serial):
    blocker = invoke(backend, serial.name, CustomAttributes="sleep=2")
    doomed = invoke(backend, serial.name, RequestTTLSeconds=60, InferenceId="doomed-1")  # 0.6 s at 0.01

    expired = wait_final(backend, serial.name, "doomed-1", timeout=5)
    assert expired.status is InvocationStatus.EXPIRED
    assert expired.started_time is None
    assert 0.5 <= (expired.finished_time - expired.received_time).total_seconds() < 1.9
    message = serial.notifications.wait_for("doomed-1")
    assert message["invocationStatus"] == "Expired"
    assert message["eventName"] == "InferenceResult"
    assert "RequestTTLSeconds (60 s" in message["failureReason"]
    assert "responseParameters" not in message

    wait_final(backend, serial.name, blocker["InferenceId"])
    assert not object_exists(backend, doomed["OutputLocation"])
    assert not object_exists(backend, doomed["FailureLocation"])


def test_model_slower_than_invocation_timeout_fails_with_failure_object_and_notification(backend, serial):
    answer = invoke(backend, serial.name, CustomAttributes="sleep=2", InvocationTimeoutSeconds=60)  # 0.6 s

    final = wait_final(backend, serial.name, answer["InferenceId"], timeout=5)
    assert final.status is InvocationStatus.FAILED
    assert "InvocationTimeoutSeconds (60 s" in final.failure_reason
    assert (final.finished_time - final.started_time).total_seconds() < 1.9
    body, _ = read_object(backend, answer["FailureLocation"])
    assert json.loads(body) == {"message": final.failure_reason, "status": "error"}
    message = serial.notifications.wait_for(answer["InferenceId"])
    assert message["invocationStatus"] == "Failed"
    assert message["failureReason"] == final.failure_reason
    assert not object_exists(backend, answer["OutputLocation"])


def test_two_instances_run_two_requests_at_once_and_queue_the_third(backend, pair):
    answers = [invoke(backend, pair.endpoint_name, CustomAttributes="sleep=1") for _ in range(3)]
    time.sleep(0.4)
    states = sorted(r.status.value for r in backend.invocations(pair.endpoint_name))
    assert states == ["InProgress", "InProgress", "Queued"]
    assert len(backend.container_pids(pair.endpoint_name)) == 2
    finals = [wait_final(backend, pair.endpoint_name, a["InferenceId"]) for a in answers]
    assert all(f.status is InvocationStatus.COMPLETED for f in finals)


def test_time_scale_is_read_when_a_request_is_accepted(backend, serial):
    backend.time_scale = 0.02
    try:
        answer = invoke(backend, serial.name, CustomAttributes="sleep=2", InvocationTimeoutSeconds=60)  # 1.2 s
    finally:
        backend.time_scale = 0.01
    final = wait_final(backend, serial.name, answer["InferenceId"], timeout=5)
    assert final.status is InvocationStatus.FAILED
    assert "1.2 s with time_scale 0.02" in final.failure_reason


def test_hundreds_of_queued_requests_all_drain(backend, iris):
    answers = [invoke(backend, iris.name, InferenceId=f"bulk-{index}") for index in range(200)]
    backend.wait_idle(timeout=60)
    finals = {r.inference_id: r.status for r in backend.invocations(iris.name) if r.inference_id.startswith("bulk-")}
    assert len(finals) == len(answers) == 200
    assert set(finals.values()) == {InvocationStatus.COMPLETED}
