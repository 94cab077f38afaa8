"""
What a model error looks like in a pipeline, handled two ways.

Both inference tasks send the same malformed payload (a CSV header and a row of two values; the iris model
wants four numbers per row). The model answers 400, and SageMaker writes its error body to the endpoint's
S3 failure path, where the trigger finds it.

1. ``predict_strict`` keeps the default ``fail_on_model_error=True``: the task **fails**, its error quoting the
   model's own message (e.g. ``Row 1 must hold exactly 4 numbers, got ['sepal_length', 'sepal_width']``) and
   the failure location. ``on_failure`` (trigger rule ``one_failed``) is how the pipeline reacts: it runs only
   because ``predict_strict`` failed (alert, fall back, open a ticket...).
2. ``predict_tolerant`` sets ``fail_on_model_error=False``: the task **succeeds** with the ``"Failed"`` outcome,
   and ``handle_outcome`` reads ``status`` and ``failure_reason`` from XCom to decide what to do.

The run itself ends ``success``: its last tasks (``on_failure``, ``handle_outcome``) succeed, the failure
was handled. Retries are off so that the failure shows at once.

By default it calls ``iris-endpoint`` of the local backend; override with the environment variable
``SAGEMAKER_ASYNC_ENDPOINT``, the Airflow Variable ``sagemaker_async_endpoint`` or the trigger parameter
``endpoint_name``. Connection: ``aws_default``. Trigger parameter ``custom_attributes`` is forwarded to the
model (the local iris model reads ``sleep=5``: answer, here fail, after 5 s).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from airflow.sdk import DAG, Param, TriggerRule, task

from airflow_sagemaker_async import SageMakerInvokeEndpointAsyncOperator

log = logging.getLogger(__name__)

ENDPOINT_NAME = os.environ.get("SAGEMAKER_ASYNC_ENDPOINT", "iris-endpoint")
MALFORMED_CSV = "sepal_length,sepal_width\n5.1,3.5\n"

with DAG(
    dag_id="example_sagemaker_async_failure",
    description="A model error: a failing task and its one_failed reaction, or a Failed outcome read downstream",
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
    common: dict[str, Any] = {
        "aws_conn_id": "aws_default",
        "endpoint_name": "{{ var.value.get('sagemaker_async_endpoint', params.endpoint_name) }}",
        "input_data": MALFORMED_CSV,
        "content_type": "text/csv",
        "custom_attributes": "{{ params.custom_attributes }}",
    }

    # 1. The model error fails the task (SageMakerAsyncInferenceError, with the model's message).
    predict_strict = SageMakerInvokeEndpointAsyncOperator(task_id="predict_strict", **common)

    @task(trigger_rule=TriggerRule.ONE_FAILED)
    def on_failure() -> str:
        """Run only when an upstream task failed: the place for an alert or a fallback."""
        log.warning("predict_strict failed (its log holds the model's error); reacting: alert + fallback")
        return "reacted to the failure of predict_strict"

    predict_strict >> on_failure()

    # 2. The model error is an outcome like any other: the task succeeds, downstream decides.
    predict_tolerant = SageMakerInvokeEndpointAsyncOperator(
        task_id="predict_tolerant", fail_on_model_error=False, **common
    )

    @task
    def handle_outcome(outcome: dict[str, Any]) -> dict[str, Any]:
        """Branch on the outcome's status; on ``Failed`` log the model's error from ``failure_reason``."""
        if outcome["status"] == "Failed":
            log.warning(
                "Inference %s failed; the model said: %s (error object: %s)",
                outcome["inference_id"],
                outcome["failure_reason"],
                outcome["failure_location"],
            )
        else:
            log.info("Inference %s: %s", outcome["inference_id"], outcome["status"])
        return {"status": outcome["status"], "failure_reason": outcome.get("failure_reason")}

    handle_outcome(predict_tolerant.output)
