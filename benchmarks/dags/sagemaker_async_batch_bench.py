"""
Benchmark DAGs: one batch task vs ``.expand`` of the single operator, on the local backend's ``iris-endpoint``.

Run by ``benchmarks/batch.py`` under a real Airflow (not meant for a real deployment). The inputs are tiny CSV
objects ``<prefix>/<i:05d>.csv`` that the benchmark uploads before it triggers a run. Read at parse time:

- ``SAGEMAKER_ASYNC_BENCH_INPUT_PREFIX``: the S3 prefix of the inputs, default
  ``s3://sagemaker-async-local/bench-batch/inputs``;
- ``SAGEMAKER_ASYNC_BENCH_EXPAND_M``: how many of them the mapped single operator scores, default 1,000;
- ``SAGEMAKER_ASYNC_BENCH_WATCH_SLEEP``: seconds the model sleeps per request in the watch DAG, default 60;
- ``SAGEMAKER_ASYNC_BENCH_WATCH_IN_FLIGHT``: ``max_in_flight`` of the watch DAG, default 10,000.

The DAGs:

- ``sagemaker_async_bench_batch``: every object under the prefix through one
  :class:`~airflow_sagemaker_async.batch.operators.SageMakerInvokeEndpointAsyncBatchOperator`, with its defaults
  (``max_in_flight`` 1,000, the fast-event guard of ``[sagemaker_async] min_deferral_seconds``);
- ``sagemaker_async_bench_expand``: the first M objects, one mapped
  :class:`~airflow_sagemaker_async.inference.operators.SageMakerInvokeEndpointAsyncOperator` each (``input_location``);
- ``sagemaker_async_bench_watch``: the same batch with a slow model and every item in flight at once, so
  that one trigger watches them all.
"""

from __future__ import annotations

import os

from airflow.sdk import DAG

from airflow_sagemaker_async.batch.operators import SageMakerInvokeEndpointAsyncBatchOperator
from airflow_sagemaker_async.inference.operators import SageMakerInvokeEndpointAsyncOperator

ENDPOINT_NAME = os.environ.get("SAGEMAKER_ASYNC_ENDPOINT", "iris-endpoint")
INPUT_PREFIX = os.environ.get("SAGEMAKER_ASYNC_BENCH_INPUT_PREFIX", "s3://sagemaker-async-local/bench-batch/inputs")
EXPAND_M = int(os.environ.get("SAGEMAKER_ASYNC_BENCH_EXPAND_M", "1000"))
WATCH_SLEEP = os.environ.get("SAGEMAKER_ASYNC_BENCH_WATCH_SLEEP", "60")
WATCH_IN_FLIGHT = int(os.environ.get("SAGEMAKER_ASYNC_BENCH_WATCH_IN_FLIGHT", "10000"))

with DAG(dag_id="sagemaker_async_bench_batch", schedule=None, catchup=False, tags=["benchmark"]):
    SageMakerInvokeEndpointAsyncBatchOperator(
        task_id="score", endpoint_name=ENDPOINT_NAME, input_prefix=f"{INPUT_PREFIX}/", content_type="text/csv"
    )

with DAG(dag_id="sagemaker_async_bench_expand", schedule=None, catchup=False, tags=["benchmark"]):
    SageMakerInvokeEndpointAsyncOperator.partial(
        task_id="infer", endpoint_name=ENDPOINT_NAME, content_type="text/csv"
    ).expand(input_location=[f"{INPUT_PREFIX}/{index:05d}.csv" for index in range(EXPAND_M)])

with DAG(dag_id="sagemaker_async_bench_watch", schedule=None, catchup=False, tags=["benchmark"]):
    SageMakerInvokeEndpointAsyncBatchOperator(
        task_id="score",
        endpoint_name=ENDPOINT_NAME,
        input_prefix=f"{INPUT_PREFIX}/",
        content_type="text/csv",
        custom_attributes=f"sleep={WATCH_SLEEP}",
        max_in_flight=WATCH_IN_FLIGHT,
    )
