"""moto's SQS with the backend's speed-ups: the same answers as moto's own code (retention, visibility, clock)."""

from __future__ import annotations

import collections
import datetime
import http.client
import json
import sys
import time
import urllib.parse
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

import pytest
from moto.core import utils as moto_utils
from moto.sqs import models as sqs_models

from airflow_sagemaker_async.local import moto_speedups

THREADS: Final = 8
CALLS: Final = 10_000


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


def test_a_long_poll_waiting_on_an_empty_queue_wakes_when_a_message_is_handed_back(
    sagemaker_async_backend: Any, sqs: Any
) -> None:
    # What several triggerers on one queue do: one hands another's message back (visibility 0) while the other
    # waits in a long poll. Real SQS delivers it to the waiting poll at once; moto's wait noticed it only at the
    # end of its wait (moto waits in steps of 1 s; here one step of 5 s, so that the difference is plain).
    url = sqs.create_queue(QueueName="speedups-handback")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="m")
    first = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0)["Messages"][0]
    queue = sqs_models.sqs_backends[sagemaker_async_backend.account_id][sagemaker_async_backend.region_name].queues[
        "speedups-handback"
    ]

    def wait() -> float:
        started = time.monotonic()
        queue.wait_for_messages(5)
        return time.monotonic() - started

    with ThreadPoolExecutor(1) as pool:
        waited = pool.submit(wait)
        time.sleep(0.5)  # the wait has begun on an empty queue
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=first["ReceiptHandle"], VisibilityTimeout=0)
        seconds = waited.result(timeout=30)

    assert seconds < 4  # woken by the hand-back, not by the end of its 5 s
    assert [m.body for m in queue.messages] == ["m"]


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


def test_concurrent_receives_and_sends_from_several_threads_never_answer_500(sagemaker_async_backend: Any) -> None:
    # moto's own SQS raises "Set changed size during iteration" inside ReceiveMessage when two receives run at
    # once (answered as a 500); real SQS never does. With VisibilityTimeout=1 the queue's pending set grows to
    # every message received, and receives take messages out of it as they come back, while the others iterate
    # it; a short thread switch interval makes the interleaving likely (without the lock: 75 answers 500 in
    # 10,000 calls, 50 s). The calls are SQS's JSON protocol over plain HTTP keep-alive connections: boto3's own
    # cost would make 10,000 calls take minutes on a loaded machine, for nothing this test is about.
    sqs = sagemaker_async_backend.client("sqs")
    queue_url = sqs.create_queue(QueueName=f"concurrency-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    for start in range(0, 500, 10):
        entries = [{"Id": str(i), "MessageBody": f"seed {i}"} for i in range(start, start + 10)]
        sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
    server = urllib.parse.urlsplit(sagemaker_async_backend.endpoint_url)
    region = sagemaker_async_backend.region_name
    answers: list[int] = []

    def work(worker: int) -> None:
        connection = http.client.HTTPConnection(server.hostname or "127.0.0.1", server.port, timeout=60)
        try:
            for index in range(CALLS // THREADS):
                if index % 2:
                    action, request = "SendMessage", {"QueueUrl": queue_url, "MessageBody": f"{worker}-{index}"}
                else:
                    action, request = (
                        "ReceiveMessage",
                        {
                            "QueueUrl": queue_url,
                            "MaxNumberOfMessages": 1,
                            "VisibilityTimeout": 0,
                        },
                    )
                connection.request(
                    "POST",
                    "/",
                    body=json.dumps(request),
                    headers={
                        "Content-Type": "application/x-amz-json-1.0",
                        "X-Amz-Target": f"AmazonSQS.{action}",
                        "Authorization": f"AWS4-HMAC-SHA256 Credential=testing/20261205/{region}/sqs/aws4_request, "
                        "SignedHeaders=host, Signature=0",
                    },
                )
                response = connection.getresponse()
                response.read()
                answers.append(response.status)
        finally:
            connection.close()

    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(0.0001)
    try:
        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(work, range(THREADS)))
    finally:
        sys.setswitchinterval(switch_interval)

    assert len(answers) == CALLS
    assert collections.Counter(answers) == {200: CALLS}
