"""
Classify real iris flowers with a SageMaker asynchronous inference endpoint, then score the answers.

``load_samples`` reads 24 measured flowers (8 per species, from the iris data set bundled with scikit-learn)
from ``data/iris_sample.csv`` beside this file. ``predict`` sends their measurements as CSV in the request
body (``input_data``: InvokeEndpointAsync with ``Body``, no upload needed under 128,000 bytes), defers while
the model works (the task holds no worker slot; the triggerer watches the request's S3 output and failure
locations), and pushes the outcome to XCom with the predictions parsed from JSON (``output_format="json"``).
``report_accuracy`` compares the predicted labels with the true ones.

By default it calls ``iris-endpoint`` of the local backend (``sagemaker-async-local up``). Point it elsewhere
with the environment variable ``SAGEMAKER_ASYNC_ENDPOINT`` (read when the DAG is parsed) or the Airflow
Variable ``sagemaker_async_endpoint`` (read when the task runs), and the connection ``aws_default``.

Trigger parameter ``custom_attributes`` is forwarded verbatim to the model as CustomAttributes; the local
iris model reads ``sleep=5`` (answer after 5 s) and ``status=500`` (fail) from it.
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Param, task

from airflow_sagemaker_async import SageMakerInvokeEndpointAsyncOperator

log = logging.getLogger(__name__)

ENDPOINT_NAME = os.environ.get("SAGEMAKER_ASYNC_ENDPOINT", "iris-endpoint")
SAMPLE_CSV = Path(__file__).parent / "data" / "iris_sample.csv"
FEATURES = ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm"]

with DAG(
    dag_id="example_sagemaker_async_inference",
    description="Classify iris flowers with an async SageMaker endpoint and report the accuracy",
    doc_md=__doc__,
    schedule=None,
    catchup=False,
    tags=["example", "sagemaker-async"],
    params={
        "endpoint_name": Param(ENDPOINT_NAME, type="string", description="the async endpoint to call"),
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

    @task(multiple_outputs=True)
    def load_samples() -> dict[str, Any]:
        """Read the sample flowers: the measurements as CSV rows for the model, the species to score against."""
        with SAMPLE_CSV.open(newline="") as sample:
            rows = list(csv.DictReader(sample))
        log.info("Loaded %d flowers from %s", len(rows), SAMPLE_CSV.name)
        return {
            "csv": "".join(",".join(row[name] for name in FEATURES) + "\n" for row in rows),
            "species": [row["species"] for row in rows],
        }

    samples = load_samples()

    predict = SageMakerInvokeEndpointAsyncOperator(
        task_id="predict",
        aws_conn_id="aws_default",
        endpoint_name="{{ var.value.get('sagemaker_async_endpoint', params.endpoint_name) }}",
        input_data=samples["csv"],
        content_type="text/csv",
        accept="application/json",
        custom_attributes="{{ params.custom_attributes }}",
        output_format="json",
    )

    @task
    def report_accuracy(outcome: dict[str, Any], species: list[str]) -> dict[str, Any]:
        """Log each prediction against the true species and return the accuracy."""
        predictions = outcome["output"]["predictions"]
        if len(predictions) != len(species):
            raise ValueError(f"The model answered {len(predictions)} predictions for {len(species)} flowers.")
        correct = 0
        for number, (prediction, truth) in enumerate(zip(predictions, species, strict=True), start=1):
            correct += prediction["label"] == truth
            log.info(
                "flower %2d: predicted %-10s (p=%.2f) true %-10s %s",
                number,
                prediction["label"],
                max(prediction["probabilities"]),
                truth,
                "ok" if prediction["label"] == truth else "WRONG",
            )
        accuracy = correct / len(species)
        log.info(
            "Inference %s: %d of %d flowers right (accuracy %.1f%%)",
            outcome["inference_id"],
            correct,
            len(species),
            100 * accuracy,
        )
        return {
            "inference_id": outcome["inference_id"],
            "correct": correct,
            "total": len(species),
            "accuracy": accuracy,
        }

    report_accuracy(predict.output, samples["species"])
