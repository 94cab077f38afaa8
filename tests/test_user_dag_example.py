"""
Testing your DAGs: a complete example test file, the one the docs' "Test your DAGs" page includes (CI runs it).

It runs a task of "your" DAG as Airflow does, in three steps, against the local SageMaker backend (``pip install
"airflow-sagemaker-async[local]"``, no AWS account): ``execute`` on the worker submits the inference and defers
(Airflow's ``TaskDeferred``), the trigger's ``run()`` waits in the triggerer until SageMaker wrote the result,
``execute_complete`` on the worker turns the trigger's event into the outcome (the task's XCom).

The fixtures come from the plugin's pytest plugin (registered on install, nothing to configure):

- ``sagemaker_async_backend`` (session): the running backend (moto for S3 / SNS / SQS / SageMaker, and the
  runtime that runs the model containers), with ``invocations()`` to see what was sent;
- ``sagemaker_async_iris_endpoint`` (session): ``iris-endpoint``, the bundled iris classifier;
- ``sagemaker_async_airflow_conn`` (per test): ``AIRFLOW_CONN_AWS_DEFAULT`` pointing at the backend.

Two settings, made before Airflow is imported (this repository's ``tests/conftest.py`` makes them): a
throw-away ``AIRFLOW_HOME`` for the session, and ``AIRFLOW__SAGEMAKER_ASYNC__MIN_DEFERRAL_SECONDS=0`` (the
trigger otherwise holds its event 10 s, a guard against a scheduler race that a unit test does not have).

The context the operators need is small: ``context["ti"]`` with ``dag_id``, ``task_id``, ``run_id``,
``map_index`` and ``try_number`` (the default inference id comes from them) and ``xcom_push`` (the console
links are saved through it).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from airflow.sdk import DAG
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred

from airflow_sagemaker_async import (
    SageMakerAsyncInferenceError,
    SageMakerAsyncParameterError,
    SageMakerInvokeEndpointAsyncOperator,
)

# -- "your" DAG (in your project: import it from your DAG file) --------------------------------------------------

with DAG(dag_id="score_iris", schedule=None) as dag:
    predict = SageMakerInvokeEndpointAsyncOperator(
        task_id="predict",
        endpoint_name="iris-endpoint",
        input_data="5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n",  # a setosa and a virginica
        content_type="text/csv",
        output_format="json",
        poll_interval=0.2,  # the default (2 s, growing to 30 s) suits production; a test wants answers fast
    )


# -- what Airflow gives the task --------------------------------------------------------------------------------


@dataclass
class TaskInstance:
    """The part of Airflow's task instance the operators read: ids, try number, and XCom pushes (links)."""

    dag_id: str
    task_id: str
    run_id: str = "manual__2026-01-01T00:00:00+00:00"
    map_index: int = -1
    try_number: int = 1
    xcom: dict[str, Any] = field(default_factory=dict)

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


def run_task(task: Any) -> Any:
    """Run ``task`` as Airflow would: execute; if it defers, the trigger to its first event; execute_complete."""
    context: Any = {"ti": TaskInstance(dag_id=task.dag_id, task_id=task.task_id)}
    try:
        return task.execute(context)
    except TaskDeferred as deferred:
        event = asyncio.run(asyncio.wait_for(first_event(deferred.trigger), timeout=60))
        return getattr(task, deferred.method_name)(context, event=event)


async def first_event(trigger: Any) -> Any:
    """Run the trigger as the triggerer does and return its (only) event's payload."""
    async for event in trigger.run():
        return event.payload
    raise AssertionError("the trigger ended without an event")


# -- the tests --------------------------------------------------------------------------------------------------


@pytest.fixture
def backend(sagemaker_async_backend: Any, sagemaker_async_iris_endpoint: Any, sagemaker_async_airflow_conn: str) -> Any:
    """The local backend with ``iris-endpoint`` InService and ``aws_default`` pointing at it."""
    return sagemaker_async_backend


def test_predict_returns_the_models_predictions(backend: Any) -> None:
    outcome = run_task(predict)

    assert outcome["status"] == "Completed"
    assert [p["label"] for p in outcome["output"]["predictions"]] == ["setosa", "virginica"]
    assert outcome["inference_id"].startswith("score_iris.predict-")  # deterministic per task instance
    sent = [r for r in backend.invocations("iris-endpoint") if r.inference_id == outcome["inference_id"]]
    assert [r.status.value for r in sent] == ["Completed"]  # exactly one request reached SageMaker


def test_a_malformed_row_fails_the_task_with_the_models_message(backend: Any) -> None:
    task = SageMakerInvokeEndpointAsyncOperator(
        task_id="predict_bad_row",
        endpoint_name="iris-endpoint",
        input_data="not,a,number,row\n",
        content_type="text/csv",
        poll_interval=0.2,
        dag=dag,
    )

    with pytest.raises(SageMakerAsyncInferenceError, match="must hold exactly 4 numbers") as info:
        run_task(task)

    assert info.value.outcome["status"] == "Failed"  # the outcome a tolerant task would have returned


def test_a_bad_parameter_fails_before_any_request_and_is_not_retried(backend: Any) -> None:
    with pytest.raises(SageMakerAsyncParameterError, match="request_ttl_seconds") as info:
        SageMakerInvokeEndpointAsyncOperator(
            task_id="predict_ttl", endpoint_name="iris-endpoint", input_data="x", request_ttl_seconds=59
        )

    assert isinstance(info.value, AirflowFailException)  # Airflow fails the task without its retries
