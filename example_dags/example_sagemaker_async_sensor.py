"""
Submit in one task, wait in another: ``wait_for_completion=False`` plus ``SageMakerAsyncInferenceSensor``.

``submit`` calls InvokeEndpointAsync and returns at once with the submission record (``inference_id``,
``output_location``, ``failure_location``, ``status`` ``"InProgress"``, ``submitted_at``, ``deadline``) in
XCom. ``wait_for_result`` is a deferrable sensor that pulls the two locations from that record through
templates and waits in the triggerer until one of them holds an object; it returns the same outcome dict as
the operator would, here with the predictions parsed from JSON. ``log_predictions`` prints them.

Splitting the two is useful when something else must happen between submission and result (another
task, a different pool, a sensor timeout of its own), or when the request was submitted outside Airflow:
then give the sensor the locations InvokeEndpointAsync returned.

By default it calls ``iris-endpoint`` of the local backend; override with the environment variable
``SAGEMAKER_ASYNC_ENDPOINT``, the Airflow Variable ``sagemaker_async_endpoint`` or the trigger parameter
``endpoint_name``. Trigger parameter ``custom_attributes`` is forwarded to the model (the local iris model
reads ``sleep=5``: answer after 5 s, long enough to watch the sensor deferred). Connection: ``aws_default``.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from airflow.sdk import DAG, Param, task

from airflow_sagemaker_async import SageMakerAsyncInferenceSensor, SageMakerInvokeEndpointAsyncOperator

log = logging.getLogger(__name__)

ENDPOINT_NAME = os.environ.get("SAGEMAKER_ASYNC_ENDPOINT", "iris-endpoint")
#: Three flowers from the iris data set: a setosa, a versicolor, a virginica.
INSTANCES = {"instances": [[5.1, 3.5, 1.4, 0.2], [6.4, 3.2, 4.5, 1.5], [6.3, 3.3, 6.0, 2.5]]}

with DAG(
    dag_id="example_sagemaker_async_sensor",
    description="Submit with wait_for_completion=False, wait with SageMakerAsyncInferenceSensor",
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
    # Templates render to Python objects: an unset custom_attributes or a missing failure_location stays None
    # (rather than the string "None").
    render_template_as_native_obj=True,
    default_args={"retries": 0},
) as dag:
    submit = SageMakerInvokeEndpointAsyncOperator(
        task_id="submit",
        aws_conn_id="aws_default",
        endpoint_name="{{ var.value.get('sagemaker_async_endpoint', params.endpoint_name) }}",
        input_data=INSTANCES,  # sent as JSON, Content-Type application/json
        custom_attributes="{{ params.custom_attributes }}",
        wait_for_completion=False,
    )

    wait_for_result = SageMakerAsyncInferenceSensor(
        task_id="wait_for_result",
        aws_conn_id="aws_default",
        output_location="{{ ti.xcom_pull(task_ids='submit')['output_location'] }}",
        failure_location="{{ ti.xcom_pull(task_ids='submit')['failure_location'] }}",
        inference_id="{{ ti.xcom_pull(task_ids='submit')['inference_id'] }}",
        endpoint_name="{{ ti.xcom_pull(task_ids='submit')['endpoint_name'] }}",
        output_format="json",
        timeout=600,  # seconds; then SageMakerAsyncInferenceTimeout
    )

    @task
    def log_predictions(submission: dict[str, Any], outcome: dict[str, Any]) -> list[str]:
        """Log each predicted label with its probability; return the labels."""
        log.info("Inference %s submitted at %s", submission["inference_id"], submission["submitted_at"])
        labels = []
        for instance, prediction in zip(INSTANCES["instances"], outcome["output"]["predictions"], strict=True):
            log.info("%s -> %s (p=%.2f)", instance, prediction["label"], max(prediction["probabilities"]))
            labels.append(prediction["label"])
        return labels

    submit >> wait_for_result
    log_predictions(submit.output, wait_for_result.output)
