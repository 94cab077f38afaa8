"""Triggers serialised before the subpackage layout and after it both rebuild, as Airflow's triggerer does."""

from __future__ import annotations

import json
from typing import Any

import pytest
from airflow._shared.module_loading import import_string

from airflow_sagemaker_async import SageMakerAsyncBatchInferenceTrigger, SageMakerAsyncInferenceTrigger

# Serialised by the code of c121542 (the flat layout), as stored in Airflow's trigger table.
BEFORE_THE_MOVE = [
    json.loads(
        '["airflow_sagemaker_async.triggers.SageMakerAsyncInferenceTrigger", {"inference_id": "inf-1", '
        '"output_location": "s3://bucket/out/inf-1.out", "failure_location": "s3://bucket/failures/inf-1-error.out", '
        '"deadline": "2026-12-05T18:00:00+00:00", "endpoint_name": "ep", "submitted_at": "2026-12-05T17:00:00+00:00", '
        '"poll_interval": 2.0, "max_poll_interval": 300.0, "aws_conn_id": "aws_default", '
        '"notification_queue_url": "http://127.0.0.1:1/123456789012/q", "region_name": "us-east-1"}]'
    ),
    json.loads(
        '["airflow_sagemaker_async.batch_trigger.SageMakerAsyncBatchInferenceTrigger", {"batch_tag": "b-1", '
        '"state_location": "s3://bucket/state/b-1/state.json", "output_dir": "s3://bucket/out/airflow-batch/b-1", '
        '"failure_dir": "s3://bucket/failures/airflow-batch/b-1", "low_water": 100, "poll_interval": 2.0, '
        '"max_poll_interval": 30.0, "aws_conn_id": "aws_default", "not_before": "2026-12-05T17:00:05+00:00", '
        '"region_name": "us-east-1"}]'
    ),
]


def rebuild(classpath: str, kwargs: dict[str, Any]) -> Any:
    """What the triggerer does with a trigger row: import the classpath, call it with the kwargs."""
    return import_string(classpath)(**kwargs)


@pytest.mark.parametrize(("classpath", "kwargs"), BEFORE_THE_MOVE, ids=["inference", "batch"])
def test_a_trigger_serialised_before_the_move_rebuilds_and_serialises_under_its_new_module(
    classpath: str, kwargs: dict[str, Any]
) -> None:
    trigger = rebuild(classpath, kwargs)

    new_classpath, new_kwargs = trigger.serialize()
    assert isinstance(trigger, (SageMakerAsyncInferenceTrigger, SageMakerAsyncBatchInferenceTrigger))
    assert new_classpath != classpath
    assert new_classpath.split(".")[1] in {"inference", "batch"}
    assert new_kwargs == kwargs


@pytest.mark.parametrize(("classpath", "kwargs"), BEFORE_THE_MOVE, ids=["inference", "batch"])
def test_a_trigger_serialised_after_the_move_rebuilds_the_same(classpath: str, kwargs: dict[str, Any]) -> None:
    new_classpath, new_kwargs = rebuild(classpath, kwargs).serialize()

    again = rebuild(new_classpath, new_kwargs)

    assert again.serialize() == (new_classpath, new_kwargs)
    assert type(again).__module__ == new_classpath.rsplit(".", 1)[0]
