"""
Benchmark DAGs: one batch task vs ``.expand`` of the single operator, on the local backend's ``iris-endpoint``.

Run by ``benchmarks/batch.py`` under a real Airflow (not meant for a real deployment). The inputs are tiny CSV
objects ``<prefix>/<i:05d>.csv`` that the benchmark uploads before it triggers a run. Read at parse time:

- ``SAGEMAKER_ASYNC_BENCH_INPUT_PREFIX``: the S3 prefix of the inputs, default
  ``s3://sagemaker-async-local/bench-batch/inputs``;
- ``SAGEMAKER_ASYNC_BENCH_EXPAND_M``: how many of them the mapped single operator scores, default 1,000;
- ``SAGEMAKER_ASYNC_BENCH_WATCH_SLEEP``: seconds the model sleeps per request in the watch DAG, default 60;
- ``SAGEMAKER_ASYNC_BENCH_WATCH_IN_FLIGHT``: ``max_in_flight`` of the watch DAG, default 10,000;
- ``SAGEMAKER_ASYNC_BENCH_WATCH_STATE_N``: how many pending items the state-only watch DAG writes, default 10,000;
- ``SAGEMAKER_ASYNC_BENCH_WATCH_STATE_OUTPUT``: the output path of the endpoint it pretends to watch (S3 URI).

The DAGs:

- ``sagemaker_async_bench_batch``: every object under the prefix through one
  :class:`~airflow_sagemaker_async.batch.operators.SageMakerInvokeEndpointAsyncBatchOperator`, with its defaults
  (``max_in_flight`` 1,000, the fast-event guard of ``[sagemaker_async] min_deferral_seconds``);
- ``sagemaker_async_bench_expand``: the first M objects, one mapped
  :class:`~airflow_sagemaker_async.inference.operators.SageMakerInvokeEndpointAsyncOperator` each (``input_location``);
- ``sagemaker_async_bench_watch``: the same batch with a slow model and every item in flight at once, so
  that one trigger watches them all;
- ``sagemaker_async_bench_watch_state``: no submission at all: a task writes a batch state with N pending items
  (none will ever end) and defers to the real
  :class:`~airflow_sagemaker_async.batch.triggers.SageMakerAsyncBatchInferenceTrigger`, so the triggerer watches N
  pending items without N submissions first (100,000 of them would take longer than the measurement).
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.sdk import DAG, BaseOperator

from airflow_sagemaker_async.batch.operators import SageMakerInvokeEndpointAsyncBatchOperator
from airflow_sagemaker_async.inference.operators import SageMakerInvokeEndpointAsyncOperator

ENDPOINT_NAME = os.environ.get("SAGEMAKER_ASYNC_ENDPOINT", "iris-endpoint")
INPUT_PREFIX = os.environ.get("SAGEMAKER_ASYNC_BENCH_INPUT_PREFIX", "s3://sagemaker-async-local/bench-batch/inputs")
EXPAND_M = int(os.environ.get("SAGEMAKER_ASYNC_BENCH_EXPAND_M", "1000"))
WATCH_SLEEP = os.environ.get("SAGEMAKER_ASYNC_BENCH_WATCH_SLEEP", "60")
WATCH_IN_FLIGHT = int(os.environ.get("SAGEMAKER_ASYNC_BENCH_WATCH_IN_FLIGHT", "10000"))
WATCH_STATE_N = int(os.environ.get("SAGEMAKER_ASYNC_BENCH_WATCH_STATE_N", "10000"))
WATCH_STATE_OUTPUT = os.environ.get(
    "SAGEMAKER_ASYNC_BENCH_WATCH_STATE_OUTPUT", "s3://sagemaker-async-local/bench-iris/output"
)


class WatchStateOperator(BaseOperator):
    """Write a batch state with ``n`` pending items (deadline in an hour) and defer to the batch trigger."""

    def __init__(self, *, n: int, output_path: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.n = n
        self.output_path = output_path

    def execute(self, context: Any) -> None:
        from airflow_sagemaker_async.batch.core import BatchNames, BatchState, PendingItem, batch_tag
        from airflow_sagemaker_async.batch.triggers import SageMakerAsyncBatchInferenceTrigger
        from airflow_sagemaker_async.common.layout import split_s3_uri
        from airflow_sagemaker_async.common.watch import isoformat, utcnow

        ti = context["ti"]
        tag = batch_tag(ti.dag_id, ti.task_id, ti.run_id)
        directory = f"{self.output_path.rstrip('/')}/airflow-batch/{tag}"
        names = BatchNames.of(tag, ti.dag_id, ti.task_id, directory, directory.replace("/output/", "/failure/"))
        now = utcnow()
        submitted, deadline = isoformat(now), isoformat(now + timedelta(hours=1))
        state = BatchState(
            tag=tag,
            endpoint_name="none",
            total=self.n,
            output_dir=names.output_dir,
            failure_dir=names.failure_dir,
            started_at=submitted,
            next_index=self.n,
            pending=[
                PendingItem(
                    index=i,
                    inference_id=names.inference_id(i),
                    input_location=None,
                    output_location=names.output_location(i),
                    failure_location=None,
                    submitted_at=submitted,
                    deadline=deadline,
                )
                for i in range(self.n)
            ],
        )
        bucket, key = split_s3_uri(names.state_location())
        S3Hook().conn.put_object(Bucket=bucket, Key=key, Body=state.to_json().encode())
        self.log.info("Watch-only batch %s: %d pending items written", tag, self.n)
        self.defer(
            trigger=SageMakerAsyncBatchInferenceTrigger(
                batch_tag=tag,
                state_location=names.state_location(),
                output_dir=names.output_dir,
                failure_dir=names.failure_dir,
                low_water=0,
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Any, event: Any) -> None:
        """Never reached within the measurement (the run is abandoned)."""


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

with DAG(dag_id="sagemaker_async_bench_watch_state", schedule=None, catchup=False, tags=["benchmark"]):
    WatchStateOperator(task_id="watch", n=WATCH_STATE_N, output_path=WATCH_STATE_OUTPUT)
