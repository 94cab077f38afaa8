"""
The "Batch progress" extra link of the batch task: it opens the plugin's page of this task instance.

Airflow 3 stores an extra link in XCom (``_link_BatchProgressLink``): the API server reads it back from there. The
batch operator pushes it, and :data:`PROGRESS_POINTER_KEY`, as soon as its try knows where ``progress.json`` is, so
the link works while the batch runs (Airflow itself pushes links only once the task ends).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlencode

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk.types import TaskInstanceKey

__all__ = ["PLUGIN_URL_PREFIX", "PROGRESS_POINTER_KEY", "BatchProgressLink", "progress_page_url"]

#: Where the plugin's FastAPI app is mounted on the API server.
PLUGIN_URL_PREFIX: Final = "/sagemaker-async"
#: XCom key of the pointer the batch operator pushes: ``{"progress_location", "aws_conn_id", "region_name"}``.
PROGRESS_POINTER_KEY: Final = "sagemaker_async_progress"


def progress_page_url(dag_id: str, run_id: str, task_id: str, map_index: int) -> str:
    """
    Return the page's URL for one task instance: ``<[api] base_url>/sagemaker-async/batch-progress?dag_id=...``.

    Relative (``/sagemaker-async/...``) when ``[api] base_url`` is not set.
    """
    from airflow.configuration import conf

    base = (conf.get("api", "base_url", fallback="") or "").rstrip("/")
    query = urlencode({"dag_id": dag_id, "run_id": run_id, "task_id": task_id, "map_index": map_index})
    return f"{base}{PLUGIN_URL_PREFIX}/batch-progress?{query}"


class BatchProgressLink(BaseOperatorLink):
    """Extra link "Batch progress": the plugin page drawing this batch's ``progress.json``."""

    name = "Batch progress"

    def get_link(self, operator: Any, *, ti_key: TaskInstanceKey) -> str:
        """Return the page's URL for ``ti_key`` (see :func:`progress_page_url`)."""
        map_index = getattr(ti_key, "map_index", -1)
        return progress_page_url(ti_key.dag_id, ti_key.run_id, ti_key.task_id, -1 if map_index is None else map_index)
