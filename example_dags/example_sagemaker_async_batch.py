"""
Fan out one asynchronous inference per S3 input with dynamic task mapping, then count the outcomes.

``upload_inputs`` writes four CSV files to S3 with ``S3Hook``: the measured flowers of each species from
``data/iris_sample.csv`` beside this file (one file per species), plus one deliberately malformed file (rows
of three numbers where the model wants four). It returns their ``s3://`` URIs.

``predict`` is mapped over those URIs (``.partial(...).expand(input_location=...)``): one
InvokeEndpointAsync per file, each deferred while its request waits in the endpoint's queue. With
``fail_on_model_error=False`` a model error does not fail the mapped task: it succeeds with the ``"Failed"``
outcome and the model's error in ``failure_reason``, so that ``summarize`` sees every outcome and counts them
(here 3 Completed, 1 Failed). Drop ``fail_on_model_error=False`` to make a bad input fail its task instead.

By default it calls ``iris-endpoint`` of the local backend and writes to bucket ``sagemaker-async-local``.
Override with the environment variables ``SAGEMAKER_ASYNC_ENDPOINT`` / ``SAGEMAKER_ASYNC_BUCKET`` (read when
the DAG is parsed), the Airflow Variables ``sagemaker_async_endpoint`` / ``sagemaker_async_bucket`` (read when
the tasks run), or the trigger parameters ``endpoint_name`` / ``bucket``. Connection: ``aws_default``.
Trigger parameter ``custom_attributes`` is forwarded to the model with every input (the local iris model
reads ``sleep=5``: answer after 5 s).
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.sdk import DAG, Param, Variable, get_current_context, task

from airflow_sagemaker_async import SageMakerInvokeEndpointAsyncOperator

log = logging.getLogger(__name__)

ENDPOINT_NAME = os.environ.get("SAGEMAKER_ASYNC_ENDPOINT", "iris-endpoint")
BUCKET = os.environ.get("SAGEMAKER_ASYNC_BUCKET", "sagemaker-async-local")
SAMPLE_CSV = Path(__file__).parent / "data" / "iris_sample.csv"
FEATURES = ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm"]
#: Three numbers per row where the iris model needs four: the model answers 400 and SageMaker writes the
#: error to the endpoint's S3 failure path.
MALFORMED_CSV = "5.1,3.5,1.4\n6.7,3.0,5.2\n"

with DAG(
    dag_id="example_sagemaker_async_batch",
    description="One async SageMaker inference per S3 input (dynamic task mapping), outcomes counted",
    doc_md=__doc__,
    schedule=None,
    catchup=False,
    tags=["example", "sagemaker-async"],
    params={
        "endpoint_name": Param(ENDPOINT_NAME, type="string", description="the async endpoint to call"),
        "bucket": Param(BUCKET, type="string", description="bucket the inputs are uploaded to"),
        "custom_attributes": Param(
            None,
            type=["null", "string"],
            description="CustomAttributes forwarded to the model (the local iris model reads sleep=5, status=500)",
        ),
    },
    # So that an unset custom_attributes renders as None (not sent) rather than the string "None".
    render_template_as_native_obj=True,
    default_args={"retries": 0},
) as dag:

    @task
    def upload_inputs() -> list[str]:
        """Upload one CSV file per species, plus a malformed one; return their S3 URIs."""
        context = get_current_context()
        bucket = Variable.get("sagemaker_async_bucket", default=context["params"]["bucket"])
        run_part = re.sub(r"[^A-Za-z0-9_.-]+", "-", context["run_id"])
        prefix = f"{context['dag'].dag_id}/{run_part}"

        files: dict[str, str] = defaultdict(str)
        with SAMPLE_CSV.open(newline="") as sample:
            for row in csv.DictReader(sample):
                files[f"{row['species']}.csv"] += ",".join(row[name] for name in FEATURES) + "\n"
        files["malformed.csv"] = MALFORMED_CSV

        s3 = S3Hook(aws_conn_id="aws_default")
        uris = []
        for name, body in files.items():
            s3.load_string(body, key=f"{prefix}/{name}", bucket_name=bucket, replace=True)
            uris.append(f"s3://{bucket}/{prefix}/{name}")
            log.info("Uploaded %s (%d rows)", uris[-1], body.count("\n"))
        return uris

    predict = SageMakerInvokeEndpointAsyncOperator.partial(
        task_id="predict",
        aws_conn_id="aws_default",
        endpoint_name="{{ var.value.get('sagemaker_async_endpoint', params.endpoint_name) }}",
        content_type="text/csv",
        custom_attributes="{{ params.custom_attributes }}",
        output_format="json",
        # A model error ends the mapped task in success with the "Failed" outcome, for summarize to count.
        fail_on_model_error=False,
        # Name each mapped task instance after its input file in the UI.
        map_index_template="{{ task.input_location.rsplit('/', 1)[-1] }}",
    ).expand(input_location=upload_inputs())

    @task
    def summarize(outcomes: list[dict[str, Any]]) -> dict[str, Any]:
        """Count the outcomes by status and log each one: predictions, or the model's error."""
        counts: Counter[str] = Counter()
        for outcome in outcomes:
            counts[outcome["status"]] += 1
            if outcome["status"] == "Completed":
                labels = Counter(p["label"] for p in outcome["output"]["predictions"])
                log.info("%s: Completed, %s", outcome["inference_id"], dict(labels))
            else:
                log.warning("%s: %s: %s", outcome["inference_id"], outcome["status"], outcome.get("failure_reason"))
        log.info("%d inferences: %s", len(outcomes), dict(counts))
        return {"total": len(outcomes), **{status: counts[status] for status in ("Completed", "Failed")}}

    summarize(predict.output)
