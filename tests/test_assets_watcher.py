"""
SageMakerAsyncNotificationTrigger (an AssetWatcher's trigger) against a real SQS queue (moto on 127.0.0.1):
filters, payloads, deterministic kwargs, when each message is deleted, a missing queue. The run under a real
Airflow (ack mode, DAG runs started) is in ``tests/e2e/test_assets.py``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from airflow.triggers.base import BaseEventTrigger

from airflow_sagemaker_async.assets import watcher as watcher_module
from airflow_sagemaker_async.assets.watcher import (
    ReceivedMessage,
    SageMakerAsyncNotificationTrigger,
    SqsNotificationStream,
)
from airflow_sagemaker_async.common.exceptions import SageMakerAsyncParameterError

if TYPE_CHECKING:
    from airflow_sagemaker_async.local import LocalSageMakerAsyncBackend

QUEUE = "https://sqs.us-east-1.amazonaws.com/123456789012/results"


def notification(status: str, *, endpoint: str = "iris", inference_id: str | None = None, output: str = "") -> str:
    body: dict[str, Any] = {
        "eventName": "InferenceResult",
        "eventSource": "aws:sagemaker",
        "invocationStatus": status,
        "inferenceId": inference_id or uuid.uuid4().hex,
        "receivedTime": "2026-12-05T10:00:00.000Z",
        "requestParameters": {"endpointName": endpoint, "inputLocation": "s3://in/x.csv"},
    }
    if status == "Completed":
        body["responseParameters"] = {"outputLocation": output or "s3://out/iris/output/x.out"}
    if status == "Failed":
        body["failureReason"] = "ClientError: Received server error (500) from model."
    # Without raw message delivery: SNS's envelope.
    return json.dumps({"Type": "Notification", "MessageId": uuid.uuid4().hex, "Message": json.dumps(body)})


# -- filters and kwargs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "parameter", "words"),
    [
        ({"statuses": ["Complete"]}, "statuses", "can never match"),
        ({"statuses": []}, "statuses", "at least one"),
        ({"statuses": "Completed"}, "statuses", "must be a list"),
        ({"output_prefix": "gs://bucket/out/"}, "output_prefix", "must be an S3 URI"),
        ({"output_prefix": "s3://b/out/", "statuses": ["Completed", "Failed"]}, "statuses", "name no output location"),
        ({"endpoint_name": "bad_name!"}, "endpoint_name", "endpoint_name"),
        ({"queue_url": "arn:aws:sqs:us-east-1:123456789012:results"}, "queue_url", "SQS queue URL"),
    ],
)
def test_filters_that_cannot_match_are_a_parameter_error(kwargs: dict[str, Any], parameter: str, words: str) -> None:
    with pytest.raises(SageMakerAsyncParameterError, match=words) as caught:
        SageMakerAsyncNotificationTrigger(**{"queue_url": QUEUE, **kwargs})

    assert caught.value.parameter == parameter


def test_kwargs_are_normalised_so_equal_watchers_hash_equally() -> None:
    one = SageMakerAsyncNotificationTrigger(queue_url=QUEUE, endpoint_name="iris", statuses=["Failed", "Completed"])
    two = SageMakerAsyncNotificationTrigger(queue_url=QUEUE, endpoint_name="iris", statuses=["Completed", "Failed"])
    prefixed = SageMakerAsyncNotificationTrigger(
        queue_url=QUEUE, output_prefix="https://out.s3.us-east-1.amazonaws.com/iris/"
    )

    classpath, kwargs = one.serialize()
    assert classpath == "airflow_sagemaker_async.assets.watcher.SageMakerAsyncNotificationTrigger"
    assert kwargs == {
        "queue_url": QUEUE,
        "endpoint_name": "iris",
        "statuses": ["Completed", "Failed"],
        "output_prefix": None,
        "aws_conn_id": "aws_default",
    }
    assert BaseEventTrigger.hash(*one.serialize()) == BaseEventTrigger.hash(*two.serialize())
    assert SageMakerAsyncNotificationTrigger(**kwargs).serialize() == (classpath, kwargs)
    # An https prefix is the s3:// one; a prefix watches Completed only (the others name no location).
    assert prefixed.serialize()[1]["output_prefix"] == "s3://out/iris/"
    assert prefixed.serialize()[1]["statuses"] == ["Completed"]


def test_event_payload_holds_the_parsed_notification_and_only_matches_count() -> None:
    trigger = SageMakerAsyncNotificationTrigger(queue_url=QUEUE, endpoint_name="iris", statuses=["Failed"])
    parse = watcher_module.parse_message
    failed = ReceivedMessage(parse(notification("Failed", inference_id="inf-1")), "m-1", "h", 1_764_928_800.0)
    foreign = ReceivedMessage(parse(notification("Failed", endpoint="other")), "m-2", "h", 1_764_928_800.0)
    completed = ReceivedMessage(parse(notification("Completed")), "m-3", "h", 1_764_928_800.0)

    event = trigger.event_for(failed)

    assert event is not None
    assert event.payload == {
        "inference_id": "inf-1",
        "status": "Failed",
        "endpoint_name": "iris",
        "output_location": None,
        "failure_location": None,
        "input_location": "s3://in/x.csv",
        "failure_reason": "ClientError: Received server error (500) from model.",
        "received_time": "2026-12-05T10:00:00+00:00",
        "message_id": "m-1",
        "sent_at": "2025-12-05T10:00:00+00:00",
    }
    assert failed.matched == 1
    assert trigger.event_for(foreign) is None
    assert trigger.event_for(completed) is None
    assert (foreign.matched, completed.matched) == (0, 0)


# -- against a real queue -----------------------------------------------------------------------------------


@pytest.fixture
def backend_conn(sagemaker_async_backend: LocalSageMakerAsyncBackend, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", sagemaker_async_backend.airflow_connection_env())
    return "aws_default"


@pytest.fixture
def sqs(sagemaker_async_backend: LocalSageMakerAsyncBackend) -> Any:
    return sagemaker_async_backend.client("sqs")


@pytest.fixture
def queue(sqs: Any) -> str:
    url: str = sqs.create_queue(QueueName=f"watch-{uuid.uuid4().hex[:10]}")["QueueUrl"]
    return url


def counts(sqs: Any, queue_url: str) -> tuple[int, int]:
    """(visible, in flight) messages of the queue."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]), int(attributes["ApproximateNumberOfMessagesNotVisible"])


def wait_until(condition: Any, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def test_run_without_acknowledgement_deletes_a_matched_message_only_after_the_grace_and_keeps_foreign_ones(
    backend_conn: str, sqs: Any, queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Airflow 3.2's path (no shared streams): the trigger's own long poll.
    monkeypatch.setattr(watcher_module, "PERSIST_GRACE_SECONDS", 2.0)  # well past the 0.3 s look, however loaded
    monkeypatch.setattr(watcher_module, "WAIT_TIME_SECONDS", 1)
    sqs.send_message(QueueUrl=queue, MessageBody="not json at all")
    sqs.send_message(QueueUrl=queue, MessageBody=notification("Completed", endpoint="another-endpoint"))
    sqs.send_message(QueueUrl=queue, MessageBody=notification("Completed", inference_id="mine"))
    trigger = SageMakerAsyncNotificationTrigger(queue_url=queue, endpoint_name="iris", aws_conn_id=backend_conn)

    async def scenario() -> tuple[dict[str, Any], tuple[int, int], tuple[int, int]]:
        events = trigger.run()
        first = await asyncio.wait_for(events.__anext__(), 30)
        next_event = asyncio.ensure_future(events.__anext__())  # resumes the generator: the grace starts
        await asyncio.sleep(0.3)
        during = counts(sqs, queue)  # the matched message still held (invisible), not deleted
        await asyncio.sleep(5)
        after = counts(sqs, queue)
        next_event.cancel()
        with pytest.raises(asyncio.CancelledError):
            await next_event
        await events.aclose()
        return first.payload, during, after

    payload, during, after = asyncio.run(scenario())

    assert payload["inference_id"] == "mine"
    assert payload["status"] == "Completed"
    assert payload["output_location"] == "s3://out/iris/output/x.out"
    assert sum(during) == 3
    assert sum(after) == 2, "the matched message is deleted after the grace; the foreign and malformed ones stay"


def test_advance_deletes_a_matched_message_only_when_every_watcher_stored_its_event(
    backend_conn: str, sqs: Any, queue: str
) -> None:
    # Airflow 3.3's ack mode: what the triggerer's shared-stream manager calls.
    shared_stream = pytest.importorskip("airflow.triggers.shared_stream")
    for inference_id in ("stored", "failed"):
        sqs.send_message(QueueUrl=queue, MessageBody=notification("Completed", inference_id=inference_id))
    stream = SqsNotificationStream(queue, aws_conn_id=backend_conn, wait_time_seconds=1)
    trigger = SageMakerAsyncNotificationTrigger(queue_url=queue, aws_conn_id=backend_conn)

    async def scenario() -> None:
        received: list[ReceivedMessage] = []
        messages = stream.open_stream()
        while len(received) < 2:
            message, _ = await asyncio.wait_for(messages.__anext__(), 30)
            assert trigger.event_for(message) is not None
            received.append(message)
        await messages.aclose()
        by_id = {message.parsed.inference_id: message for message in received}  # type: ignore[union-attr]
        await stream.advance(
            [
                shared_stream.AdvanceItem(by_id["stored"], shared_stream.AdvanceOutcome(acked=1, failed=0)),
                shared_stream.AdvanceItem(by_id["failed"], shared_stream.AdvanceOutcome(acked=0, failed=1)),
            ]
        )
        await stream.aclose()

    asyncio.run(scenario())

    assert (stream.deleted, stream.released) == (1, 1)
    # The one a watcher failed on is visible again at once (redelivered), the stored one is gone.
    answer = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1)
    bodies = [json.loads(json.loads(m["Body"])["Message"])["inferenceId"] for m in answer.get("Messages", [])]
    assert bodies == ["failed"]


def test_a_missing_queue_is_logged_once_and_retried_without_raising(
    backend_conn: str,
    sagemaker_async_backend: LocalSageMakerAsyncBackend,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(watcher_module, "RETRY_FIRST_SECONDS", 0.1)
    monkeypatch.setattr(watcher_module, "RETRY_MAX_SECONDS", 0.2)
    missing = f"{sagemaker_async_backend.endpoint_url}/123456789012/no-such-queue-{uuid.uuid4().hex[:6]}"
    stream = SqsNotificationStream(missing, aws_conn_id=backend_conn, wait_time_seconds=1)

    async def scenario() -> None:
        messages = stream.open_stream()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(messages.__anext__(), 3)
        await stream.aclose()

    with caplog.at_level(logging.DEBUG, logger=watcher_module.__name__):
        asyncio.run(scenario())

    assert stream.errors >= 3, "retried with backoff"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "Cannot receive SageMaker notifications from SQS queue" in warnings[0].getMessage()
    assert "no-such-queue" in warnings[0].getMessage()
