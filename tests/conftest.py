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
from collections.abc import Callable, Iterator
from typing import Any

import pytest

_AIRFLOW_HOME = tempfile.mkdtemp(prefix="sagemaker-async-tests-airflow-")
os.environ["AIRFLOW_HOME"] = _AIRFLOW_HOME
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = os.path.join(os.path.dirname(__file__), os.pardir, "example_dags")
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_AIRFLOW_HOME}/airflow.db"
# Keep boto3 away from any real account and from the instance metadata service.
os.environ["AWS_ACCESS_KEY_ID"] = "testing"
os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"  # noqa: S105 - moto's fake credentials
os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
for _name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
    os.environ.pop(_name, None)

from tests.proxy import Proxy  # noqa: E402


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """A moto server (S3 and the rest) on 127.0.0.1, random port, for the whole session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


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

    def define(
        endpoint_url: str, runtime_url: str | None = None, conn_id: str = "aws_default", **extra: Any
    ) -> str:
        extras: dict[str, Any] = {"region_name": "us-east-1", "endpoint_url": endpoint_url, **extra}
        if runtime_url:
            extras["service_config"] = {"sagemaker-runtime": {"endpoint_url": runtime_url}}
        value = {"conn_type": "aws", "login": "testing", "password": "testing", "extra": extras}
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(value))
        return conn_id

    return define
