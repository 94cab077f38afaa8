"""
Generate text with a streaming SageMaker endpoint (InvokeEndpointWithResponseStream), kept in S3 as it arrives.

``generate`` sends a prompt and writes every part of the model's answer to an S3 object as it arrives (a
multipart upload once 8 MiB arrived, one PutObject for a shorter answer), logging progress: parts, bytes and
the time to the first part. If the model breaks the stream mid-way, the task fails with
``SageMakerResponseStreamError`` naming the error code, and the parts already received stay in the object.
``report`` reads the object back and logs the text with the stream's figures.

By default it calls ``text-streaming`` of the local backend (``sagemaker-async-local up``: a small text model
that emits one token at a time) and writes to bucket ``sagemaker-async-local``. Override with the environment
variables ``SAGEMAKER_STREAMING_ENDPOINT`` / ``SAGEMAKER_ASYNC_BUCKET`` (read when the DAG is parsed), the
Airflow Variables ``sagemaker_streaming_endpoint`` / ``sagemaker_async_bucket`` (read when the tasks run), or
the trigger parameters. Connection: ``aws_default``.

Trigger parameter ``custom_attributes`` is forwarded verbatim to the model; the local text model reads
``tokens=200``, ``delay=0.05`` (seconds between tokens) and ``fail_after=5`` (break the stream) from it.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime
from typing import Any

from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.sdk import DAG, Param, task

from airflow_sagemaker_async import SageMakerInvokeEndpointWithResponseStreamOperator

log = logging.getLogger(__name__)

ENDPOINT_NAME = os.environ.get("SAGEMAKER_STREAMING_ENDPOINT", "text-streaming")
BUCKET = os.environ.get("SAGEMAKER_ASYNC_BUCKET", "sagemaker-async-local")

with DAG(
    dag_id="example_sagemaker_streaming",
    description="Stream a text generation from a SageMaker endpoint into S3, part by part",
    doc_md=__doc__,
    schedule=None,
    catchup=False,
    tags=["example", "sagemaker-async", "sagemaker-streaming"],
    params={
        "endpoint_name": Param(ENDPOINT_NAME, type="string", description="the streaming endpoint to call"),
        "bucket": Param(BUCKET, type="string", description="bucket the generation is written to"),
        "prompt": Param("Explain what Airflow does with a stream", type="string", description="the prompt"),
        "max_new_tokens": Param(64, type="integer", minimum=1, description="tokens to generate"),
        "custom_attributes": Param(
            None,
            type=["null", "string"],
            description="CustomAttributes forwarded to the model (the local text model reads tokens=, delay=, "
            "fail_after=)",
        ),
    },
    # So that an unset custom_attributes renders as None (not sent) and max_new_tokens stays an integer.
    render_template_as_native_obj=True,
    default_args={"retries": 0},
) as dag:
    generate = SageMakerInvokeEndpointWithResponseStreamOperator(
        task_id="generate",
        aws_conn_id="aws_default",
        endpoint_name="{{ var.value.get('sagemaker_streaming_endpoint', params.endpoint_name) }}",
        input_data={"inputs": "{{ params.prompt }}", "parameters": {"max_new_tokens": "{{ params.max_new_tokens }}"}},
        content_type="application/json",
        custom_attributes="{{ params.custom_attributes }}",
        output_location=(
            "s3://{{ var.value.get('sagemaker_async_bucket', params.bucket) }}/streaming/{{ dag_run.run_id }}/"
            "generation.txt"
        ),
    )

    @task
    def report(outcome: dict[str, Any]) -> dict[str, Any]:
        """Read the generation back from S3 and log it with the stream's figures."""
        bucket, key = S3Hook.parse_s3_url(outcome["output_location"])
        text = S3Hook(aws_conn_id="aws_default").read_key(key, bucket_name=bucket)
        invoked_at = datetime.fromisoformat(outcome["invoked_at"])
        seconds = (datetime.fromisoformat(outcome["completed_at"]) - invoked_at).total_seconds()
        log.info(
            "Stream %s: %d parts, %d bytes in %.3f s, first part after %.3f s, %.1f KiB/s; text: %s",
            outcome["inference_id"],
            outcome["parts"],
            outcome["output_bytes"],
            seconds,
            outcome["time_to_first_part_seconds"] or 0.0,
            outcome["output_bytes"] / 1024 / seconds if seconds > 0 else 0.0,
            text,
        )
        return {"parts": outcome["parts"], "characters": len(text), "words": len(text.split())}

    report(generate.output)
