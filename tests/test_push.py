"""
Push completion against the local backend: SageMaker's SNS notifications through a real SQS queue (moto on
127.0.0.1) wake the trigger; S3 stays the truth; the queue never fails a wait.

Most waits here poll S3 once an hour (``poll_interval`` 3600): a wait that ends within seconds was woken
by a notification, not by polling.
"""

from __future__ import annotations

import asyncio
import contextlib
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

from airflow_sagemaker_async.common.exceptions import SageMakerAsyncParameterError
from airflow_sagemaker_async.common.outcome import timeout_error
from airflow_sagemaker_async.common.watch import isoformat, utcnow
from airflow_sagemaker_async.inference.operators import SageMakerInvokeEndpointAsyncOperator
from airflow_sagemaker_async.inference.sensors import SageMakerAsyncInferenceSensor
from airflow_sagemaker_async.inference.triggers import SageMakerAsyncInferenceTrigger
from airflow_sagemaker_async.push import receiver as receiver_module
from airflow_sagemaker_async.push.receiver import shared_receivers

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_sagemaker_async.local import LocalSageMakerAsyncBackend

IRIS_ROW = b"5.1,3.5,1.4,0.2"
HOUR = 3600.0
HOURLY = {"poll_interval": HOUR, "max_poll_interval": HOUR}
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


@contextlib.contextmanager
def push_waiters(count: int, backend: LocalSageMakerAsyncBackend) -> Iterator[list[subprocess.Popen[str]]]:
    """
    Start ``count`` triggerer-like processes (``tests.push_waiter``), pipes to their stdin and stdout.

    On leaving, also when the test failed half-way: each one still running is killed, then reaped and its pipes
    closed. A waiter only killed would be reported later (``ResourceWarning``: "subprocess ... is still running",
    unclosed pipes), an error under ``filterwarnings = error``, by whichever test the garbage collector happened
    to run in (seen in MWAA 3.2.1's set, where the 2-process test fails early by design).
    """
    env = {**os.environ, "AIRFLOW_CONN_AWS_DEFAULT": backend.airflow_connection_env()}
    with contextlib.ExitStack() as stack:
        workers = []
        for _ in range(count):
            worker = stack.enter_context(
                subprocess.Popen(
                    [sys.executable, "-m", "tests.push_waiter"],
                    cwd=REPO,
                    env=env,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
            stack.callback(_kill_if_running, worker)  # runs first: Popen's own exit then closes and waits
            workers.append(worker)
        yield workers


def _kill_if_running(worker: subprocess.Popen[str]) -> None:
    if worker.poll() is None:
        worker.kill()


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
    push: PushEndpoint, proxied: Any, raw: bool, tmp_path: Path
) -> None:
    queue_url = push.new_queue(raw=raw)
    release = tmp_path / "release"
    # The model answers only once the trigger has made its first check (seen at the proxy), however loaded
    # the machine: a model that answered first would be found by that check, not by the notification.
    answer = push.invoke(CustomAttributes=f"wait_for={release}")
    task = asyncio.ensure_future(run_trigger(trigger_for(answer, queue_url)))
    await until(lambda: first_check_done(proxied), "the first check")
    release.touch()

    event, seconds = await task

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
    with push_waiters(2, sagemaker_async_backend) as workers:
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
    sagemaker_async_backend: LocalSageMakerAsyncBackend, proxied: Any, bare_queue: str, bucket: str, s3: Any
) -> None:
    sqs = sagemaker_async_backend.client("sqs")
    answer = manual_answer(bucket)
    task = asyncio.ensure_future(run_trigger(trigger_for(answer, bare_queue)))
    # The result appears only after the trigger's first check (seen at the proxy), however loaded the machine.
    await until(lambda: first_check_done(proxied), "the first check")
    s3.put_object(Bucket=bucket, Key=key_of(answer["OutputLocation"]), Body=b"{}")
    body = notification_body(answer["InferenceId"], answer["OutputLocation"])
    for _ in range(3):
        sqs.send_message(QueueUrl=bare_queue, MessageBody=body)

    event, seconds = await task

    assert event["status"] == "Completed"
    assert event["checks"] == 2, "one HEAD at the start, one to confirm the notification"
    assert seconds < 15


@pytest.mark.asyncio
async def test_delayed_notification_still_wakes_the_wait(
    sagemaker_async_backend: LocalSageMakerAsyncBackend, proxied: Any, bare_queue: str, bucket: str, s3: Any
) -> None:
    sqs = sagemaker_async_backend.client("sqs")
    answer = manual_answer(bucket)
    task = asyncio.ensure_future(run_trigger(trigger_for(answer, bare_queue)))
    # Before: a fixed 0.5 s, after which a trigger slow to start (a loaded machine) found the result by its first
    # check (0.65 s, "Completed after 1 checks"), not by the delayed notification.
    await until(lambda: first_check_done(proxied), "the first check")
    s3.put_object(Bucket=bucket, Key=key_of(answer["OutputLocation"]), Body=b"{}")
    sqs.send_message(
        QueueUrl=bare_queue,
        MessageBody=notification_body(answer["InferenceId"], answer["OutputLocation"]),
        DelaySeconds=3,
    )

    event, seconds = await task

    assert event["status"] == "Completed"
    assert event["checks"] == 2, "one HEAD at the start, one to confirm the notification"
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
    # The first check (both locations) and four safety checks, however loaded the machine.
    await until(lambda: len(s3_proxy.requests("HEAD")) >= 6, "six HEADs", timeout=30)
    assert not task.done()
    await asyncio.to_thread(s3.put_object, Bucket=bucket, Key=key_of(answer["FailureLocation"]), Body=b"{}")

    event, _ = await task  # no notification: it was lost

    paths = [request.path for request in s3_proxy.requests("HEAD")]
    assert event["status"] == "Failed"
    assert paths[:2] == [output, failure], "the first check looks at both"
    assert all(a != b for a, b in itertools.pairwise(paths[2:])), f"safety checks alternate: {paths}"
    assert event["checks"] == len(paths) - 1


@pytest.mark.asyncio
async def test_the_last_check_at_the_deadline_looks_at_both_locations_not_one(
    sagemaker_async_backend: LocalSageMakerAsyncBackend,
    bare_queue: str,
    bucket: str,
    s3: Any,
    s3_proxy: Any,
    aws_connection: Any,
) -> None:
    aws_connection(s3_proxy.url)
    answer = manual_answer(bucket)
    deadline = isoformat(utcnow() + timedelta(seconds=8))
    trigger = trigger_for(answer, bare_queue, poll_interval=HOUR, max_poll_interval=HOUR, deadline=deadline)
    task = asyncio.ensure_future(run_trigger(trigger, timeout=60))
    await until(lambda: first_check_done(s3_proxy), "the first check (both locations)", timeout=30)
    # A failure lands after the first check; no notification comes. The next check is the one at the deadline,
    # and a safety check (one location: the output first) would miss it.
    await asyncio.to_thread(s3.put_object, Bucket=bucket, Key=key_of(answer["FailureLocation"]), Body=b"{}")

    event, _ = await task

    assert event["status"] == "Failed", event


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
    # However late a loaded machine starts the receiver, the hint is read (and checked) before the object lands.
    await until(lambda: received() >= 1, "the receiver reading the early hint", timeout=30)
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
    malformed_lines = lambda: [r for r in caplog.records if "not a SageMaker notification" in r.getMessage()]  # noqa: E731
    task = asyncio.ensure_future(run_trigger(trigger_for(answer, bare_queue)))
    await asyncio.sleep(0.5)
    with caplog.at_level(logging.WARNING, logger="airflow_sagemaker_async.push.receiver"):
        for _ in range(3):
            sqs.send_message(QueueUrl=bare_queue, MessageBody="<not a notification>")
        # The output lands only once the receiver has read the bad messages: on a loaded machine its first receive
        # can come after the trigger's own check, which would then find the output and end the wait unread.
        await until(lambda: task.done() or malformed_lines(), "the receiver reading the malformed messages", timeout=20)
        assert not task.done(), task.result()
        landed = time.monotonic()
        s3.put_object(Bucket=bucket, Key=key_of(answer["OutputLocation"]), Body=b"{}")
        sqs.send_message(
            QueueUrl=bare_queue, MessageBody=notification_body(answer["InferenceId"], answer["OutputLocation"])
        )
        event, _ = await task

    assert event["status"] == "Completed"
    assert time.monotonic() - landed < 15, "ended by a poll, not by the notification"
    assert len(malformed_lines()) == 1


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
    monkeypatch.setattr("airflow_sagemaker_async.inference.triggers.DEFAULT_MAX_POLL_INTERVAL", 1.0)
    answer = manual_answer(bucket)
    with caplog.at_level(logging.WARNING, logger="airflow_sagemaker_async.push.receiver"):
        task = asyncio.ensure_future(run_trigger(trigger_for(answer, bare_queue)))
        await asyncio.sleep(0.5)
        sagemaker_async_backend.client("sqs").delete_queue(QueueUrl=bare_queue)
        await until(lambda: any("Cannot receive" in r.getMessage() for r in caplog.records), "the receive error")
        landed = time.monotonic()
        s3.put_object(Bucket=bucket, Key=key_of(answer["OutputLocation"]), Body=b"{}")

        event, _ = await task

    assert event["status"] == "Completed"
    assert time.monotonic() - landed < 15, "polled again within the fallback ceiling, not an hour later"
    assert len([r for r in caplog.records if "Cannot receive" in r.getMessage()]) == 1


# --- AWS's documented shapes, published by hand with plain boto3 (issue 18, A-D) ---------------------------


def aws_message(status: str, inference_id: str, *, output_location: str | None = None, age: float = 0) -> dict:
    """
    A notification in the exact shape of AWS's developer guide ("Check prediction results").

    Completed: ``responseParameters.outputLocation``. Failed: ``failureReason``, ``requestParameters`` and
    ``inferenceId``, **no** ``responseParameters`` and no failure location. Expired: no location either.
    ``age``: seconds before now of ``eventTime`` / ``receivedTime``.
    """
    moment = (utcnow() - timedelta(seconds=age)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    message: dict[str, Any] = {
        "awsRegion": "us-east-1",
        "eventTime": moment,
        "receivedTime": moment,
        "invocationStatus": status,
        "requestParameters": {
            "contentType": "text/csv",
            "endpointName": "push-iris",
            "inputLocation": "s3://bucket/inputs/payload.csv",
        },
        "inferenceId": inference_id,
        "eventVersion": "1.0",
        "eventSource": "aws:sagemaker",
        "eventName": "InferenceResult",
    }
    if status == "Completed":
        message["responseParameters"] = {"contentType": "text/csv; charset=utf-8", "outputLocation": output_location}
    elif status == "Failed":
        message["failureReason"] = (
            "ClientError: Received server error (500) from model. See the SageMaker Endpoint logs in your account "
            "for more information."
        )
    else:
        message["failureReason"] = "InternalServerError: Request expired in queue."
    return message


class HandPublisher:
    """An SNS topic and a queue subscribed to it (raw delivery or SNS's envelope): nothing of the backend's."""

    def __init__(self, backend: LocalSageMakerAsyncBackend, *, raw: bool) -> None:
        self.sns, self.sqs = backend.client("sns"), backend.client("sqs")
        name = f"hand-{uuid.uuid4().hex[:10]}"
        self.topic = self.sns.create_topic(Name=name)["TopicArn"]
        self.queue_url = self.sqs.create_queue(QueueName=name)["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])["Attributes"]
        attributes = {"RawMessageDelivery": "true"} if raw else {}
        self.sns.subscribe(TopicArn=self.topic, Protocol="sqs", Endpoint=arn["QueueArn"], Attributes=attributes)

    def publish(self, message: dict) -> None:
        self.sns.publish(TopicArn=self.topic, Message=json.dumps(message))


async def until(condition: Any, what: str, timeout: float = 60) -> None:
    """Wait for ``condition()`` (polled every 0.1 s), however loaded the machine."""
    for _ in range(int(timeout * 10)):
        if condition():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def received() -> int:
    """Messages the running loop's notification receivers have received so far."""
    return sum(receiver.received for receiver in shared_receivers.open_resources())


def first_check_done(proxy: Any) -> bool:
    """The single trigger's first check HEADs both locations."""
    return len(proxy.requests("HEAD")) >= 2


@pytest.fixture
def proxied(s3_proxy: Any, aws_connection: Any) -> Any:
    """The AWS connection through a recording proxy in front of the backend's moto, to see the first check."""
    aws_connection(s3_proxy.url)
    return s3_proxy


@pytest.fixture(params=[False, True], ids=["sns-envelope", "raw-delivery"])
def hand(request: pytest.FixtureRequest, sagemaker_async_backend: LocalSageMakerAsyncBackend) -> HandPublisher:
    return HandPublisher(sagemaker_async_backend, raw=request.param)


@pytest.mark.asyncio
@pytest.mark.parametrize("status", ["Completed", "Failed"])
async def test_aws_documented_message_published_by_hand_wakes_a_single_wait(
    hand: HandPublisher, proxied: Any, bucket: str, s3: Any, status: str
) -> None:
    answer = manual_answer(bucket)
    location = answer["OutputLocation"] if status == "Completed" else answer["FailureLocation"]
    task = asyncio.ensure_future(run_trigger(trigger_for(answer, hand.queue_url)))
    await until(lambda: first_check_done(proxied), "the first check")
    await asyncio.to_thread(s3.put_object, Bucket=bucket, Key=key_of(location), Body=b"{}")
    await asyncio.to_thread(hand.publish, aws_message(status, answer["InferenceId"], output_location=location))

    event, seconds = await task

    # Before (Failed): parsed as malformed ("without outputLocation or failureLocation"), so only the hourly
    # poll could have found the failure object.
    assert event["status"] == status
    assert event["location"] == location
    assert seconds < 20, "the next poll was an hour away: the notification woke it"


@pytest.mark.parametrize("status", ["Completed", "Failed"])
def test_aws_documented_message_published_by_hand_wakes_a_batch(
    hand: HandPublisher, proxied: Any, bucket: str, s3: Any, status: str
) -> None:
    from airflow_sagemaker_async.batch.core import BatchNames, BatchState, PendingItem, batch_tag
    from airflow_sagemaker_async.batch.triggers import SageMakerAsyncBatchInferenceTrigger

    tag = batch_tag("hand_dag", "score", uuid.uuid4().hex)
    names = BatchNames.of(tag, "hand_dag", "score", f"s3://{bucket}/out/airflow-batch/{tag}", f"s3://{bucket}/fail")
    deadline = isoformat(utcnow() + timedelta(hours=1))
    items = [
        PendingItem(
            index=index,
            inference_id=names.inference_id(index),
            input_location=None,
            output_location=names.output_location(index),
            failure_location=f"{names.failure_dir}/{names.filename(index)}-error.out",
            submitted_at=isoformat(utcnow()),
            deadline=deadline,
        )
        for index in range(2)
    ]
    state = BatchState(tag, "push-iris", 2, names.output_dir, names.failure_dir, isoformat(utcnow()), 2, items)
    s3.put_object(Bucket=bucket, Key=key_of(names.state_location()), Body=state.to_json().encode())
    s3.put_object(Bucket=bucket, Key=key_of(items[0].output_location), Body=b"{}")  # item 0 ended already
    trigger = SageMakerAsyncBatchInferenceTrigger(
        batch_tag=tag,
        state_location=names.state_location(),
        output_dir=names.output_dir,
        failure_dir=names.failure_dir,
        low_water=0,
        poll_interval=HOUR,
        max_poll_interval=HOUR,
        notification_queue_url=hand.queue_url,
    )
    last = items[1]
    location = last.output_location if status == "Completed" else last.failure_location
    assert location is not None

    async def scenario() -> tuple[dict[str, Any], float]:
        task = asyncio.ensure_future(run_batch_trigger(trigger))
        # The first check (a LIST per directory) ends item 0; item 1 is still in flight.
        lists = lambda: [seen for seen in proxied.requests("GET") if "list-type=2" in seen.query]  # noqa: E731
        await until(lambda: len(lists()) >= 2, "the first check's LISTs")
        await asyncio.sleep(0.2)
        assert not task.done()
        await asyncio.to_thread(s3.put_object, Bucket=bucket, Key=key_of(location), Body=b"{}")
        await asyncio.to_thread(hand.publish, aws_message(status, last.inference_id, output_location=location))
        return await task

    event, seconds = asyncio.run(scenario())

    # Before (Failed): the batch routed by prefix only, and AWS's Failed message names no location.
    assert event["status"] == "LowWater"
    assert event["pending"] == 0
    assert event["checks"] == 2, "the first check, then one on the notification"
    assert seconds < 20, "the next poll was an hour away: the notification woke it"


async def run_batch_trigger(trigger: Any, timeout: float = 30) -> tuple[dict[str, Any], float]:
    started = time.monotonic()

    async def first() -> dict[str, Any]:
        events = [event.payload async for event in trigger.run()]
        assert len(events) == 1
        return events[0]

    return await asyncio.wait_for(first(), timeout), time.monotonic() - started


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "form",
    ["https://{bucket}.s3.us-east-1.amazonaws.com/{key}", "https://s3.us-east-1.amazonaws.com/{bucket}/{key}"],
    ids=["virtual-hosted", "path-style"],
)
async def test_sensor_without_inference_id_is_woken_by_an_https_output_location(
    sagemaker_async_backend: LocalSageMakerAsyncBackend,
    proxied: Any,
    bare_queue: str,
    bucket: str,
    s3: Any,
    form: str,
) -> None:
    answer = manual_answer(bucket)
    key = key_of(answer["OutputLocation"])
    # What a sensor told no inference id waits with: its id is the output object's name, not SageMaker's.
    sensor_like = {**answer, "InferenceId": answer["OutputLocation"].rsplit("/", 1)[-1]}
    task = asyncio.ensure_future(run_trigger(trigger_for(sensor_like, bare_queue, endpoint_name=None)))
    await until(lambda: first_check_done(proxied), "the first check")
    await asyncio.to_thread(s3.put_object, Bucket=bucket, Key=key, Body=b"{}")
    message = aws_message("Completed", answer["InferenceId"], output_location=form.format(bucket=bucket, key=key))
    await asyncio.to_thread(
        sagemaker_async_backend.client("sqs").send_message, QueueUrl=bare_queue, MessageBody=json.dumps(message)
    )

    event, seconds = await task

    # Before: only an exact s3:// match woke it.
    assert event["status"] == "Completed"
    assert seconds < 20, "the next poll was an hour away: the notification woke it"


@pytest.mark.asyncio
async def test_an_expired_message_400_s_old_still_ends_a_wait_whose_trigger_starts_late(
    sagemaker_async_backend: LocalSageMakerAsyncBackend,
    backend_conn: str,
    bare_queue: str,
    bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Staleness is counted from SQS's SentTimestamp (SQS's clock, on every message, whoever published it):
    # the receiver's clock runs 400 s ahead, so the message is 400 s old when it is first received.
    monkeypatch.setattr(receiver_module, "wall_clock", lambda: time.time() + 400)
    actions: list[Any] = []
    real_decide = receiver_module.decide

    def spy(parsed: Any, **kwargs: Any) -> Any:
        action = real_decide(parsed, **kwargs)
        actions.append((getattr(parsed, "status", None), action))
        return action

    monkeypatch.setattr(receiver_module, "decide", spy)
    late = manual_answer(bucket)
    other = asyncio.ensure_future(run_trigger(trigger_for(manual_answer(bucket), bare_queue), timeout=120))
    await asyncio.sleep(0.5)  # another wait's receiver runs on the queue; the late wait has not started
    message = aws_message("Expired", late["InferenceId"])
    await asyncio.to_thread(
        sagemaker_async_backend.client("sqs").send_message, QueueUrl=bare_queue, MessageBody=json.dumps(message)
    )
    for _ in range(300):
        if any(status == "Expired" for status, _ in actions):
            break
        await asyncio.sleep(0.1)
    assert actions, "the receiver saw the Expired message before the late wait started"

    # Deadline in 60 s: without the message the wait ends there, TimedOut but not expired.
    trigger = trigger_for(late, bare_queue, deadline=isoformat(utcnow() + timedelta(seconds=60)))
    event, seconds = await run_trigger(trigger, timeout=90)
    other.cancel()

    # Before: deleted as stale (older than 300 s) at its first receipt, so the late wait never learnt of it.
    assert event["status"] == "TimedOut"
    assert event["expired"] is True
    assert seconds < 45, "the kept message came back (visibility at most 20 s), long before the deadline"


def read_until(worker: subprocess.Popen[str], word: str) -> None:
    """Read a waiter's stdout (its log lines too) up to the line ``word``."""
    assert worker.stdout is not None
    for line in worker.stdout:
        if line.strip() == word:
            return
    raise AssertionError(f"the waiter exited before saying {word!r}")


@pytest.mark.parametrize("processes", [2, 4])
def test_forty_waits_shared_by_several_triggerers_have_a_bounded_latency_tail(
    sagemaker_async_backend: LocalSageMakerAsyncBackend, bucket: str, s3: Any, processes: int
) -> None:
    # Before: a message another triggerer received came back after 0, 1, 2, 4 ... 20 s (by receive count), and
    # one taken by a closing receiver's abandoned long poll after the queue's 30 s: the worst of 40 waits took
    # 38-46 s in some runs. benchmarks/push_tail.py measures the exact figures; the bounds here hold on a
    # loaded 2-core machine.
    publisher = HandPublisher(sagemaker_async_backend, raw=False)
    answers = [manual_answer(bucket) for _ in range(40)]
    published: dict[str, float] = {}
    with push_waiters(processes, sagemaker_async_backend) as workers:
        for worker in workers:
            read_until(worker, "ready")
        for index, worker in enumerate(workers):
            waits = [
                {
                    "inference_id": a["InferenceId"],
                    "output_location": a["OutputLocation"],
                    "failure_location": a["FailureLocation"],
                    "endpoint_name": "push-iris",
                }
                for a in answers[index::processes]
            ]
            assert worker.stdin is not None
            worker.stdin.write(json.dumps({"queue_url": publisher.queue_url, "waits": waits, **HOURLY}) + "\n")
            worker.stdin.flush()
        for worker in workers:
            read_until(worker, "watching")
        for answer in answers:  # results arrive over about 3 s, in an order unrelated to the processes
            time.sleep(0.075)
            s3.put_object(Bucket=bucket, Key=key_of(answer["OutputLocation"]), Body=b"{}")
            published[answer["InferenceId"]] = time.time()  # before: moto may deliver before publish returns
            publisher.publish(aws_message("Completed", answer["InferenceId"], output_location=answer["OutputLocation"]))
        outputs = [worker.communicate(timeout=120)[0] for worker in workers]
    events = [json.loads(line) for out in outputs for line in out.splitlines() if line.startswith('{"inference_id"')]
    latencies = sorted(event["at"] - published[event["inference_id"]] for event in events)

    assert len(events) == 40
    assert {event["status"] for event in events} == {"Completed"}
    assert latencies[len(latencies) // 2] < 2.0, latencies  # p50 (0.3-0.4 s measured)
    assert latencies[-1] < 10.0, latencies  # the worst of 40 (2.6 s measured at a load average of 14)
