"""
The Airflow plugin that serves the batch progress page (entry point ``airflow.plugins``).

``fastapi_apps`` mounts :data:`~airflow_sagemaker_async.ui.app.app` on the API server at ``/sagemaker-async``
(Airflow 3.0+; the same port and login as the UI). ``operator_extra_links`` registers the "Batch progress" link.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

from airflow_sagemaker_async.ui.links import PLUGIN_URL_PREFIX, BatchProgressLink

__all__ = ["SageMakerAsyncPlugin"]


def _app() -> object:
    from airflow_sagemaker_async.ui.app import app

    return app


class SageMakerAsyncPlugin(AirflowPlugin):
    """Serves ``/sagemaker-async/batch-progress`` on the API server; registers the "Batch progress" link."""

    name = "sagemaker_async"
    fastapi_apps: list[Any] = [  # noqa: RUF012  # AirflowPlugin declares it a list
        {"app": _app(), "url_prefix": PLUGIN_URL_PREFIX, "name": "SageMaker async batch progress"}
    ]
    operator_extra_links: list[Any] = [BatchProgressLink()]  # noqa: RUF012
