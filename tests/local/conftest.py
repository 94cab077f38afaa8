"""Shared fixtures of the local backend's tests: one backend for the session (the plugin's own fixture,
time-scaled by 0.01 while these tests run), one iris endpoint with topics for the package."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from airflow_sagemaker_async.local import LocalEndpoint, LocalSageMakerAsyncBackend

TIME_SCALE = 0.01
ECHO_COMMAND = [sys.executable, str(Path(__file__).with_name("echo_container.py"))]
IRIS_ROW = b"5.1,3.5,1.4,0.2"


@pytest.fixture(scope="package")
def backend(sagemaker_async_backend: LocalSageMakerAsyncBackend):
    previous = sagemaker_async_backend.time_scale
    sagemaker_async_backend.time_scale = TIME_SCALE
    yield sagemaker_async_backend
    sagemaker_async_backend.time_scale = previous


class Notifications:
    """Reads a queue subscribed to an endpoint's topics, keeping messages other tests did not ask for yet."""

    def __init__(self, backend: LocalSageMakerAsyncBackend, queue_url: str) -> None:
        self._backend = backend
        self._queue_url = queue_url
        self._seen: list[dict] = []

    def wait_for(self, inference_id: str, timeout: float = 10.0) -> dict:
        return self.wait_matching(lambda m: m.get("inferenceId") == inference_id, timeout)

    def wait_matching(self, predicate, timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for message in self._seen:
                if predicate(message):
                    self._seen.remove(message)
                    return message
            if time.monotonic() > deadline:
                raise AssertionError(f"no matching notification within {timeout} s; seen: {self._seen}")
            self._seen += self._backend.receive_notifications(self._queue_url, count=1, timeout=0.2, event_name=None)


@dataclass
class NotifiedEndpoint:
    endpoint: LocalEndpoint
    notifications: Notifications

    @property
    def name(self) -> str:
        return self.endpoint.endpoint_name


def create_notified_endpoint(backend: LocalSageMakerAsyncBackend, name: str, **kwargs) -> NotifiedEndpoint:
    sns = backend.client("sns")
    success = sns.create_topic(Name=f"{name}-success")["TopicArn"]
    error = sns.create_topic(Name=f"{name}-error")["TopicArn"]
    queue_url = backend.subscribe_queue(f"{name}-notifications", [success, error])
    endpoint = backend.create_endpoint(name, success_topic_arn=success, error_topic_arn=error, **kwargs)
    return NotifiedEndpoint(endpoint, Notifications(backend, queue_url))


@pytest.fixture(scope="package")
def iris(backend: LocalSageMakerAsyncBackend) -> NotifiedEndpoint:
    """``local-iris``: iris model, 4 concurrent invocations, topics, response included in success messages."""
    return create_notified_endpoint(backend, "local-iris", include_inference_response_in=["SUCCESS_NOTIFICATION_TOPIC"])


def read_object(backend: LocalSageMakerAsyncBackend, location: str) -> tuple[bytes, str]:
    bucket, key = location.removeprefix("s3://").split("/", 1)
    answer = backend.client("s3").get_object(Bucket=bucket, Key=key)
    return answer["Body"].read(), answer["ContentType"]


def object_exists(backend: LocalSageMakerAsyncBackend, location: str) -> bool:
    bucket, key = location.removeprefix("s3://").split("/", 1)
    s3 = backend.client("s3")
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except s3.exceptions.ClientError as error:
        if error.response["Error"]["Code"] in ("404", "NoSuchKey"):
            return False
        raise
    return True


def record(backend: LocalSageMakerAsyncBackend, endpoint_name: str, inference_id: str):
    matches = [r for r in backend.invocations(endpoint_name) if r.inference_id == inference_id]
    assert len(matches) == 1, matches
    return matches[0]


def wait_final(backend: LocalSageMakerAsyncBackend, endpoint_name: str, inference_id: str, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while True:
        current = record(backend, endpoint_name, inference_id)
        if current.status.is_final and current.notified:
            return current
        if time.monotonic() > deadline:
            raise AssertionError(f"{inference_id} still {current.status} after {timeout} s")
        time.sleep(0.02)
