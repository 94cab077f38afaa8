"""
Many fast deferrable tasks at once: the DAG of ``tests/e2e/test_fast_events.py`` and ``benchmarks/fast_events.py``.

Fast models make triggers fire within seconds of their deferral, which is when an Airflow 3.3 scheduler can
mark the resumed task failed ("state mismatch", apache/airflow#71580, #72716). This DAG makes many of them:

- ``infer``: 16 mapped ``SageMakerInvokeEndpointAsyncOperator`` inferences of one iris flower each, the model
  answering after 0, 0.5, 1 or 2 s (``CustomAttributes`` ``sleep=``, by map index): with 0 the result is often
  there at the check on the worker, otherwise the trigger sees it within a few seconds of the deferral;
- ``score``: one ``SageMakerInvokeEndpointAsyncBatchOperator`` over 40 flowers, 0.5 s each (the endpoint runs
  4 at a time): it defers once, and its trigger fires seconds later.

Every parameter of the guard is left at its default: ``min_deferral_seconds`` comes from
``[sagemaker_async] min_deferral_seconds`` (default 10 s), which the caller sets (or not) in the environment.
Endpoint: ``SAGEMAKER_ASYNC_ENDPOINT`` (read at parse time), default ``iris-endpoint``; connection ``aws_default``.
"""

from __future__ import annotations

import os

from airflow.sdk import DAG

from airflow_sagemaker_async.batch.operators import SageMakerInvokeEndpointAsyncBatchOperator
from airflow_sagemaker_async.inference.operators import SageMakerInvokeEndpointAsyncOperator

ENDPOINT_NAME = os.environ.get("SAGEMAKER_ASYNC_ENDPOINT", "iris-endpoint")
FLOWERS = ("5.1,3.5,1.4,0.2", "6.7,3.0,5.2,2.3", "5.9,3.0,4.2,1.5", "6.3,2.5,5.0,1.9")
#: Seconds the model takes, by map index (cycled).
SLEEPS = ("0", "0.5", "1", "2")
MAPPED = 16
BATCH_ITEMS = 40

with DAG(
    dag_id="sagemaker_async_fast_events",
    description="16 mapped fast inferences and one fast batch, all deferrable, default fast-event guard",
    schedule=None,
    catchup=False,
    tags=["test", "sagemaker-async"],
):
    SageMakerInvokeEndpointAsyncOperator.partial(
        task_id="infer", endpoint_name=ENDPOINT_NAME, content_type="text/csv", max_wait_seconds=300
    ).expand_kwargs(
        [
            {"input_data": FLOWERS[index % len(FLOWERS)], "custom_attributes": f"sleep={SLEEPS[index % len(SLEEPS)]}"}
            for index in range(MAPPED)
        ]
    )
    SageMakerInvokeEndpointAsyncBatchOperator(
        task_id="score",
        endpoint_name=ENDPOINT_NAME,
        input_records=[FLOWERS[index % len(FLOWERS)] for index in range(BATCH_ITEMS)],
        content_type="text/csv",
        custom_attributes="sleep=0.5",
        max_wait_seconds=300,
    )
