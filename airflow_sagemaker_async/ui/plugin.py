"""
The Airflow plugin that serves the batch progress page (entry point ``airflow.plugins``).

``fastapi_apps`` mounts the page's app on the API server at ``/sagemaker-async`` (Airflow 3.0+; the same port and
login as the UI); ``operator_extra_links`` registers the "Batch progress" link. Every Airflow process loads its
plugins (scheduler, triggerer, workers), so the FastAPI app and the API server's security module (some 4 s of
imports on a loaded machine) are imported only when the API server first routes a request to it
(:class:`LazyApp`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.plugins_manager import AirflowPlugin

from airflow_sagemaker_async.ui.links import PLUGIN_URL_PREFIX, BatchProgressLink

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, MutableMapping

__all__ = ["LazyApp", "SageMakerAsyncPlugin"]


class LazyApp:
    """An ASGI app that imports :data:`airflow_sagemaker_async.ui.app.app` at its first request and hands it each."""

    def __init__(self) -> None:
        self._app: Any = None

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        """Serve one ASGI connection with the page's FastAPI app."""
        if self._app is None:
            from airflow_sagemaker_async.ui.app import app

            self._app = app
        await self._app(scope, receive, send)


class SageMakerAsyncPlugin(AirflowPlugin):
    """Serves ``/sagemaker-async/batch-progress`` on the API server; registers the "Batch progress" link."""

    name = "sagemaker_async"
    fastapi_apps: list[Any] = [  # noqa: RUF012  # AirflowPlugin declares it a list
        {"app": LazyApp(), "url_prefix": PLUGIN_URL_PREFIX, "name": "SageMaker async batch progress"}
    ]
    operator_extra_links: list[Any] = [BatchProgressLink()]  # noqa: RUF012
