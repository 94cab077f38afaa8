"""A batch of 300 rows (every 25th malformed) slow enough to watch: the progress page's end-to-end test runs it."""

from __future__ import annotations

import os

from airflow.sdk import DAG

from airflow_sagemaker_async import SageMakerInvokeEndpointAsyncBatchOperator

GOOD_ROW = "5.1,3.5,1.4,0.2\n"
BAD_ROW = "5.1,3.5,1.4\n"

with DAG(dag_id="progress_page_batch", schedule=None, catchup=False) as dag:
    SageMakerInvokeEndpointAsyncBatchOperator(
        task_id="score",
        endpoint_name=os.environ.get("SAGEMAKER_ASYNC_ENDPOINT", "iris-endpoint"),
        input_records=[BAD_ROW if i % 25 == 24 else GOOD_ROW for i in range(300)],
        content_type="text/csv",
        custom_attributes="{{ dag_run.conf.get('custom_attributes', '') }}",
        max_in_flight=40,
        max_failed_fraction=0.1,
    )
