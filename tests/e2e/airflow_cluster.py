"""
What the end-to-end tests add to :mod:`airflow_sagemaker_async.local.harness`: the Airflow environment of the
example DAGs against the backend of the pytest plugin (in the test process).

The examples keep the plugin's default poll schedule; the tests speed them up from outside, as the demo does,
with ``[sagemaker_async] poll_interval`` / ``max_poll_interval`` in the environment. ``min_deferral_seconds``
keeps its real default.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from airflow_sagemaker_async.local.cli import ready_document
from airflow_sagemaker_async.local.harness import airflow_environment

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow_sagemaker_async.local.backend import LocalEndpoint, LocalSageMakerAsyncBackend

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "example_dags"
POLL_INTERVAL = 0.5
MAX_POLL_INTERVAL = 1.0


def examples_environment(
    home: Path,
    backend: LocalSageMakerAsyncBackend,
    endpoint: LocalEndpoint,
    *,
    api_port: int | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The harness's Airflow environment: the example DAGs, ``aws_default`` and ``endpoint`` of ``backend``."""
    return airflow_environment(
        home,
        ready=ready_document(backend, None),
        dags_folder=EXAMPLES_DIR,
        api_port=api_port,
        poll_interval=POLL_INTERVAL,
        max_poll_interval=MAX_POLL_INTERVAL,
        extra={"SAGEMAKER_ASYNC_ENDPOINT": endpoint.endpoint_name, **(extra or {})},
    )
