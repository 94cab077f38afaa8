"""
The example DAGs: they load without import errors with the tasks the docs describe, and two of them run
under a real Airflow (``airflow dags test`` in a subprocess, its own SQLite home, started by
``airflow_sagemaker_async.local.harness``) against the local backend: the inference DAG deferring and resuming
with the outcome in XCom, the failure DAG ending as designed. The runs are read back through Airflow's models.
The examples keep the plugin's default poll schedule; ``[sagemaker_async] poll_interval`` speeds them up here.
"""

from __future__ import annotations

import ast
import inspect
import re
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from airflow_sagemaker_async.local.harness import DagRunRecord, MetadataReader, dags_test, migrate_db
from tests.e2e.airflow_cluster import EXAMPLES_DIR, examples_environment

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_sagemaker_async.local.backend import LocalEndpoint, LocalSageMakerAsyncBackend

# Airflow reads example_dags/.airflowignore with pathspec's "gitwildmatch" patterns, which pathspec now
# deprecates; the warning is attributed to typing_extensions, so pyproject's airflow.* filter misses it.
pytestmark = pytest.mark.filterwarnings("ignore:GitWildMatchPattern:DeprecationWarning")

EXPECTED_TASKS = {
    "example_sagemaker_async_inference": {"load_samples", "predict", "report_accuracy"},
    "example_sagemaker_async_batch": {"upload_inputs", "predict", "summarize"},
    "example_sagemaker_async_batch_scoring": {"upload_inputs", "score", "report"},
    "example_sagemaker_async_failure": {"predict_strict", "on_failure", "predict_tolerant", "handle_outcome"},
    "example_sagemaker_async_sensor": {"submit", "wait_for_result", "log_predictions"},
    "example_sagemaker_async_push": {"predict", "log_predictions"},
    "example_sagemaker_realtime": {"load_samples", "predict", "report_accuracy"},
    "example_sagemaker_streaming": {"generate", "report"},
    "example_sagemaker_async_assets_score": {"upload_inputs", "score"},
    "example_sagemaker_async_assets_report": {"report"},
    "example_sagemaker_async_notifications": {"handle_result"},
}
#: The examples scheduled on an asset (every other one runs only when triggered).
ASSET_SCHEDULED = {"example_sagemaker_async_assets_report", "example_sagemaker_async_notifications"}


@pytest.fixture(scope="module")
def dagbag() -> Any:
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(EXAMPLES_DIR))


def test_every_example_dag_loads_without_import_errors(dagbag: Any) -> None:
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == set(EXPECTED_TASKS)


@pytest.mark.parametrize("dag_id", sorted(EXPECTED_TASKS))
def test_example_dag_has_the_documented_tasks_no_schedule_and_its_docstring_as_doc(dagbag: Any, dag_id: str) -> None:
    dag = dagbag.dags[dag_id]

    assert set(dag.task_ids) == EXPECTED_TASKS[dag_id]
    # schedule=None: runs only when triggered; or on an asset's events
    expected = "AssetTriggeredTimetable" if dag_id in ASSET_SCHEDULED else "NullTimetable"
    assert type(dag.timetable).__name__ == expected
    # The module docstring that explains the DAG is its doc_md, shown in the UI.
    assert dag.doc_md
    assert inspect.cleandoc(dag.doc_md) == ast.get_docstring(ast.parse(Path(dag.fileloc).read_text()))
    assert "sagemaker-async" in dag.tags


def test_airflowignore_keeps_the_demo_runner_and_data_out_of_the_dag_folder(dagbag: Any) -> None:
    parsed = {Path(dag.fileloc).name for dag in dagbag.dags.values()}

    assert parsed == {
        f"{dag_id}.py" for dag_id in EXPECTED_TASKS if not dag_id.startswith("example_sagemaker_async_assets_")
    } | {"example_sagemaker_async_assets.py"}


def test_batch_dag_maps_over_the_uploaded_inputs_and_tolerates_model_errors(dagbag: Any) -> None:
    predict = dagbag.dags["example_sagemaker_async_batch"].get_task("predict")

    assert predict.partial_kwargs["fail_on_model_error"] is False
    assert set(predict.expand_input.value) == {"input_location"}
    assert predict.upstream_task_ids == {"upload_inputs"}


def test_realtime_and_streaming_dags_invoke_on_the_worker_without_retries(dagbag: Any) -> None:
    from airflow_sagemaker_async import (
        SageMakerInvokeEndpointOperator,
        SageMakerInvokeEndpointWithResponseStreamOperator,
    )

    predict = dagbag.dags["example_sagemaker_realtime"].get_task("predict")
    generate = dagbag.dags["example_sagemaker_streaming"].get_task("generate")

    assert isinstance(predict, SageMakerInvokeEndpointOperator)
    assert isinstance(generate, SageMakerInvokeEndpointWithResponseStreamOperator)
    assert (predict.retries, generate.retries) == (0, 0)  # neither call is idempotent
    assert predict.output_format == "json"
    assert generate.output_location.startswith("s3://")
    assert generate.downstream_task_ids == {"report"}


def test_failure_dag_reacts_with_one_failed_downstream_of_the_strict_task(dagbag: Any) -> None:
    dag = dagbag.dags["example_sagemaker_async_failure"]

    assert dag.get_task("on_failure").trigger_rule == "one_failed"
    assert dag.get_task("on_failure").upstream_task_ids == {"predict_strict"}
    assert dag.get_task("predict_strict").fail_on_model_error is True
    assert dag.get_task("predict_tolerant").fail_on_model_error is False


# -- running under Airflow --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def airflow_env(
    tmp_path_factory: pytest.TempPathFactory,
    sagemaker_async_backend: LocalSageMakerAsyncBackend,
    sagemaker_async_iris_endpoint: LocalEndpoint,
) -> dict[str, str]:
    """A migrated SQLite Airflow home of its own, the example DAGs, ``aws_default`` pointing at the backend."""
    home = tmp_path_factory.mktemp("example-dags-airflow")
    env = examples_environment(home, sagemaker_async_backend, sagemaker_async_iris_endpoint)
    migrate_db(env, home / "db-migrate.log", timeout=180)
    return env


@pytest.fixture(scope="module")
def metadata(airflow_env: dict[str, str]) -> Iterator[MetadataReader]:
    with MetadataReader(airflow_env) as reader:
        yield reader


def run_example(
    env: dict[str, str], metadata: MetadataReader, dag_id: str, conf: dict[str, Any] | None = None
) -> tuple[int | None, str, DagRunRecord]:
    """``airflow dags test`` of one example: its exit code, its log, and the run as Airflow recorded it."""
    log_file = Path(env["AIRFLOW_HOME"]) / f"{dag_id}.log"
    code = dags_test(env, dag_id, log_file, conf=conf, timeout=240)
    log = log_file.read_text(errors="replace")
    run = metadata.last_run(dag_id)
    assert run is not None, log[-5000:]
    return code, log, run


@pytest.mark.slow
def test_inference_dag_defers_resumes_and_pushes_the_outcome_with_predictions(
    airflow_env: dict[str, str], metadata: MetadataReader, sagemaker_async_backend: LocalSageMakerAsyncBackend
) -> None:
    # The iris model answers after 1.5 s: the trigger (first check after poll_interval 0.5 s) must check more
    # than once before it sees the output.
    code, log, run = run_example(
        airflow_env, metadata, "example_sagemaker_async_inference", {"custom_attributes": "sleep=1.5"}
    )

    assert code == 0, log[-5000:]
    assert run.state == "success"
    assert run.task_states == {
        ("load_samples", -1): "success",
        ("predict", -1): "success",
        ("report_accuracy", -1): "success",
    }
    # Deferred to the trigger, which waited, then resumed on the worker:
    assert re.search(r"Pausing task as DEFERRED.*task_id=predict", log)
    assert "[DAG TEST] running trigger in line" in log
    checks = re.search(r"Inference example_sagemaker_async_inference\.predict-\w+: Completed after (\d+) checks", log)
    assert checks, log[-5000:]
    assert int(checks.group(1)) >= 2

    outcome = run.xcom("predict")
    assert outcome["status"] == "Completed"
    assert outcome["endpoint_name"] == "iris-endpoint"
    assert outcome["inference_id"].startswith("example_sagemaker_async_inference.predict-")
    assert outcome["output_location"].startswith("s3://sagemaker-async-local/iris-endpoint/output/")
    assert outcome["failure_location"].startswith("s3://sagemaker-async-local/iris-endpoint/failure/")
    waited = datetime.fromisoformat(outcome["detected_at"]) - datetime.fromisoformat(outcome["submitted_at"])
    assert waited.total_seconds() >= 1.5
    assert outcome["output_content_type"] == "application/json"
    assert len(outcome["output"]["predictions"]) == 24
    assert run.xcom("report_accuracy")["total"] == 24
    assert run.xcom("report_accuracy")["accuracy"] >= 0.8
    served = [
        r for r in sagemaker_async_backend.invocations("iris-endpoint") if r.inference_id == outcome["inference_id"]
    ]
    assert [(r.status.value, r.custom_attributes) for r in served] == [("Completed", "sleep=1.5")]


@pytest.mark.slow
def test_failure_dag_fails_the_strict_task_with_the_models_message_and_reacts(
    airflow_env: dict[str, str], metadata: MetadataReader
) -> None:
    _, log, run = run_example(airflow_env, metadata, "example_sagemaker_async_failure")

    assert run.task_states == {
        ("predict_strict", -1): "failed",
        ("on_failure", -1): "success",
        ("predict_tolerant", -1): "success",
        ("handle_outcome", -1): "success",
    }, log[-5000:]
    assert run.state == "success"  # the failure was handled: the run's last tasks succeeded
    assert re.search(r"SageMakerAsyncInferenceError: .*Row 1 must hold exactly 4 numbers", log)
    assert run.xcom("predict_strict") is None
    assert run.xcom("predict_tolerant")["status"] == "Failed"
    assert "Row 1 must hold exactly 4 numbers" in run.xcom("handle_outcome")["failure_reason"]
