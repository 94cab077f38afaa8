"""The scale-to-zero emulation (opt-in): scale-in with MinCapacity 0, a backlog at 0 instances, a cold start
only with a step-scaling policy, expiry without one. Application Auto Scaling is moto's, through boto3."""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from airflow_sagemaker_async.local.capacity import ScaleToZero
from airflow_sagemaker_async.local.records import InvocationStatus
from tests.local.conftest import IRIS_ROW, wait_final

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_sagemaker_async.local import LocalSageMakerAsyncBackend

COLD_START_SECONDS = 1.0
SETTINGS = ScaleToZero(cold_start_seconds=COLD_START_SECONDS, scale_in_idle_seconds=0.2)
DIMENSION = "sagemaker:variant:DesiredInstanceCount"


def wait_until(condition: Callable[[], Any], timeout: float = 20.0, what: str = "the condition") -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        time.sleep(0.05)
    return value


def current_instances(backend: LocalSageMakerAsyncBackend, name: str) -> int:
    (variant,) = backend.client("sagemaker").describe_endpoint(EndpointName=name)["ProductionVariants"]
    return int(variant["CurrentInstanceCount"])


def scaled_to_zero_endpoint(
    backend: LocalSageMakerAsyncBackend, name: str, *, step_policy: bool, settings: ScaleToZero = SETTINGS
) -> str:
    """Create an endpoint under the emulation, register MinCapacity 0 (and the policy), wait until it is at 0."""
    backend.scale_to_zero = settings
    try:
        backend.create_endpoint(name)
    finally:
        backend.scale_to_zero = None
    autoscaling = backend.client("application-autoscaling")
    resource = f"endpoint/{name}/variant/AllTraffic"
    autoscaling.register_scalable_target(
        ServiceNamespace="sagemaker", ResourceId=resource, ScalableDimension=DIMENSION, MinCapacity=0, MaxCapacity=2
    )
    if step_policy:
        autoscaling.put_scaling_policy(
            PolicyName="HasBacklogWithoutCapacity-ScalingPolicy",
            ServiceNamespace="sagemaker",
            ResourceId=resource,
            ScalableDimension=DIMENSION,
            PolicyType="StepScaling",
            StepScalingPolicyConfiguration={
                "AdjustmentType": "ChangeInCapacity",
                "MetricAggregationType": "Average",
                "Cooldown": 300,
                "StepAdjustments": [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}],
            },
        )
    wait_until(lambda: current_instances(backend, name) == 0, what=f"{name} at 0 instances")
    return name


def invoke(backend: LocalSageMakerAsyncBackend, name: str) -> str:
    s3 = backend.client("s3")
    key = f"{name}/input/{uuid.uuid4()}.csv"
    s3.put_object(Bucket=backend.default_bucket, Key=key, Body=IRIS_ROW)
    answer = backend.client("sagemaker-runtime").invoke_endpoint_async(
        EndpointName=name,
        InputLocation=f"s3://{backend.default_bucket}/{key}",
        ContentType="text/csv",
        RequestTTLSeconds=60,  # 0.6 s at the package's time_scale 0.01
    )
    return str(answer["InferenceId"])


def record(backend: LocalSageMakerAsyncBackend, name: str, inference_id: str) -> Any:
    (found,) = [r for r in backend.invocations(name) if r.inference_id == inference_id]
    return found


@pytest.fixture
def endpoint_name(backend: LocalSageMakerAsyncBackend) -> Any:
    names: list[str] = []

    def make(prefix: str) -> str:
        names.append(f"{prefix}-{uuid.uuid4().hex[:6]}")
        return names[-1]

    yield make
    for name in names:
        backend.delete_endpoint(name)


def test_with_a_step_scaling_policy_the_backlog_drains_after_the_cold_start(backend: Any, endpoint_name: Any) -> None:
    name = scaled_to_zero_endpoint(backend, endpoint_name("policy"), step_policy=True)
    backend.time_scale = 1.0  # the TTL must outlast the cold start: 60 s
    try:
        first, second = invoke(backend, name), invoke(backend, name)
    finally:
        backend.time_scale = 0.01
    wait_until(
        lambda: all(record(backend, name, i).status.is_final for i in (first, second)), what="both requests ended"
    )
    ended = [record(backend, name, i) for i in (first, second)]

    assert [r.status for r in ended] == [InvocationStatus.COMPLETED] * 2
    # the cold start begins once the first request is seen queued: nothing runs before it has lasted its length
    assert all((r.started_time - ended[0].received_time).total_seconds() >= COLD_START_SECONDS for r in ended)


def test_without_the_policy_the_requests_stay_queued_until_they_expire(
    backend: Any, endpoint_name: Any, iris: Any
) -> None:
    autoscaling = backend.client("application-autoscaling")
    warm = f"endpoint/{iris.name}/variant/AllTraffic"  # created without the emulation: it must keep its instance
    autoscaling.register_scalable_target(
        ServiceNamespace="sagemaker", ResourceId=warm, ScalableDimension=DIMENSION, MinCapacity=0, MaxCapacity=2
    )
    try:
        name = scaled_to_zero_endpoint(backend, endpoint_name("nopolicy"), step_policy=False)  # waits for 0
        inference_id = invoke(backend, name)
        ended = wait_final(backend, name, inference_id)

        assert ended.status is InvocationStatus.EXPIRED
        assert ended.started_time is None
        assert current_instances(backend, name) == 0
        assert backend._running_runtime()._endpoints[iris.name].capacity_gate is None
        assert current_instances(backend, iris.name) == 1
    finally:
        autoscaling.deregister_scalable_target(
            ServiceNamespace="sagemaker", ResourceId=warm, ScalableDimension=DIMENSION
        )
