"""
The soak's DAG (``tests/soak/soak.py``): one large batch with push, and a small batch whose requests expire.

Everything comes from the JSON file named by ``SAGEMAKER_ASYNC_SOAK_CONFIG`` (read at parse time; the DAG parses
without it, with an empty configuration, so that a DagBag import check passes):

- ``records_file``: a JSON list of rows for the soak's container (``tests/soak/sleepy_container.py``), read by
  the ``records`` task (so that the serialized DAG stays small; the rows travel as its XCom);
- ``endpoint_name``, ``expire_endpoint_name``, ``notification_queue_url``, ``max_wait_seconds``,
  ``max_in_flight``, ``retry_delay_seconds``, ``expire_records``, ``expire_max_wait_seconds``.

``score`` has ``retries=2`` (the soak kills its worker once); both batches tolerate any failure
(``max_failed_fraction=1``): the soak checks each line against the backend, not the failure policy.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, task

from airflow_sagemaker_async.batch.operators import SageMakerInvokeEndpointAsyncBatchOperator

_path = os.environ.get("SAGEMAKER_ASYNC_SOAK_CONFIG")
CONFIG: dict[str, Any] = json.loads(open(_path).read()) if _path and os.path.exists(_path) else {}  # noqa: SIM115

with DAG(dag_id="sagemaker_async_soak", schedule=None, catchup=False, tags=["soak"], max_active_runs=1):

    @task
    def records() -> list[dict[str, Any]]:
        """Return the rows of the big batch (from ``records_file``)."""
        with open(CONFIG["records_file"]) as rows:
            return list(json.load(rows))

    SageMakerInvokeEndpointAsyncBatchOperator(
        task_id="score",
        endpoint_name=CONFIG.get("endpoint_name", "soak-main"),
        input_records=records(),
        content_type="application/json",
        notification_queue_url=CONFIG.get("notification_queue_url"),
        max_wait_seconds=CONFIG.get("max_wait_seconds", 600),
        max_in_flight=CONFIG.get("max_in_flight", 1000),
        max_failed_fraction=1.0,
        retries=2,
        retry_delay=timedelta(seconds=CONFIG.get("retry_delay_seconds", 5)),
    )
    SageMakerInvokeEndpointAsyncBatchOperator(
        task_id="expire",
        endpoint_name=CONFIG.get("expire_endpoint_name", "soak-expire"),
        input_records=CONFIG.get("expire_records", [{"item": 0, "sleep": 0, "features": [1, 2, 3, 4]}]),
        content_type="application/json",
        notification_queue_url=CONFIG.get("notification_queue_url"),
        request_ttl_seconds=60,
        max_wait_seconds=CONFIG.get("expire_max_wait_seconds", 90),
        max_failed_fraction=1.0,
        retries=2,
        retry_delay=timedelta(seconds=CONFIG.get("retry_delay_seconds", 5)),
    )
