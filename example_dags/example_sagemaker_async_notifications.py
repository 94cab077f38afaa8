"""
A DAG run per finished inference, started by the endpoint's SNS notifications: inferences submitted elsewhere.

Inferences are often submitted by other systems (a web service, a Lambda). The endpoint publishes every
result to its SuccessTopic and ErrorTopic; an SQS queue subscribed to both is watched by
:class:`~airflow_sagemaker_async.SageMakerAsyncNotificationTrigger` in an ``AssetWatcher``.
Each notification that passes the filters (here: this endpoint, ``Completed`` or ``Failed``) becomes an
event of the asset ``RESULTS``, and each event starts a run of this DAG. No sensor polls S3, no task waits.

``handle_result`` reads the notification from the event that started the run (``triggering_asset_events``:
``extra["payload"]`` holds the inference id, status, output location or failure reason) and returns it.

Use a queue of its own for the watcher (not the one of push completion, which deletes what it routes). A
message is deleted only once Airflow has stored its asset event (Airflow 3.3; on 3.2, 5 s after the event
left the trigger); a redelivered notification can start a second run for the same inference, so make the
DAG idempotent per ``inference_id``. See ``docs/how-to/assets.md``.

Where things come from (read when the DAG is parsed): the queue, ``SAGEMAKER_ASYNC_WATCHER_QUEUE_URL``; the
endpoint, ``SAGEMAKER_ASYNC_WATCHED_ENDPOINT``, else ``iris-endpoint``; the asset URI, the endpoint's output
path ``SAGEMAKER_ASYNC_RESULTS_ASSET``, else ``s3://sagemaker-async-local/<endpoint>/output``. Connection:
``aws_default``.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from airflow.sdk import DAG, AssetWatcher, task

from airflow_sagemaker_async import SageMakerAsyncNotificationTrigger, sagemaker_output_asset

log = logging.getLogger(__name__)

ENDPOINT_NAME = os.environ.get("SAGEMAKER_ASYNC_WATCHED_ENDPOINT", "iris-endpoint")
QUEUE_URL = os.environ.get(
    "SAGEMAKER_ASYNC_WATCHER_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/123456789012/sagemaker-async-watcher"
)
RESULTS = sagemaker_output_asset(
    os.environ.get("SAGEMAKER_ASYNC_RESULTS_ASSET", f"s3://sagemaker-async-local/{ENDPOINT_NAME}/output"),
    name=f"{ENDPOINT_NAME}_results",
    watchers=[
        AssetWatcher(
            name=f"{ENDPOINT_NAME}_notifications",
            trigger=SageMakerAsyncNotificationTrigger(
                queue_url=QUEUE_URL,
                endpoint_name=ENDPOINT_NAME,
                statuses=["Completed", "Failed"],
                aws_conn_id="aws_default",
            ),
        )
    ],
)

with DAG(
    dag_id="example_sagemaker_async_notifications",
    description="One run per SageMaker notification (AssetWatcher on the endpoint's SQS queue)",
    doc_md=__doc__,
    schedule=[RESULTS],
    catchup=False,
    tags=["example", "sagemaker-async", "assets"],
):

    @task
    def handle_result(triggering_asset_events: Any = None) -> list[dict[str, Any]]:
        """Return the notifications that started this run (usually one), as the trigger parsed them."""
        payloads = [event.extra["payload"] for event in triggering_asset_events[RESULTS]]
        for payload in payloads:
            log.info(
                "Inference %s on %s: %s %s",
                payload["inference_id"],
                payload["endpoint_name"],
                payload["status"],
                payload["output_location"] or payload["failure_reason"],
            )
        return payloads

    handle_result()
