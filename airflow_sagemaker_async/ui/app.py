"""
The batch progress page on the API server: ``GET /sagemaker-async/batch-progress`` (HTML) and ``.../data`` (JSON).

Both take ``dag_id``, ``run_id``, ``task_id`` and ``map_index`` (default -1) and require what the REST API requires
to read that task's XCom: a valid Airflow token (the UI's ``_token`` cookie, or ``Authorization: Bearer``) and
``GET`` on the DAG's ``XCOM`` entity through the configured auth manager (``requires_access_dag`` of
``airflow.api_fastapi.core_api.security``): no token answers 401, a bad one or no access 403. No login and no
port of its own.

The JSON is the batch's ``progress.json`` (:class:`~airflow_sagemaker_async.batch.progress.Progress`), read with
GetObject through the AWS connection the task used. Where it is and which connection come from the small XCom
pointer the batch operator pushed (key :data:`~airflow_sagemaker_async.ui.links.PROGRESS_POINTER_KEY`), never from
the request. The page (``page.html``: inline SVG, a few lines of vanilla JS, nothing fetched from elsewhere) polls
it every few seconds.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import requires_access_dag
from fastapi import Depends, FastAPI, HTTPException, Query
from fastapi.responses import HTMLResponse

from airflow_sagemaker_async.batch.progress import PROGRESS_FILE
from airflow_sagemaker_async.ui.links import PROGRESS_POINTER_KEY

__all__ = ["app", "read_pointer", "read_progress"]

app = FastAPI(title="SageMaker async batch progress", docs_url=None, redoc_url=None, openapi_url=None)

_READ_XCOM = [Depends(requires_access_dag("GET", DagAccessEntity.XCOM))]
#: How often the page asks for the JSON (milliseconds).
POLL_MILLISECONDS = 3000


def read_pointer(dag_id: str, run_id: str, task_id: str, map_index: int) -> dict[str, Any] | None:
    """Return the pointer the batch task pushed (``progress_location``, ``aws_conn_id``, ``region_name``), or None."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.execute(
            XComModel.get_many(
                key=PROGRESS_POINTER_KEY, run_id=run_id, dag_ids=dag_id, task_ids=task_id, map_indexes=map_index
            ).with_only_columns(XComModel.value)
        ).first()
    if row is None:
        return None
    value: Any = row.value
    for _ in range(2):  # the column holds JSON text (a str value once more encoded on some versions)
        if isinstance(value, (str, bytes)):
            try:
                value = json.loads(value)
            except ValueError:
                return None
    if not isinstance(value, dict):
        return None
    location = value.get("progress_location")
    if not (isinstance(location, str) and location.startswith("s3://") and location.endswith(f"/{PROGRESS_FILE}")):
        return None
    return value


def read_progress(pointer: dict[str, Any]) -> dict[str, Any]:
    """Return ``progress.json`` as a dict, read with the task's own AWS connection (GetObject; blocking)."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from botocore.exceptions import ClientError

    from airflow_sagemaker_async.common.layout import split_s3_uri

    bucket, key = split_s3_uri(pointer["progress_location"])
    hook = S3Hook(aws_conn_id=pointer.get("aws_conn_id"), region_name=pointer.get("region_name"))
    try:
        client: Any = hook.conn
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code")
        if code in {"NoSuchKey", "404", "NotFound"}:
            raise HTTPException(404, "The batch has not written its progress yet; it does within seconds.") from None
        raise HTTPException(502, f"Reading {pointer['progress_location']} failed: {code}") from None
    data: dict[str, Any] = json.loads(body)
    return data


@app.get("/batch-progress", response_class=HTMLResponse, dependencies=_READ_XCOM)
def page(
    dag_id: str = Query(), run_id: str = Query(), task_id: str = Query(), map_index: int = Query(-1)
) -> HTMLResponse:
    """Return the page: items ended over time by status, the rate, the ETA, the first failures, the manifest."""
    html = resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")
    return HTMLResponse(html.replace("__POLL_MILLISECONDS__", str(POLL_MILLISECONDS)))


@app.get("/batch-progress/data", dependencies=_READ_XCOM)
def data(
    dag_id: str = Query(), run_id: str = Query(), task_id: str = Query(), map_index: int = Query(-1)
) -> dict[str, Any]:
    """Return the task instance's ``progress.json`` and where it is; 404 while the task has not pointed to one."""
    pointer = read_pointer(dag_id, run_id, task_id, map_index)
    if pointer is None:
        raise HTTPException(404, f"No batch progress for {dag_id}.{task_id} (run {run_id}, map index {map_index}) yet.")
    progress = read_progress(pointer)
    return {"progress_location": pointer["progress_location"], "progress": progress}
