"""pytest fixtures that start the local SageMaker async backend (registered through the ``pytest11`` entry point).

Loading this plugin imports nothing heavy; the backend is imported when a fixture is first used.

Fixtures:

- ``sagemaker_async_backend`` (session): a running :class:`LocalSageMakerAsyncBackend`.
- ``sagemaker_async_backend_options`` (session): the keyword arguments it is built with; override it in
  your ``conftest.py`` to change them. Default: ``{"time_scale": <ini sagemaker_async_local_time_scale>}``.
- ``sagemaker_async_iris_endpoint`` (session): an async endpoint ``iris-endpoint`` serving the bundled iris
  model, with success and error SNS topics.
- ``sagemaker_async_airflow_conn`` (function): sets ``AIRFLOW_CONN_AWS_DEFAULT`` to the backend's connection
  for the test, and returns the connection id ``aws_default``.

.. code-block:: python

    def test_my_dag_invokes_the_model(sagemaker_async_backend, sagemaker_async_iris_endpoint):
        runtime = sagemaker_async_backend.client("sagemaker-runtime")
        runtime.invoke_endpoint_async(
            EndpointName=sagemaker_async_iris_endpoint.endpoint_name, Body=b"5.1,3.5,1.4,0.2", ContentType="text/csv"
        )
        sagemaker_async_backend.wait_idle(timeout=30)
        assert [r.status.value for r in sagemaker_async_backend.invocations("iris-endpoint")] == ["Completed"]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_sagemaker_async.local.backend import LocalEndpoint, LocalSageMakerAsyncBackend

TIME_SCALE_INI = "sagemaker_async_local_time_scale"


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register the ini option ``sagemaker_async_local_time_scale`` (default 1.0)."""
    parser.addini(
        TIME_SCALE_INI,
        "time_scale of the sagemaker_async_backend fixture: multiplies RequestTTLSeconds and "
        "InvocationTimeoutSeconds (0.01 makes a 60 s TTL last 0.6 s)",
        default="1.0",
    )


@pytest.fixture(scope="session")
def sagemaker_async_backend_options(pytestconfig: pytest.Config) -> dict[str, Any]:
    """Keyword arguments of the session's ``LocalSageMakerAsyncBackend``; override to change them."""
    return {"time_scale": float(pytestconfig.getini(TIME_SCALE_INI))}


@pytest.fixture(scope="session")
def sagemaker_async_backend(
    sagemaker_async_backend_options: dict[str, Any],
) -> Iterator[LocalSageMakerAsyncBackend]:
    """Start the local backend once per session (about 1 s) and stop it, with every container, at the end."""
    from airflow_sagemaker_async.local.backend import LocalSageMakerAsyncBackend

    with LocalSageMakerAsyncBackend(**sagemaker_async_backend_options) as backend:
        yield backend


@pytest.fixture(scope="session")
def sagemaker_async_iris_endpoint(sagemaker_async_backend: LocalSageMakerAsyncBackend) -> LocalEndpoint:
    """Create ``iris-endpoint`` (bundled iris model, topics ``iris-endpoint-success`` / ``-error``); about 2 s."""
    sns = sagemaker_async_backend.client("sns")
    return sagemaker_async_backend.create_endpoint(
        "iris-endpoint",
        success_topic_arn=sns.create_topic(Name="iris-endpoint-success")["TopicArn"],
        error_topic_arn=sns.create_topic(Name="iris-endpoint-error")["TopicArn"],
    )


@pytest.fixture
def sagemaker_async_airflow_conn(
    sagemaker_async_backend: LocalSageMakerAsyncBackend, monkeypatch: pytest.MonkeyPatch
) -> str:
    """Point Airflow's ``aws_default`` connection at the backend for one test; returns ``"aws_default"``."""
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", sagemaker_async_backend.airflow_connection_env())
    return "aws_default"
