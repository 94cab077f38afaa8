"""
Push completion against the local backend: SageMaker's SNS notifications through a real SQS queue (moto on
127.0.0.1) wake the trigger; S3 stays the truth; the queue never fails a wait.

Most waits here poll S3 once an hour (``poll_interval`` 3600): a wait that ends within seconds was woken
by a notification, not by polling.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from airflow_sagemaker_async import receiver as receiver_module
from airflow_sagemaker_async.exceptions import SageMakerAsyncParameterError
from airflow_sagemaker_async.operators import SageMakerInvokeEndpointAsyncOperator
from airflow_sagemaker_async.outcome import timeout_error
from airflow_sagemaker_async.receiver import shared_receivers
from airflow_sagemaker_async.sensors import SageMakerAsyncInferenceSensor
from airflow_sagemaker_async.triggers import SageMakerAsyncInferenceTrigger
from airflow_sagemaker_async.watch import isoformat, utcnow

if TYPE_CHECKING:
    from airflow_sagemaker_async.local import LocalSageMakerAsyncBackend

IRIS_ROW = b"5.1,3.5,1.4,0.2"
HOUR = 3600.0
REPO = Path(__file__).resolve().parent.parent


class PushEndpoint:
    """``push-iris``: iris model, 20 concurrent invocations, success and error topics."""

    def __init__(self, backend: LocalSageMakerAsyncBackend) -> None:
        self.backend = backend
        sns = backend.client("sns")
        self.topics = [
            sns.create_topic(Name="push-iris-success")["TopicArn"],
            sns.create_topic(Name="push-iris-error")["TopicArn"],
        ]
        self.endpoint = backend.create_endpoint(
            "push-iris",
            success_topic_arn=self.topics[0],
            error_topic_arn=self.topics[1],
            max_concurrent_invocations_per_instance=20,
        )

    def new_queue(self, *, raw: bool = False) -> str:
        """A fresh queue subscribed to both topics, with or without raw message delivery."""
        sqs, sns = self.backend.client("sqs"), self.backend.client("sns")
        url = sqs.create_queue(QueueName=f"push-{uuid.uuid4().hex[:10]}")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        for topic in self.topics:
            attributes = {"RawMessageDelivery": "true"} if raw else {}
            sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes=attributes)
        return url

    def invoke(self, **kwargs: Any) -> dict[str, Any]:
        answer: dict[str, Any] = self.backend.client("sagemaker-runtime").invoke_endpoint_async(
            EndpointName="push-iris", Body=IRIS_ROW, ContentType="text/csv", **kwargs
        )
        return answer


@pytest.fixture(scope="module")
def push(sagemaker_async_backend: LocalSageMakerAsyncBackend) -> PushEndpoint:
    return PushEndpoint(sagemaker_async_backend)


@pytest.fixture
def backend_conn(sagemaker_async_backend: LocalSageMakerAsyncBackend, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", sagemaker_async_backend.airflow_connection_env())
    return "aws_default"


def trigger_for(answer: dict[str, Any], queue_url: str | None, **kwargs: Any) -> SageMakerAsyncInferenceTrigger:
    params: dict[str, Any] = {
        "inference_id": answer["InferenceId"],
        "output_location": answer["OutputLocation"],
        "failure_location": answer.get("FailureLocation"),
        "deadline": isoformat(utcnow() + timedelta(hours=1)),
        "endpoint_name": "push-iris",
        "submitted_at": isoformat(utcnow()),
        "notification_queue_url": queue_url,
        "poll_interval": HOUR,
        "max_poll_interval": HOUR,
        **kwargs,
    }
    return SageMakerAsyncInferenceTrigger(**params)


async def run_trigger(trigger: SageMakerAsyncInferenceTrigger, timeout: float = 30) -> tuple[dict[str, Any], float]:
    started = time.monotonic()

    async def first() -> dict[str, Any]:
        events = [event.payload async for event in trigger.run()]
        assert len(events) == 1
        return events[0]

    event = await asyncio.wait_for(first(), timeout)
    return event, time.monotonic() - started


def test_notification_queue_url_is_validated_and_serialised_only_when_set() -> None:
    deadline = isoformat(utcnow() + timedelta(hours=1))
    base = {"inference_id": "i", "output_location": "s3://b/o.out", "failure_location": None, "deadline": deadline}
    plain = SageMakerAsyncInferenceTrigger(**base)
    pushed = SageMakerAsyncInferenceTrigger(
        **base, notification_queue_url="https://sqs.us-east-1.amazonaws.com/123456789012/q"
    )

    assert "notification_queue_url" not in plain.serialize()[1]
    assert plain.max_poll_interval == 30
    classpath, kwargs = pushed.serialize()
    assert kwargs["notification_queue_url"] == "https://sqs.us-east-1.amazonaws.com/123456789012/q"
    assert kwargs["max_poll_interval"] == 300, "safety polling: 5 minutes by default with a queue"
    assert SageMakerAsyncInferenceTrigger(**kwargs).serialize() == (classpath, kwargs)
    with pytest.raises(SageMakerAsyncParameterError, match="notification_queue_url"):
        SageMakerAsyncInferenceTrigger(**base, notification_queue_url="arn:aws:sqs:us-east-1:123456789012:q")


def test_operator_and_sensor_take_a_templated_queue_and_default_to_the_slow_safety_ceiling() -> None:
    operator = SageMakerInvokeEndpointAsyncOperator(
        task_id="t",
        endpoint_name="ep",
        input_location="s3://b/in",
        notification_queue_url="{{ var.value.queue }}",
    )
    sensor = SageMakerAsyncInferenceSensor(
        task_id="s",
        output_location="s3://b/o.out",
        notification_queue_url="https://sqs.eu-west-1.amazonaws.com/123456789012/q",
    )

    assert "notification_queue_url" in operator.template_fields
    assert "notification_queue_url" in sensor.template_fields
    assert operator.max_poll_interval == 300
    assert sensor.max_poll_interval == 300
    with pytest.raises(SageMakerAsyncParameterError, match="notification_queue_url"):
        SageMakerAsyncInferenceSensor(task_id="x", output_location="s3://b/o.out", notification_queue_url="q")


@pytest.mark.asyncio
@pytest.mark.parametrize("raw", [False, True], ids=["sns-envelope", "raw-delivery"])
async def test_notification_wakes_the_wait_long_before_the_next_poll(
    push: PushEndpoint, backend_conn: str, raw: bool
) -> None:
    queue_url = push.new_queue(raw=raw)
    answer = push.invoke(CustomAttributes="sleep=1.5")

    event, seconds = await run_trigger(trigger_for(answer, queue_url))

    assert event["status"] == "Completed"
    assert event["expired"] is False
    assert seconds < 15, "the next poll was an hour away"
    assert event["checks"] == 2, "one HEAD at the start, one to confirm the notification"
    assert shared_receivers.active() == 0, "the receiver closed with its last wait"


@pytest.mark.asyncio
async def test_failed_inference_is_woken_by_the_error_topic(push: PushEndpoint, backend_conn: str) -> None:
    queue_url = push.new_queue()
    answer = push.invoke(CustomAttributes="sleep=1,status=500")

    event, seconds = await run_trigger(trigger_for(answer, queue_url))

    assert event["status"] == "Failed"
    assert event["location"] == answer["FailureLocation"]
    assert seconds < 15


@pytest.mark.asyncio
async def test_many_waits_share_one_receiver_and_each_is_woken(push: PushEndpoint, backend_conn: str) -> None:
    queue_url = push.new_queue()
    answers = [push.invoke(CustomAttributes="sleep=1.5") for _ in range(10)]
    opened = shared_receivers.opened

    results = await asyncio.gather(*(run_trigger(trigger_for(a, queue_url)) for a in answers))

    assert [event["status"] for event, _ in results] == ["Completed"] * 10
    assert max(seconds for _, seconds in results) < 20
    assert shared_receivers.opened - opened == 1


def test_two_triggerer_processes_share_one_queue_and_every_wait_ends_by_notification(
    push: PushEndpoint, sagemaker_async_backend: LocalSageMakerAsyncBackend
) -> None:
    queue_url = push.new_queue()
    env = {**os.environ, "AIRFLOW_CONN_AWS_DEFAULT": sagemaker_async_backend.airflow_connection_env()}
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.push_waiter"],
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None
            assert worker.stdout.readline().strip() == "ready"
        answers = [push.invoke(CustomAttributes="sleep=3") for _ in range(16)]
        for index, worker in enumerate(workers):
            waits = [
                {
                    "inference_id": a["InferenceId"],
                    "output_location": a["OutputLocation"],
                    "failure_location": a["FailureLocation"],
                    "endpoint_name": "push-iris",
                }
                for a in answers[index::2]
            ]
            document = {"queue_url": queue_url, "waits": waits, "poll_interval": HOUR, "max_poll_interval": HOUR}
            assert worker.stdin is not None
            worker.stdin.write(json.dumps(document) + "\n")
            worker.stdin.flush()
        outputs = [worker.communicate(timeout=60)[0] for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    events = [[json.loads(line) for line in out.splitlines() if line.startswith("{")] for out in outputs]

    assert [len(e) for e in events] == [8, 8], outputs
    assert {e["status"] for per_worker in events for e in per_worker} == {"Completed"}
    assert {e["inference_id"] for per_worker in events for e in per_worker} == {a["InferenceId"] for a in answers}
    # Polling would have looked again after an hour: each wait ended on a notification, within seconds.
    assert max(e["seconds"] for per_worker in events for e in per_worker) < 60


@pytest.mark.asyncio
async def test_expired_notification_ends_the_wait_at_once_with_a_timeout_that_says_so(
    push: PushEndpoint, backend_conn: str, sagemaker_async_backend: LocalSageMakerAsyncBackend
) -> None:
    queue_url = push.new_queue()
    previous = sagemaker_async_backend.time_scale
    sagemaker_async_backend.time_scale = 0.05  # RequestTTLSeconds=60 lasts 3 s
    try:
        busy = [push.invoke(CustomAttributes="sleep=8") for _ in range(20)]  # every slot taken
        answer = push.invoke(RequestTTLSeconds=60)
    finally:
        sagemaker_async_backend.time_scale = previous

    event, seconds = await run_trigger(trigger_for(answer, queue_url))

    assert event["status"] == "TimedOut"
    assert event["expired"] is True
    assert seconds < 20, "ended on the notification, not at the deadline an hour away"
    message = str(timeout_error(event))
    assert "expired in SageMaker's queue" in message
    assert "RequestTTLSeconds" in message
    assert answer["InferenceId"] in message
    assert len(busy) == 20


# --- notifications published by the test itself: duplicates, delays, losses, lies ---------------------------


@pytest.fixture
def bare_queue(sagemaker_async_backend: LocalSageMakerAsyncBackend) -> str:
    """A queue no topic publishes to: the test sends the notifications itself."""
    url: str = sagemaker_async_backend.client("sqs").create_queue(QueueName=f"bare-{uuid.uuid4().hex[:10]}")["QueueUrl"]
    return url


def notification_body(inference_id: str, output_location: str, *, status: str = "Completed") -> str:
    message = {
        "awsRegion": "us-east-1",
        "eventTime": "2026-11-22T10:00:01.608Z",
        "receivedTime": "2026-11-22T10:00:00.455Z",
        "invocationStatus": status,
        "requestParameters": {"endpointName": "push-iris", "contentType": "text/csv"},
        "responseParameters": {"contentType": "application/json", "outputLocation": output_location},
        "inferenceId": inference_id,
        "eventVersion": "1.0",
        "eventSource": "aws:sagemaker",
        "eventName": "InferenceResult",
    }
    return json.dumps({"Type": "Notification", "MessageId": str(uuid.uuid4()), "Message": json.dumps(message)})


def manual_answer(bucket: str) -> dict[str, Any]:
    name = uuid.uuid4().hex
    return {
        "InferenceId": f"inf-{name[:8]}",
        "OutputLocation": f"s3://{bucket}/out/{name}.out",
        "FailureLocation": f"s3://{bucket}/fail/{name}-error.out",
    }


def key_of(location: str) -> str:
    return location.split("/", 3)[3]


def queue_depth(sqs: Any, queue_url: str) -> int:
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


@pytest.mark.asyncio
async def test_duplicate_notifications_end_the_wait_once_and_are_deleted(
    sagemaker_async_backend: LocalSageMakerAsyncBackend, backend_conn: str, bare_queue: str, bucket: str, s3: Any
) -> None:
    sqs = sagemaker_async_backend.client("sqs")
    answer = manual_answer(bucket)
    task = asyncio.ensure_future(run_trigger(trigger_for(answer, bare_queue)))
    await asyncio.sleep(1)
    s3.put_object(Bucket=bucket, Key=key_of(answer["OutputLocation"]), Body=b"{}")
    body = notification_body(answer["InferenceId"], answer["OutputLocation"])
    for _ in range(3):
        sqs.send_message(QueueUrl=bare_queue, MessageBody=body)

    event, seconds = await task

    assert event["status"] == "Completed"
    assert seconds < 15


@pytest.mark.asyncio
async def test_delayed_notification_still_wakes_the_wait(
    sagemaker_async_backend: LocalSageMakerAsyncBackend, backend_conn: str, bare_queue: str, bucket: str, s3: Any
) -> None:
    sqs = sagemaker_async_backend.client("sqs")
    answer = manual_answer(bucket)
    task = asyncio.ensure_future(run_trigger(trigger_for(answer, bare_queue)))
    await asyncio.sleep(0.5)
    s3.put_object(Bucket=bucket, Key=key_of(answer["OutputLocation"]), Body=b"{}")
    sqs.send_message(
        QueueUrl=bare_queue,
        MessageBody=notification_body(answer["InferenceId"], answer["OutputLocation"]),
        DelaySeconds=3,
    )

    event, seconds = await task

    assert event["status"] == "Completed"
    assert 3 < seconds < 20


@pytest.mark.asyncio
async def test_dropped_notification_costs_latency_only_safety_polling_finds_the_result(
    sagemaker_async_backend: LocalSageMakerAsyncBackend, backend_conn: str, bare_queue: str, bucket: str, s3: Any
) -> None:
    answer = manual_answer(bucket)
    task = asyncio.ensure_future(run_trigger(trigger_for(answer, bare_queue, poll_interval=1.0, max_poll_interval=2.0)))
    await asyncio.sleep(0.5)
    s3.put_object(Bucket=bucket, Key=key_of(answer["OutputLocation"]), Body=b"{}")  # and no notification

    event, _ = await task

    assert event["status"] == "Completed"


@pytest.mark.asyncio
async def test_with_a_healthy_queue_each_safety_check_heads_one_location_in_turn_and_finds_a_lost_failure(
    sagemaker_async_backend: LocalSageMakerAsyncBackend,
    bare_queue: str,
    bucket: str,
    s3: Any,
    s3_proxy: Any,
    aws_connection: Any,
) -> None:
    aws_connection(s3_proxy.url)
    answer = manual_answer(bucket)
    output, failure = (f"/{bucket}/{key_of(answer[k])}" for k in ("OutputLocation", "FailureLocation"))
    task = asyncio.ensure_future(run_trigger(trigger_for(answer, bare_queue, poll_interval=0.3, max_poll_interval=0.3)))
    for _ in range(300):  # the first check (both locations) and four safety checks, however loaded the machine
        if len(s3_proxy.requests("HEAD")) >= 6:
            break
        await asyncio.sleep(0.1)
    assert not task.done()
    await asyncio.to_thread(s3.put_object, Bucket=bucket, Key=key_of(answer["FailureLocation"]), Body=b"{}")

    event, _ = await task  # no notification: it was lost

    paths = [request.path for request in s3_proxy.requests("HEAD")]
    assert event["status"] == "Failed"
    assert paths[:2] == [output, failure], "the first check looks at both"
    assert all(a != b for a, b in itertools.pairwise(paths[2:])), f"safety checks alternate: {paths}"
    assert event["checks"] == len(paths) - 1


@pytest.mark.asyncio
async def test_notification_for_an_object_not_there_yet_is_no_success(
    sagemaker_async_backend: LocalSageMakerAsyncBackend, backend_conn: str, bare_queue: str, bucket: str, s3: Any
) -> None:
    sqs = sagemaker_async_backend.client("sqs")
    answer = manual_answer(bucket)
    body = notification_body(answer["InferenceId"], answer["OutputLocation"])
    task = asyncio.ensure_future(run_trigger(trigger_for(answer, bare_queue)))
    await asyncio.sleep(0.5)
    sqs.send_message(QueueUrl=bare_queue, MessageBody=body)  # before the object: reordered, or a lie
    await asyncio.sleep(2)
    assert not task.done(), "a message is a hint: S3 has no object, the wait goes on"
    s3.put_object(Bucket=bucket, Key=key_of(answer["OutputLocation"]), Body=b"{}")
    sqs.send_message(QueueUrl=bare_queue, MessageBody=body)

    event, _ = await task

    assert event["status"] == "Completed"
    assert event["checks"] == 3, "start, the early hint (no object), the second hint"


@pytest.mark.asyncio
async def test_notification_for_an_object_gone_again_is_no_success(
    sagemaker_async_backend: LocalSageMakerAsyncBackend, backend_conn: str, bare_queue: str, bucket: str, s3: Any
) -> None:
    sqs = sagemaker_async_backend.client("sqs")
    answer = manual_answer(bucket)
    key = key_of(answer["OutputLocation"])
    trigger = trigger_for(answer, bare_queue, deadline=isoformat(utcnow() + timedelta(seconds=4)))
    task = asyncio.ensure_future(run_trigger(trigger))
    await asyncio.sleep(0.5)
    s3.put_object(Bucket=bucket, Key=key, Body=b"{}")
    s3.delete_object(Bucket=bucket, Key=key)
    sqs.send_message(
        QueueUrl=bare_queue, MessageBody=notification_body(answer["InferenceId"], answer["OutputLocation"])
    )

    event, _ = await task

    assert event["status"] == "TimedOut"
    assert event["expired"] is False


@pytest.mark.asyncio
async def test_malformed_message_is_logged_once_and_the_wait_goes_on(
    sagemaker_async_backend: LocalSageMakerAsyncBackend,
    backend_conn: str,
    bare_queue: str,
    bucket: str,
    s3: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sqs = sagemaker_async_backend.client("sqs")
    answer = manual_answer(bucket)
    task = asyncio.ensure_future(run_trigger(trigger_for(answer, bare_queue)))
    await asyncio.sleep(0.5)
    with caplog.at_level(logging.WARNING, logger="airflow_sagemaker_async.receiver"):
        for _ in range(3):
            sqs.send_message(QueueUrl=bare_queue, MessageBody="<not a notification>")
        s3.put_object(Bucket=bucket, Key=key_of(answer["OutputLocation"]), Body=b"{}")
        sqs.send_message(
            QueueUrl=bare_queue, MessageBody=notification_body(answer["InferenceId"], answer["OutputLocation"])
        )
        event, seconds = await task

    assert event["status"] == "Completed"
    assert seconds < 15
    assert len([r for r in caplog.records if "not a SageMaker notification" in r.getMessage()]) == 1


@pytest.mark.asyncio
async def test_queue_deleted_mid_wait_falls_back_to_polling_with_the_same_outcome(
    sagemaker_async_backend: LocalSageMakerAsyncBackend,
    backend_conn: str,
    bare_queue: str,
    bucket: str,
    s3: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(receiver_module, "WAIT_TIME_SECONDS", 1)
    # The fallback ceiling (30 s in production) short enough for a test.
    monkeypatch.setattr("airflow_sagemaker_async.triggers.DEFAULT_MAX_POLL_INTERVAL", 1.0)
    answer = manual_answer(bucket)
    with caplog.at_level(logging.WARNING, logger="airflow_sagemaker_async.receiver"):
        task = asyncio.ensure_future(run_trigger(trigger_for(answer, bare_queue)))
        await asyncio.sleep(0.5)
        sagemaker_async_backend.client("sqs").delete_queue(QueueUrl=bare_queue)
        for _ in range(50):
            if any("Cannot receive" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0.1)
        s3.put_object(Bucket=bucket, Key=key_of(answer["OutputLocation"]), Body=b"{}")

        event, seconds = await task

    assert event["status"] == "Completed"
    assert seconds < 15, "polled again within the fallback ceiling, not an hour later"
    assert len([r for r in caplog.records if "Cannot receive" in r.getMessage()]) == 1
