"""
Push completion: SageMaker's SNS notifications, read from an SQS queue, wake the wait within a second.

``predict`` sends three iris flowers to an asynchronous endpoint and defers. Its trigger subscribes to the
SQS queue named by ``notification_queue_url``, which receives the endpoint's SuccessTopic and ErrorTopic
notifications (``AsyncInferenceConfig.OutputConfig.NotificationConfig``). When SageMaker publishes the
result, the trigger HEADs the output (or failure) object to confirm it, then resumes the task: detection in
about a second instead of up to 30 s of polling, and one long-polling SQS request per 20 s for every wait of
the triggerer instead of four S3 HEADs a minute per wait. S3 stays the truth: a notification for an object
that is not there changes nothing, and polling goes on every 5 minutes (``max_poll_interval``'s default with
a queue) in case a notification is lost. If SageMaker reports the request ``Expired`` (it waited in the
endpoint's queue longer than ``request_ttl_seconds``), the task fails at once with
``SageMakerAsyncInferenceTimeout`` instead of waiting for the deadline. ``log_predictions`` prints the
answer.

Several triggerers may share one queue. Set it up once per endpoint (docs/concepts/push.md): a
standard SQS queue subscribed to both topics, a queue policy that lets the topics send to it, and
``sqs:ReceiveMessage``, ``sqs:DeleteMessage`` and ``sqs:ChangeMessageVisibility`` for the triggerer's role.

Where things come from:

- the queue: the Airflow Variable ``sagemaker_async_notification_queue_url`` (read when the task runs), else
  the environment variable ``SAGEMAKER_ASYNC_NOTIFICATION_QUEUE_URL`` (read when the DAG is parsed); with
  neither, the task polls S3 only;
- the endpoint: the Variable ``sagemaker_async_endpoint``, else ``SAGEMAKER_ASYNC_ENDPOINT``, else
  ``iris-endpoint`` (the local backend's demo endpoint, ``sagemaker-async-local up``, whose topics feed the
  queue ``sagemaker-async-local-notifications``);
- the connection: ``aws_default``, used for SageMaker, S3 and SQS alike.

Trigger parameter ``custom_attributes`` is forwarded to the model (the local iris model reads ``sleep=20``:
answer after 20 s, long enough to see the task deferred and woken by the notification).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from airflow.sdk import DAG, Param, task

from airflow_sagemaker_async import SageMakerInvokeEndpointAsyncOperator

log = logging.getLogger(__name__)

ENDPOINT_NAME = os.environ.get("SAGEMAKER_ASYNC_ENDPOINT", "iris-endpoint")
NOTIFICATION_QUEUE_URL = os.environ.get("SAGEMAKER_ASYNC_NOTIFICATION_QUEUE_URL", "")
#: Three flowers from the iris data set: a setosa, a versicolor, a virginica.
INSTANCES = {"instances": [[5.1, 3.5, 1.4, 0.2], [6.4, 3.2, 4.5, 1.5], [6.3, 3.3, 6.0, 2.5]]}

with DAG(
    dag_id="example_sagemaker_async_push",
    description="Wait for an async SageMaker inference woken by its SNS notification through SQS",
    doc_md=__doc__,
    schedule=None,
    catchup=False,
    tags=["example", "sagemaker-async"],
    params={
        "endpoint_name": Param(ENDPOINT_NAME, type="string", description="the async endpoint to call"),
        "custom_attributes": Param(
            None,
            type=["null", "string"],
            description="CustomAttributes forwarded to the model (the local iris model reads sleep=20, status=500)",
        ),
    },
    # So that an unset custom_attributes renders as None (not sent) rather than the string "None".
    render_template_as_native_obj=True,
    default_args={"retries": 0},
) as dag:
    predict = SageMakerInvokeEndpointAsyncOperator(
        task_id="predict",
        aws_conn_id="aws_default",
        endpoint_name="{{ var.value.get('sagemaker_async_endpoint', params.endpoint_name) }}",
        input_data=INSTANCES,
        accept="application/json",
        custom_attributes="{{ params.custom_attributes }}",
        # An empty value (no Variable, no environment variable) means: poll S3 only.
        notification_queue_url=(
            "{{ var.value.get('sagemaker_async_notification_queue_url', '" + NOTIFICATION_QUEUE_URL + "') }}"
        ),
        output_format="json",
    )

    @task
    def log_predictions(outcome: dict[str, Any]) -> list[str]:
        """Log each predicted species and return the labels."""
        labels = [prediction["label"] for prediction in outcome["output"]["predictions"]]
        log.info(
            "Inference %s completed at %s, detected at %s: %s",
            outcome["inference_id"],
            outcome["completed_at"],
            outcome["detected_at"],
            ", ".join(labels),
        )
        return labels

    log_predictions(predict.output)
