"""
Classify real iris flowers with a SageMaker real-time endpoint (InvokeEndpoint), then score the answers.

``load_samples`` reads 24 measured flowers (8 per species) from ``data/iris_sample.csv`` beside this file.
``predict`` sends their measurements as CSV in one InvokeEndpoint call on the worker (a real-time call
answers within SageMaker's 60 s limit, so there is nothing to defer; the payload must stay under 6 MB) and
returns the outcome with the predictions parsed from JSON (``output_format="json"``), the variant that
answered and the response's content type. ``report_accuracy`` compares the predicted labels with the true ones.

By default it calls ``iris-realtime`` of the local backend (``sagemaker-async-local up``). Point it elsewhere
with the environment variable ``SAGEMAKER_REALTIME_ENDPOINT`` (read when the DAG is parsed) or the Airflow
Variable ``sagemaker_realtime_endpoint`` (read when the task runs), and the connection ``aws_default``.

A model error fails ``predict`` with ``SageMakerModelError``: the model's message and the link to its
CloudWatch logs. InvokeEndpoint is not idempotent: the task has no retries, so a failure never runs the
model twice.
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Param, task

from airflow_sagemaker_async import SageMakerInvokeEndpointOperator

log = logging.getLogger(__name__)

ENDPOINT_NAME = os.environ.get("SAGEMAKER_REALTIME_ENDPOINT", "iris-realtime")
SAMPLE_CSV = Path(__file__).parent / "data" / "iris_sample.csv"
FEATURES = ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm"]

with DAG(
    dag_id="example_sagemaker_realtime",
    description="Classify iris flowers with a real-time SageMaker endpoint and report the accuracy",
    doc_md=__doc__,
    schedule=None,
    catchup=False,
    tags=["example", "sagemaker-async", "sagemaker-realtime"],
    params={
        "endpoint_name": Param(ENDPOINT_NAME, type="string", description="the real-time endpoint to call"),
    },
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

    predict = SageMakerInvokeEndpointOperator(
        task_id="predict",
        aws_conn_id="aws_default",
        endpoint_name="{{ var.value.get('sagemaker_realtime_endpoint', params.endpoint_name) }}",
        input_data=samples["csv"],
        content_type="text/csv",
        accept="application/json",
        output_format="json",
    )

    @task
    def report_accuracy(outcome: dict[str, Any], species: list[str]) -> dict[str, Any]:
        """Log each prediction against the true species and return the accuracy."""
        predictions = outcome["output"]["predictions"]
        if len(predictions) != len(species):
            raise ValueError(f"The model answered {len(predictions)} predictions for {len(species)} flowers.")
        correct = sum(p["label"] == truth for p, truth in zip(predictions, species, strict=True))
        accuracy = correct / len(species)
        log.info(
            "Real-time inference %s on variant %s: %d of %d flowers right (accuracy %.1f%%)",
            outcome["inference_id"],
            outcome["invoked_production_variant"],
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
