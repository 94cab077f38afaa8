"""
Score in one DAG, report in another: the report DAG runs because the batch's scores landed (an asset).

Two DAGs:

- ``example_sagemaker_async_assets_score`` uploads a few iris flowers (one malformed) and scores them with
  :class:`~airflow_sagemaker_async.SageMakerInvokeEndpointAsyncBatchOperator`, whose ``outlets`` declare
  the asset ``SCORES``: the S3 prefix under which every batch of the endpoint writes its outputs
  (``<S3OutputPath>/airflow-batch``). When the batch succeeds, Airflow records an asset event, and the
  operator puts the batch's figures in its ``extra``: counts by status, the manifest location, the batch's
  output prefix and tag.
- ``example_sagemaker_async_assets_report`` is scheduled on ``SCORES``: no sensor, no ``ExternalTaskSensor``,
  it runs when an event of the asset is recorded. ``report`` reads the event that started it
  (``triggering_asset_events``), logs the counts and the first manifest lines, and returns them.

The asset is declared when the DAGs are parsed (the scheduler must know whom an event starts); the
operator fills the ``extra`` of each S3 asset of its ``outlets`` that covers what it wrote. An asset that is
not ``s3://`` on a SageMaker operator is a parameter error at parse time. See ``docs/how-to/assets.md``.

By default it calls ``iris-endpoint`` of the local backend, whose S3OutputPath is
``s3://sagemaker-async-local/iris-endpoint/output``. Override with the environment variables
``SAGEMAKER_ASYNC_ENDPOINT`` / ``SAGEMAKER_ASYNC_BUCKET`` and ``SAGEMAKER_ASYNC_SCORES_ASSET`` (the asset URI;
all read when the DAGs are parsed). Connection: ``aws_default``.
"""

from __future__ import annotations

import json
import logging
import os
import re
from typing import Any

from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.sdk import DAG, get_current_context, task

from airflow_sagemaker_async import SageMakerInvokeEndpointAsyncBatchOperator, sagemaker_output_asset

log = logging.getLogger(__name__)

ENDPOINT_NAME = os.environ.get("SAGEMAKER_ASYNC_ENDPOINT", "iris-endpoint")
BUCKET = os.environ.get("SAGEMAKER_ASYNC_BUCKET", "sagemaker-async-local")
#: Where every batch of the endpoint writes (the batch operator's default: <S3OutputPath>/airflow-batch/<tag>).
SCORES = sagemaker_output_asset(
    os.environ.get("SAGEMAKER_ASYNC_SCORES_ASSET", f"s3://{BUCKET}/{ENDPOINT_NAME}/output/airflow-batch"),
    name="iris_scores",
)
FLOWERS = ["5.1,3.5,1.4,0.2\n", "7.0,3.2,4.7,1.4\n", "6.3,3.3,6.0,2.5\n", "4.9,3.0,1.4,0.2\n", "5.8,2.7,5.1,1.9\n"]
#: Three numbers where the iris model needs four: the model answers 400, SageMaker writes a failure object.
MALFORMED = "5.1,3.5,1.4\n"

with DAG(
    dag_id="example_sagemaker_async_assets_score",
    description="Score a batch; its asset event (counts, manifest) starts the report DAG",
    doc_md=__doc__,
    schedule=None,
    catchup=False,
    tags=["example", "sagemaker-async", "assets"],
):

    @task
    def upload_inputs() -> list[str]:
        """Upload five flowers and a malformed row, one object each; return their S3 URIs."""
        run_part = re.sub(r"[^A-Za-z0-9_.-]+", "-", get_current_context()["run_id"])
        s3, locations = S3Hook(aws_conn_id="aws_default"), []
        for index, body in enumerate([*FLOWERS, MALFORMED]):
            key = f"example_sagemaker_async_assets/{run_part}/inputs/{index:02d}.csv"
            s3.load_string(body, key=key, bucket_name=BUCKET, replace=True)
            locations.append(f"s3://{BUCKET}/{key}")
        return locations

    SageMakerInvokeEndpointAsyncBatchOperator(
        task_id="score",
        aws_conn_id="aws_default",
        endpoint_name=ENDPOINT_NAME,
        input_locations=upload_inputs(),
        content_type="text/csv",
        max_failed_items=1,  # the malformed row
        outlets=[SCORES],
    )

with DAG(
    dag_id="example_sagemaker_async_assets_report",
    description="Runs when a batch's scores land; reads the counts from the triggering asset event",
    doc_md=__doc__,
    schedule=[SCORES],
    catchup=False,
    tags=["example", "sagemaker-async", "assets"],
):

    @task
    def report(triggering_asset_events: Any = None) -> dict[str, Any]:
        """Read the batch's figures from the asset event that started this run; log the first manifest lines."""
        event = triggering_asset_events[SCORES][-1]
        extra = dict(event.extra)
        log.info("Started by %s's batch %s: %s", event.source_dag_id, extra["batch_tag"], extra["counts"])
        bucket, key = S3Hook.parse_s3_url(extra["manifest_location"])
        manifest = S3Hook(aws_conn_id="aws_default").read_key(key, bucket_name=bucket)
        for line in manifest.splitlines()[:3]:
            item = json.loads(line)
            log.info("item %d: %s %s", item["item"], item["status"], item.get("output_location"))
        return {
            "source_dag_id": event.source_dag_id,
            "source_run_id": event.source_run_id,
            "batch_tag": extra["batch_tag"],
            "counts": extra["counts"],
            "manifest_location": extra["manifest_location"],
            "manifest_lines": len(manifest.splitlines()),
        }

    report()
