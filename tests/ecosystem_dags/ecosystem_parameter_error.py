"""
A parameter error fails its task at once, retries or not; a plain error with retries is retried (the control).

``bad_ttl`` renders ``request_ttl_seconds`` to 59 (InvokeEndpointAsync needs 60-21600): the operator raises
SageMakerAsyncParameterError, an AirflowFailException, before any AWS call. ``flaky`` raises a ValueError and
is retried, to show that ``airflow dags test`` does retry.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, task

from airflow_sagemaker_async import SageMakerInvokeEndpointAsyncOperator

with DAG(dag_id="ecosystem_parameter_error", schedule=None, doc_md=__doc__, tags=["test"]):
    SageMakerInvokeEndpointAsyncOperator(
        task_id="bad_ttl",
        endpoint_name="iris-endpoint",
        input_data="5.1,3.5,1.4,0.2",
        content_type="text/csv",
        request_ttl_seconds="{{ 60 - 1 }}",
        retries=3,
        retry_delay=timedelta(seconds=0),
    )

    @task(retries=2, retry_delay=timedelta(seconds=0))
    def flaky() -> None:
        raise ValueError("always")

    flaky()
