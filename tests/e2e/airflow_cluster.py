"""
What the end-to-end tests add to :mod:`airflow_sagemaker_async.local.harness`: the Airflow environment of the
example DAGs against the backend of the pytest plugin (in the test process).

The examples keep the plugin's default poll schedule; the tests speed them up from outside, as the demo does,
with ``[sagemaker_async] poll_interval`` / ``max_poll_interval`` in the environment. ``min_deferral_seconds``
keeps its real default.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from airflow_sagemaker_async.local.cli import ready_document
from airflow_sagemaker_async.local.harness import airflow_environment

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from airflow_sagemaker_async.local.backend import LocalEndpoint, LocalSageMakerAsyncBackend
    from airflow_sagemaker_async.local.harness import AirflowApi, AirflowCluster
    from airflow_sagemaker_async.local.topology import CeleryServers

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "example_dags"
POLL_INTERVAL = 0.5
MAX_POLL_INTERVAL = 1.0


def examples_environment(
    home: Path,
    backend: LocalSageMakerAsyncBackend,
    endpoint: LocalEndpoint,
    *,
    api_port: int | None = None,
    servers: CeleryServers | None = None,
    dags_folder: Path = EXAMPLES_DIR,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The harness's Airflow environment: the example DAGs, ``aws_default`` and ``endpoint`` of ``backend``.

    ``servers``: the Celery topology's PostgreSQL and Redis (default none: SQLite, LocalExecutor).
    """
    return airflow_environment(
        home,
        ready=ready_document(backend, None),
        dags_folder=dags_folder,
        api_port=api_port,
        servers=servers,
        poll_interval=POLL_INTERVAL,
        max_poll_interval=MAX_POLL_INTERVAL,
        extra={"SAGEMAKER_ASYNC_ENDPOINT": endpoint.endpoint_name, **(extra or {})},
    )


# -- what each example DAG must have done (shared by both topologies' end-to-end tests) --------------------------


def check_inference_example(cluster: AirflowApi, run_id: str) -> None:
    """``example_sagemaker_async_inference``: success, the outcome and the accuracy in XCom."""
    dag_id = "example_sagemaker_async_inference"
    assert cluster.run_state(dag_id, run_id) == "success"
    outcome = cluster.xcom(dag_id, run_id, "predict")
    assert outcome["status"] == "Completed"
    assert outcome["endpoint_name"] == "iris-endpoint"
    assert outcome["output_location"].startswith("s3://sagemaker-async-local/iris-endpoint/output/")
    assert len(outcome["output"]["predictions"]) == 24
    assert outcome["detected_at"] > outcome["submitted_at"]
    score = cluster.xcom(dag_id, run_id, "report_accuracy")
    assert score["total"] == 24
    assert score["accuracy"] >= 0.8


def check_batch_example(cluster: AirflowApi, run_id: str) -> None:
    """``example_sagemaker_async_batch``: four mapped inferences, three Completed and one Failed."""
    dag_id = "example_sagemaker_async_batch"
    assert cluster.run_state(dag_id, run_id) == "success"
    states = cluster.task_states(dag_id, run_id)
    assert sorted(state for (task_id, _), state in states.items() if task_id == "predict") == ["success"] * 4
    assert cluster.xcom(dag_id, run_id, "summarize") == {"total": 4, "Completed": 3, "Failed": 1}
    failed = [cluster.xcom(dag_id, run_id, "predict", i) for i in range(4)]
    assert [o["status"] for o in failed].count("Failed") == 1


def check_failure_example(cluster: AirflowApi, run_id: str) -> None:
    """``example_sagemaker_async_failure``: the strict task fails, the reactions run."""
    dag_id = "example_sagemaker_async_failure"
    assert cluster.run_state(dag_id, run_id) == "success"
    assert cluster.task_states(dag_id, run_id) == {
        ("predict_strict", -1): "failed",
        ("on_failure", -1): "success",
        ("predict_tolerant", -1): "success",
        ("handle_outcome", -1): "success",
    }
    handled = cluster.xcom(dag_id, run_id, "handle_outcome")
    assert handled["status"] == "Failed"
    assert "Row 1 must hold exactly 4 numbers" in handled["failure_reason"]


def check_sensor_example(cluster: AirflowApi, run_id: str) -> None:
    """``example_sagemaker_async_sensor``: the sensor waits for the submitted inference and gets it."""
    dag_id = "example_sagemaker_async_sensor"
    assert cluster.run_state(dag_id, run_id) == "success"
    submission = cluster.xcom(dag_id, run_id, "submit")
    outcome = cluster.xcom(dag_id, run_id, "wait_for_result")
    assert submission["status"] == "InProgress"
    assert outcome["status"] == "Completed"
    assert outcome["inference_id"] == submission["inference_id"]
    assert cluster.xcom(dag_id, run_id, "log_predictions") == ["setosa", "versicolor", "virginica"]


def check_push_example(cluster: AirflowCluster, run_id: str) -> None:
    """``example_sagemaker_async_push``: success, its trigger watched the notification queue, the labels."""
    dag_id = "example_sagemaker_async_push"
    assert cluster.run_state(dag_id, run_id) == "success"
    assert cluster.xcom(dag_id, run_id, "predict")["status"] == "Completed"
    assert cluster.xcom(dag_id, run_id, "log_predictions") == ["setosa", "versicolor", "virginica"]
    logs = cluster.task_log_dir(dag_id, run_id, "predict").glob("attempt=*.log.trigger.*.log")
    logged = "".join(path.read_text(errors="replace") for path in logs)
    assert "notifications http" in logged  # the trigger read the queue (a poll may still have been first)


def check_realtime_example(cluster: AirflowApi, run_id: str) -> None:
    """``example_sagemaker_realtime``: success, 24 predictions in one call, accuracy >= 0.8."""
    dag_id = "example_sagemaker_realtime"
    assert cluster.run_state(dag_id, run_id) == "success"
    assert len(cluster.xcom(dag_id, run_id, "predict")["output"]["predictions"]) == 24
    assert cluster.xcom(dag_id, run_id, "report_accuracy")["accuracy"] >= 0.8


def check_streaming_example(cluster: AirflowApi, run_id: str) -> None:
    """``example_sagemaker_streaming``: success, the answer arrived in parts and was written to S3."""
    dag_id = "example_sagemaker_streaming"
    assert cluster.run_state(dag_id, run_id) == "success"
    outcome = cluster.xcom(dag_id, run_id, "generate")
    assert outcome["parts"] > 1
    assert outcome["output_location"].startswith("s3://")
    assert cluster.xcom(dag_id, run_id, "report")["words"] > 0


#: Each example DAG the end-to-end tests run, and its check.
EXAMPLE_CHECKS: dict[str, Callable[[AirflowApi, str], None]] = {
    "example_sagemaker_async_inference": check_inference_example,
    "example_sagemaker_async_batch": check_batch_example,
    "example_sagemaker_async_failure": check_failure_example,
    "example_sagemaker_async_sensor": check_sensor_example,
}
#: The examples that need more of the backend than ``iris-endpoint`` (a notification queue, real-time
#: endpoints), run by the Celery topology's suite, which sets those up.
MORE_EXAMPLE_CHECKS: dict[str, Callable[[AirflowCluster, str], None]] = {
    "example_sagemaker_async_push": check_push_example,
    "example_sagemaker_realtime": check_realtime_example,
    "example_sagemaker_streaming": check_streaming_example,
}
