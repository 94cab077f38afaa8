"""
Benchmark DAG: M mapped SageMaker async inferences on the local backend's demo ``iris-endpoint``.

Run by ``benchmarks/airflow_overhead.py`` (not meant for a real deployment). Read at parse time:

- ``SAGEMAKER_ASYNC_BENCH_M``: how many inferences (mapped task instances), default 20;
- ``SAGEMAKER_ASYNC_BENCH_SLEEP``: seconds the model sleeps per request (CustomAttributes ``sleep=``), default 2;
- ``SAGEMAKER_ASYNC_BENCH_POLL_INTERVAL``: the operator's ``poll_interval``, default 2 (the operator's own).
"""

from __future__ import annotations

import os

from airflow.sdk import DAG

from airflow_sagemaker_async.inference.operators import SageMakerInvokeEndpointAsyncOperator

M = int(os.environ.get("SAGEMAKER_ASYNC_BENCH_M", "20"))
SLEEP = os.environ.get("SAGEMAKER_ASYNC_BENCH_SLEEP", "2")
POLL_INTERVAL = float(os.environ.get("SAGEMAKER_ASYNC_BENCH_POLL_INTERVAL", "2"))

with DAG(dag_id="sagemaker_async_overhead", schedule=None, catchup=False, tags=["benchmark"]):
    SageMakerInvokeEndpointAsyncOperator.partial(
        task_id="infer",
        endpoint_name="iris-endpoint",
        content_type="text/csv",
        custom_attributes=f"sleep={SLEEP}",
        poll_interval=POLL_INTERVAL,
        max_wait_seconds=600,
    ).expand(input_data=[f"5.{index % 10},3.5,1.4,0.2" for index in range(M)])
