"""The sensor, deferrable and in poke mode, waiting for inferences submitted without waiting."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskDeferred

from airflow_sagemaker_async.common.exceptions import SageMakerAsyncInferenceError, SageMakerAsyncInferenceTimeout
from airflow_sagemaker_async.inference.sensors import SageMakerAsyncInferenceSensor
from tests.test_operators import CSV_ROWS, FAST, StandInTaskInstance, operator, run

pytestmark = pytest.mark.usefixtures("endpoints", "backend_connection")


def sense(sensor: SageMakerAsyncInferenceSensor) -> dict[str, Any]:
    context: Any = {"ti": StandInTaskInstance(task_id=sensor.task_id)}
    try:
        return sensor.execute(context)
    except TaskDeferred as deferred:
        (event,) = asyncio.run(asyncio.wait_for(_events(deferred.trigger), 60))
        return getattr(sensor, deferred.method_name)(context, event=event)


async def _events(trigger: Any) -> list[dict[str, Any]]:
    return [e.payload async for e in trigger.run()]


def submit(**kwargs: Any) -> dict[str, Any]:
    return run(operator(content_type="text/csv", wait_for_completion=False, **kwargs))


def sensor_for(record: dict[str, Any], **kwargs: Any) -> SageMakerAsyncInferenceSensor:
    return SageMakerAsyncInferenceSensor(
        task_id="wait",
        output_location=record["output_location"],
        failure_location=record["failure_location"],
        inference_id=record["inference_id"],
        endpoint_name=record["endpoint_name"],
        **{"poke_interval": FAST["poll_interval"], "max_poll_interval": FAST["max_poll_interval"], **kwargs},
    )


@pytest.mark.parametrize("mode", ["deferrable", "poke"])
def test_sensor_returns_the_completed_outcome_with_output(mode: str) -> None:
    record = submit(input_data=CSV_ROWS, inference_id=f"s-ok-{mode}")
    sensor = sensor_for(record, output_format="json", deferrable=mode == "deferrable", mode="poke")

    outcome = sense(sensor)

    assert outcome["status"] == "Completed"
    assert outcome["inference_id"] == f"s-ok-{mode}"
    assert outcome["endpoint_name"] == "op-iris"
    assert outcome["submitted_at"] is None
    assert [p["label"] for p in outcome["output"]["predictions"]] == ["setosa", "virginica"]


@pytest.mark.parametrize("mode", ["deferrable", "poke"])
def test_sensor_raises_the_model_error(mode: str) -> None:
    record = submit(input_data="x\n", inference_id=f"s-bad-{mode}")
    sensor = sensor_for(record, deferrable=mode == "deferrable")

    with pytest.raises(SageMakerAsyncInferenceError) as info:
        sense(sensor)

    assert info.value.outcome["status"] == "Failed"
    assert record["failure_location"] in str(info.value)


@pytest.mark.parametrize("mode", ["deferrable", "poke"])
def test_sensor_timeout_is_the_packages_timeout_error(mode: str) -> None:
    record = submit(input_data=CSV_ROWS, custom_attributes="sleep=4", inference_id=f"s-slow-{mode}")
    sensor = sensor_for(record, deferrable=mode == "deferrable", timeout=0.5)

    with pytest.raises(SageMakerAsyncInferenceTimeout) as info:
        sense(sensor)

    assert record["output_location"] in str(info.value)
    assert "expired in its queue" in str(info.value)


def test_sensor_and_operator_give_the_same_outcome_keys() -> None:
    by_operator = run(operator(input_data=CSV_ROWS, content_type="text/csv", inference_id="same-1"))
    record = submit(input_data=CSV_ROWS, inference_id="same-2")
    by_sensor = sense(sensor_for(record))

    assert set(by_operator) == set(by_sensor)
    assert by_sensor["status"] == by_operator["status"] == "Completed"
