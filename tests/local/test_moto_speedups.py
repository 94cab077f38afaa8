"""moto's SQS with the backend's speed-ups: the same answers as moto's own code (retention, visibility, clock)."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from moto.core import utils as moto_utils
from moto.sqs import models as sqs_models

from airflow_sagemaker_async.local import moto_speedups


@pytest.fixture
def sqs(sagemaker_async_backend: Any) -> Any:
    return sagemaker_async_backend.client("sqs")


def _held(backend: Any, queue_name: str) -> list[Any]:
    queue = sqs_models.sqs_backends[backend.account_id][backend.region_name].queues[queue_name]
    return list(queue._messages)


def test_the_backend_installs_them(sagemaker_async_backend: Any) -> None:
    assert moto_speedups.installed()


def test_a_message_past_the_retention_period_is_not_received_one_within_it_is(
    sagemaker_async_backend: Any, sqs: Any
) -> None:
    url = sqs.create_queue(QueueName="speedups-retention", Attributes={"MessageRetentionPeriod": "60"})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="fresh")
    sqs.send_message(QueueUrl=url, MessageBody="old")
    old = next(m for m in _held(sagemaker_async_backend, "speedups-retention") if m.body == "old")
    old.sent_timestamp -= 61_000  # sent 61 s earlier than it was: past the 60 s retention period

    bodies = [
        m["Body"] for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)["Messages"]
    ]

    assert bodies == ["fresh"]
    assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0)  # "old" is never delivered


def test_a_released_message_is_received_again_one_made_invisible_is_not(sagemaker_async_backend: Any, sqs: Any) -> None:
    url = sqs.create_queue(QueueName="speedups-visibility")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="m")
    first = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0)["Messages"][0]
    assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0)  # in flight: invisible

    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=first["ReceiptHandle"], VisibilityTimeout=0)
    again = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0, MessageSystemAttributeNames=["All"])["Messages"]

    assert [m["Body"] for m in again] == ["m"]
    assert again[0]["Attributes"]["ApproximateReceiveCount"] == "2"
    counts = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert counts["ApproximateNumberOfMessagesNotVisible"] == "1"


@pytest.mark.parametrize("when", [None, datetime.datetime(2026, 11, 22, 7, 30, 15, 250000)])
def test_the_clock_agrees_with_moto(sagemaker_async_backend: Any, when: datetime.datetime | None) -> None:
    ours, theirs = sqs_models.unix_time_millis(when), moto_utils.unix_time_millis(when)

    assert moto_speedups.installed()
    assert abs(ours - theirs) < 50  # ms: the two calls are not at the same instant when ``when`` is None
    if when is not None:
        assert ours == theirs


def test_uninstall_restores_moto_and_install_is_idempotent(sagemaker_async_backend: Any) -> None:
    try:
        moto_speedups.uninstall()
        assert sqs_models.unix_time_millis is moto_utils.unix_time_millis
        assert not moto_speedups.installed()
    finally:
        moto_speedups.install()
        moto_speedups.install()
    assert moto_speedups.installed()
