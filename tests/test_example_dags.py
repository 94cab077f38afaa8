"""
The example DAGs: they load without import errors with the tasks the docs describe, and two of them run
under a real Airflow (``airflow dags test`` in a subprocess, its own SQLite home) against the local backend:
the inference DAG deferring and resuming with the outcome in XCom, the failure DAG ending as designed.
"""

from __future__ import annotations

import ast
import inspect
import json
import os
import re
import sqlite3
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from airflow_sagemaker_async.local.backend import LocalEndpoint, LocalSageMakerAsyncBackend

# Airflow reads example_dags/.airflowignore with pathspec's "gitwildmatch" patterns, which pathspec now
# deprecates; the warning is attributed to typing_extensions, so pyproject's airflow.* filter misses it.
pytestmark = pytest.mark.filterwarnings("ignore:GitWildMatchPattern:DeprecationWarning")

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "example_dags"
EXPECTED_TASKS = {
    "example_sagemaker_async_inference": {"load_samples", "predict", "report_accuracy"},
    "example_sagemaker_async_batch": {"upload_inputs", "predict", "summarize"},
    "example_sagemaker_async_failure": {"predict_strict", "on_failure", "predict_tolerant", "handle_outcome"},
    "example_sagemaker_async_sensor": {"submit", "wait_for_result", "log_predictions"},
}
AIRFLOW = str(Path(sys.executable).with_name("airflow"))


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
    assert type(dag.timetable).__name__ == "NullTimetable"  # schedule=None: runs only when triggered
    # The module docstring that explains the DAG is its doc_md, shown in the UI.
    assert dag.doc_md
    assert inspect.cleandoc(dag.doc_md) == ast.get_docstring(ast.parse(Path(dag.fileloc).read_text()))
    assert "sagemaker-async" in dag.tags


def test_airflowignore_keeps_the_demo_runner_and_data_out_of_the_dag_folder(dagbag: Any) -> None:
    parsed = {Path(dag.fileloc).name for dag in dagbag.dags.values()}

    assert parsed == {f"{dag_id}.py" for dag_id in EXPECTED_TASKS}


def test_batch_dag_maps_over_the_uploaded_inputs_and_tolerates_model_errors(dagbag: Any) -> None:
    predict = dagbag.dags["example_sagemaker_async_batch"].get_task("predict")

    assert predict.partial_kwargs["fail_on_model_error"] is False
    assert set(predict.expand_input.value) == {"input_location"}
    assert predict.upstream_task_ids == {"upload_inputs"}


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
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__DAGS_FOLDER": str(EXAMPLES_DIR),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW_CONN_AWS_DEFAULT": sagemaker_async_backend.airflow_connection_env(),
            "SAGEMAKER_ASYNC_ENDPOINT": sagemaker_async_iris_endpoint.endpoint_name,
        }
    )
    migrate = subprocess.run(
        [AIRFLOW, "db", "migrate"], env=env, capture_output=True, text=True, timeout=180, check=False
    )
    assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]
    return env


def dags_test(env: dict[str, str], dag_id: str, conf: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
    command = [AIRFLOW, "dags", "test", dag_id]
    if conf is not None:
        command += ["--conf", json.dumps(conf)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=240, check=False)


def last_run(env: dict[str, str], dag_id: str) -> tuple[str, dict[str, str], dict[str, Any]]:
    """(run state, task state by task_id, return_value XCom by task_id) of the latest run of ``dag_id``."""
    with sqlite3.connect(Path(env["AIRFLOW_HOME"]) / "airflow.db") as db:
        run_id, state = db.execute(
            "SELECT run_id, state FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (dag_id,)
        ).fetchone()
        states = dict(
            db.execute("SELECT task_id, state FROM task_instance WHERE dag_id = ? AND run_id = ?", (dag_id, run_id))
        )
        xcoms = {
            task_id: json.loads(value)
            for task_id, value in db.execute(
                "SELECT task_id, value FROM xcom WHERE dag_id = ? AND run_id = ? AND key = 'return_value'",
                (dag_id, run_id),
            )
        }
    return state, states, xcoms


@pytest.mark.slow
def test_inference_dag_defers_resumes_and_pushes_the_outcome_with_predictions(
    airflow_env: dict[str, str], sagemaker_async_backend: LocalSageMakerAsyncBackend
) -> None:
    # The iris model answers after 1.5 s: the trigger must check more than once before it sees the output.
    result = dags_test(airflow_env, "example_sagemaker_async_inference", {"custom_attributes": "sleep=1.5"})
    log = result.stdout + result.stderr

    assert result.returncode == 0, log[-5000:]
    run_state, states, xcoms = last_run(airflow_env, "example_sagemaker_async_inference")
    assert run_state == "success"
    assert states == {"load_samples": "success", "predict": "success", "report_accuracy": "success"}
    # Deferred to the trigger, which waited, then resumed on the worker:
    assert re.search(r"Pausing task as DEFERRED.*task_id=predict", log)
    assert "[DAG TEST] running trigger in line" in log
    checks = re.search(r"Inference example_sagemaker_async_inference\.predict-\w+: success after (\d+) checks", log)
    assert checks, log[-5000:]
    assert int(checks.group(1)) >= 2

    outcome = xcoms["predict"]
    assert outcome["status"] == "Completed"
    assert outcome["endpoint_name"] == "iris-endpoint"
    assert outcome["inference_id"].startswith("example_sagemaker_async_inference.predict-")
    assert outcome["output_location"].startswith("s3://sagemaker-async-local/iris-endpoint/output/")
    assert outcome["failure_location"].startswith("s3://sagemaker-async-local/iris-endpoint/failure/")
    waited = datetime.fromisoformat(outcome["detected_at"]) - datetime.fromisoformat(outcome["submitted_at"])
    assert waited.total_seconds() >= 1.5
    assert outcome["output_content_type"] == "application/json"
    assert len(outcome["output"]["predictions"]) == 24
    assert xcoms["report_accuracy"]["total"] == 24
    assert xcoms["report_accuracy"]["accuracy"] >= 0.8
    served = [
        r for r in sagemaker_async_backend.invocations("iris-endpoint") if r.inference_id == outcome["inference_id"]
    ]
    assert [(r.status.value, r.custom_attributes) for r in served] == [("Completed", "sleep=1.5")]


@pytest.mark.slow
def test_failure_dag_fails_the_strict_task_with_the_models_message_and_reacts(airflow_env: dict[str, str]) -> None:
    result = dags_test(airflow_env, "example_sagemaker_async_failure")
    log = result.stdout + result.stderr

    run_state, states, xcoms = last_run(airflow_env, "example_sagemaker_async_failure")
    assert states == {
        "predict_strict": "failed",
        "on_failure": "success",
        "predict_tolerant": "success",
        "handle_outcome": "success",
    }, log[-5000:]
    assert run_state == "success"  # the failure was handled: the run's last tasks succeeded
    assert re.search(r"SageMakerAsyncInferenceError: .*Row 1 must hold exactly 4 numbers", log)
    assert "predict_strict" not in xcoms
    assert xcoms["predict_tolerant"]["status"] == "Failed"
    assert "Row 1 must hold exactly 4 numbers" in xcoms["handle_outcome"]["failure_reason"]
