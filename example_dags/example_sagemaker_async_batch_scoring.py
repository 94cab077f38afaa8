"""
Score a few hundred inputs in ONE task with the batch operator, then read its summary and manifest.

``upload_inputs`` writes 300 small CSV objects under one S3 prefix with ``S3Hook``: the measured flowers of
``data/iris_sample.csv`` beside this file, one flower per object, and every 25th object deliberately
malformed (three numbers where the model wants four). It returns the prefix.

``score`` (:class:`~airflow_sagemaker_async.batch.operators.SageMakerInvokeEndpointAsyncBatchOperator`) lists
the prefix, submits every object with InvokeEndpointAsync in waves of at most ``max_in_flight``, defers
while they run (one trigger watches the whole batch by listing its results), and returns a small summary:
counts by status and where the manifest is. The manifest (JSON lines in S3) has one line per input: its
status, output or failure location and the model's error. ``max_failed_fraction=0.1`` tolerates up to 10 %
failed items; over that the task fails, after the manifest is written.

``report`` logs the summary and the first manifest lines, and returns the counts.

Unlike ``.expand`` over the single operator (see ``example_sagemaker_async_batch``), this costs one task
instance and one trigger whatever the number of inputs, and is not limited by ``[core] max_map_length``.

By default it calls ``iris-endpoint`` of the local backend and writes to bucket ``sagemaker-async-local``.
Override with the environment variables ``SAGEMAKER_ASYNC_ENDPOINT`` / ``SAGEMAKER_ASYNC_BUCKET`` (read when
the DAG is parsed), the Airflow Variables ``sagemaker_async_endpoint`` / ``sagemaker_async_bucket`` (read when
the tasks run), or the trigger parameters ``endpoint_name`` / ``bucket``. Connection: ``aws_default``.
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.sdk import DAG, Param, Variable, get_current_context, task

from airflow_sagemaker_async import SageMakerInvokeEndpointAsyncBatchOperator

log = logging.getLogger(__name__)

ENDPOINT_NAME = os.environ.get("SAGEMAKER_ASYNC_ENDPOINT", "iris-endpoint")
BUCKET = os.environ.get("SAGEMAKER_ASYNC_BUCKET", "sagemaker-async-local")
SAMPLE_CSV = Path(__file__).parent / "data" / "iris_sample.csv"
FEATURES = ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm"]
INPUTS = 300
MALFORMED_EVERY = 25
#: Three numbers where the iris model needs four: the model answers 400, SageMaker writes a failure object.
MALFORMED_ROW = "5.1,3.5,1.4\n"
#: How many manifest lines ``report`` logs.
SHOWN_LINES = 5

with DAG(
    dag_id="example_sagemaker_async_batch_scoring",
    description="300 async SageMaker inferences in one batch task; summary in XCom, manifest in S3",
    doc_md=__doc__,
    schedule=None,
    catchup=False,
    tags=["example", "sagemaker-async"],
    params={
        "endpoint_name": Param(ENDPOINT_NAME, type="string", description="the async endpoint to call"),
        "bucket": Param(BUCKET, type="string", description="bucket the inputs are uploaded to"),
    },
    default_args={"retries": 1},
) as dag:

    @task
    def upload_inputs() -> str:
        """Upload one CSV object per flower (every 25th malformed) under a prefix of this run; return it."""
        context = get_current_context()
        bucket = Variable.get("sagemaker_async_bucket", default=context["params"]["bucket"])
        run_part = re.sub(r"[^A-Za-z0-9_.-]+", "-", context["run_id"])
        prefix = f"{context['dag'].dag_id}/{run_part}/inputs"
        with SAMPLE_CSV.open(newline="") as sample:
            rows = [",".join(row[name] for name in FEATURES) + "\n" for row in csv.DictReader(sample)]
        s3 = S3Hook(aws_conn_id="aws_default")
        for index, row in zip(range(INPUTS), itertools.cycle(rows)):
            body = MALFORMED_ROW if index % MALFORMED_EVERY == MALFORMED_EVERY - 1 else row
            s3.load_string(body, key=f"{prefix}/{index:05d}.csv", bucket_name=bucket, replace=True)
        log.info("Uploaded %d inputs under s3://%s/%s/", INPUTS, bucket, prefix)
        return f"s3://{bucket}/{prefix}/"

    score = SageMakerInvokeEndpointAsyncBatchOperator(
        task_id="score",
        aws_conn_id="aws_default",
        endpoint_name="{{ var.value.get('sagemaker_async_endpoint', params.endpoint_name) }}",
        input_prefix="{{ ti.xcom_pull(task_ids='upload_inputs') }}",
        content_type="text/csv",
        # Up to 10 % of the inputs may fail in the model before the task fails (after the manifest is written).
        max_failed_fraction=0.1,
    )

    @task
    def report(summary: dict[str, Any]) -> dict[str, int]:
        """Log the batch summary and the first manifest lines; return the counts by status."""
        log.info("Batch %s: %s", summary["batch_tag"], json.dumps(summary, indent=2))
        bucket, key = S3Hook.parse_s3_url(summary["manifest_location"])
        manifest = S3Hook(aws_conn_id="aws_default").read_key(key, bucket_name=bucket)
        for line in manifest.splitlines()[:SHOWN_LINES]:
            item = json.loads(line)
            where = item["output_location"] if item["status"] == "Completed" else item["failure_reason"]
            log.info("item %d (%s): %s, %s", item["item"], item["input_location"], item["status"], where)
        return dict(summary["counts"])

    upload = upload_inputs()
    upload >> score
    report(score.output)
