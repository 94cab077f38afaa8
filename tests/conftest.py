"""
Shared fixtures: real servers on 127.0.0.1 (port 0) and an isolated Airflow home.

Airflow reads its configuration when first imported, so the environment is set here, at import time,
before any test module imports Airflow.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from typing import TYPE_CHECKING, Any

import pytest

_AIRFLOW_HOME = tempfile.mkdtemp(prefix="sagemaker-async-tests-airflow-")
os.environ["AIRFLOW_HOME"] = _AIRFLOW_HOME
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = os.path.join(os.path.dirname(__file__), os.pardir, "example_dags")
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_AIRFLOW_HOME}/airflow.db"
# In-process tests run the trigger themselves, with no scheduler to race: no fast-event guard, unless a
# test sets one (tests/test_waiting.py). Real-Airflow tests (tests/e2e) keep the default.
os.environ["AIRFLOW__SAGEMAKER_ASYNC__MIN_DEFERRAL_SECONDS"] = "0"
# Keep boto3 away from any real account and from the instance metadata service.
os.environ["AWS_ACCESS_KEY_ID"] = "testing"
os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
for _name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
    os.environ.pop(_name, None)

from airflow_sagemaker_async.local.topology import CeleryServers, missing_for_celery  # noqa: E402
from tests.proxy import Proxy  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


@pytest.fixture(scope="session")
def moto_url(sagemaker_async_backend: Any) -> str:
    """The moto server (S3, SNS, SQS, SageMaker control plane) of the session's local backend, on 127.0.0.1."""
    return str(sagemaker_async_backend.endpoint_url)


@pytest.fixture
def s3(moto_url: str) -> Any:
    """A boto3 S3 client talking to the moto server."""
    import boto3

    return boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")


@pytest.fixture
def bucket(s3: Any) -> str:
    """A fresh, empty bucket."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_proxy(moto_url: str) -> Iterator[Proxy]:
    """A recording, fault-injecting proxy in front of the moto server."""
    with Proxy(moto_url) as proxy:
        yield proxy


@pytest.fixture
def aws_connection(monkeypatch: pytest.MonkeyPatch) -> Callable[..., str]:
    """
    Define an Airflow AWS connection through ``AIRFLOW_CONN_<ID>`` and return its id.

    ``aws_connection(endpoint_url, runtime_url=None, conn_id="aws_default", **extra)``.
    """

    def define(endpoint_url: str, runtime_url: str | None = None, conn_id: str = "aws_default", **extra: Any) -> str:
        extras: dict[str, Any] = {"region_name": "us-east-1", "endpoint_url": endpoint_url, **extra}
        if runtime_url:
            extras["service_config"] = {"sagemaker-runtime": {"endpoint_url": runtime_url}}
        value = {"conn_type": "aws", "login": "testing", "password": "testing", "extra": extras}
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(value))
        return conn_id

    return define


@pytest.fixture(scope="session")
def endpoints(sagemaker_async_backend: Any) -> dict[str, Any]:
    """Two iris endpoints on the local backend: ``op-iris`` (with S3FailurePath) and ``op-iris-nofail`` (without)."""
    return {
        "op-iris": sagemaker_async_backend.create_endpoint("op-iris"),
        "op-iris-nofail": sagemaker_async_backend.create_endpoint("op-iris-nofail", s3_failure_path=None),
    }


@pytest.fixture
def runtime_proxy(sagemaker_async_backend: Any) -> Iterator[Proxy]:
    """A recording, fault-injecting proxy in front of the local sagemaker-runtime."""
    with Proxy(sagemaker_async_backend.runtime_url) as proxy:
        yield proxy


@pytest.fixture
def backend_connection(sagemaker_async_backend: Any, runtime_proxy: Proxy, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point ``aws_default`` at the local backend, its runtime reached through ``runtime_proxy``."""
    connection = sagemaker_async_backend.airflow_connection()
    connection["extra"]["service_config"]["sagemaker-runtime"]["endpoint_url"] = runtime_proxy.url
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(connection))
    return "aws_default"


def require_celery_topology() -> None:
    """Skip the calling test when the Celery topology cannot run here, with the one-line reason; fail under CI=true.

    What it needs: Debian's ``postgresql`` and ``redis-server`` (``.ci/servers``) and the ``celery`` extra.
    """
    if (missing := missing_for_celery()) is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {missing}")
        pytest.skip(missing)


@pytest.fixture(scope="module")
def celery_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CeleryServers]:
    """PostgreSQL and Redis of the Celery topology on 127.0.0.1, started once per module."""
    require_celery_topology()
    with CeleryServers(tmp_path_factory.mktemp("celery-servers")) as started:
        yield started
