"""
The fast-event guard and the deployment settings: a result already there is finished on the worker without
a deferral; a deferred wait never fires before ``min_deferral_seconds``; defaults come from ``[sagemaker_async]``.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskDeferred

from airflow_sagemaker_async.common.exceptions import SageMakerAsyncParameterError
from airflow_sagemaker_async.common.watch import isoformat, utcnow
from airflow_sagemaker_async.inference.sensors import SageMakerAsyncInferenceSensor
from airflow_sagemaker_async.inference.triggers import SageMakerAsyncInferenceTrigger
from tests.test_operators import CSV_ROWS, StandInTaskInstance, operator, run

pytestmark = pytest.mark.usefixtures("endpoints", "backend_connection")


def test_a_result_already_there_is_finished_on_the_worker_without_deferring(runtime_proxy: Any) -> None:
    first = run(operator(input_data=CSV_ROWS, content_type="text/csv", inference_id="guard-ready"))
    sensor = SageMakerAsyncInferenceSensor(
        task_id="wait", output_location=first["output_location"], failure_location=first["failure_location"]
    )

    outcome = sensor.execute({"ti": StandInTaskInstance()})  # no TaskDeferred: checked once before deferring

    assert outcome is not None
    assert outcome["status"] == "Completed"
    assert outcome["output_location"] == first["output_location"]


def test_the_deferral_carries_not_before_min_deferral_seconds_after_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__SAGEMAKER_ASYNC__MIN_DEFERRAL_SECONDS", "7")
    op = operator(input_data=CSV_ROWS, content_type="text/csv", inference_id="guard-kwarg", custom_attributes="sleep=5")
    before = utcnow()

    with pytest.raises(TaskDeferred) as info:
        op.execute({"ti": StandInTaskInstance()})

    kwargs = info.value.trigger.serialize()[1]
    not_before = datetime.fromisoformat(kwargs["not_before"])
    assert op.min_deferral_seconds == 7
    assert before + timedelta(seconds=7) <= not_before <= utcnow() + timedelta(seconds=7)


async def _first_event(trigger: SageMakerAsyncInferenceTrigger) -> tuple[dict[str, Any], float]:
    started = time.monotonic()
    async for event in trigger.run():
        return event.payload, time.monotonic() - started
    raise AssertionError("the trigger yielded nothing")


def test_the_trigger_holds_a_result_found_early_until_not_before() -> None:
    done = run(operator(input_data=CSV_ROWS, content_type="text/csv", inference_id="guard-hold"))
    trigger_kwargs: dict[str, Any] = {
        "inference_id": done["inference_id"],
        "output_location": done["output_location"],
        "failure_location": done["failure_location"],
        "deadline": isoformat(utcnow() + timedelta(minutes=5)),
    }
    held = SageMakerAsyncInferenceTrigger(**trigger_kwargs, not_before=isoformat(utcnow() + timedelta(seconds=2)))
    free = SageMakerAsyncInferenceTrigger(**trigger_kwargs)

    held_event, held_seconds = asyncio.run(_first_event(held))
    free_event, free_seconds = asyncio.run(_first_event(free))

    assert held_event["status"] == free_event["status"] == "Completed"
    assert held_seconds >= 1.9
    assert free_seconds < held_seconds
    assert SageMakerAsyncInferenceTrigger(**held.serialize()[1]).not_before == held.not_before  # rebuilt, kept


def test_poll_schedule_defaults_come_from_the_sagemaker_async_config_section(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__SAGEMAKER_ASYNC__POLL_INTERVAL", "0.25")
    monkeypatch.setenv("AIRFLOW__SAGEMAKER_ASYNC__MAX_POLL_INTERVAL", "1.5")

    configured = operator(input_data="x", poll_interval=None, max_poll_interval=None)
    explicit = operator(input_data="x", poll_interval=3, max_poll_interval=None)

    assert (configured.poll_interval, configured.max_poll_interval) == (0.25, 1.5)
    assert (explicit.poll_interval, explicit.max_poll_interval) == (3, 3)  # a configured ceiling never refuses


def test_without_config_the_documented_defaults_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW__SAGEMAKER_ASYNC__MIN_DEFERRAL_SECONDS")

    op = operator(input_data="x", poll_interval=None, max_poll_interval=None)

    assert (op.poll_interval, op.max_poll_interval, op.min_deferral_seconds) == (2.0, 30.0, 10.0)


def test_a_negative_min_deferral_is_refused_naming_the_parameter() -> None:
    with pytest.raises(SageMakerAsyncParameterError) as info:
        operator(input_data="x", min_deferral_seconds=-1)

    assert info.value.parameter == "min_deferral_seconds"
