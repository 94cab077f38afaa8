"""
End to end: the example DAGs under a real ``airflow standalone`` (scheduler, dag-processor, triggerer,
api-server; SQLite, LocalExecutor) on 127.0.0.1, against the local SageMaker async backend.

One standalone serves the whole module (it takes ~30-60 s to start on two cores). The DAGs are triggered
and read back through the public REST API (``/api/v2``) with a token from the simple auth manager. The
standalone runs in its own process group; it and every process under it are killed at the end whatever
happens (``tests/e2e/airflow_cluster.py``).
"""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING

import pytest

from tests.e2e.airflow_cluster import AirflowApi, airflow_cli, airflow_environment, free_port, stop_tree, wait_for

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from airflow_sagemaker_async.local.backend import LocalEndpoint, LocalSageMakerAsyncBackend

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(420)]

STARTUP_TIMEOUT = 180.0
RUN_TIMEOUT = 180.0
TERMINAL = {"success", "failed"}


class Standalone(AirflowApi):
    """A running ``airflow standalone`` and a small client of its REST API."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, home: Path, log_path: Path) -> None:
        super().__init__(port, home)
        self.process = process
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def exited(self) -> str | None:
        if self.process.poll() is None:
            return None
        return f"airflow standalone exited ({self.process.returncode})"

    def stop(self) -> None:
        """SIGTERM the standalone and every process under it, SIGKILL what is left after 30 s."""
        stop_tree(self.process, grace=30)


@pytest.fixture(scope="module")
def standalone(
    tmp_path_factory: pytest.TempPathFactory,
    sagemaker_async_backend: LocalSageMakerAsyncBackend,
    sagemaker_async_iris_endpoint: LocalEndpoint,
) -> Iterator[Standalone]:
    home = tmp_path_factory.mktemp("standalone-airflow")
    port = free_port()
    env = airflow_environment(home, port, sagemaker_async_backend, sagemaker_async_iris_endpoint)
    # standalone starts the scheduler's and the triggerer's log servers, which listen on every interface (no
    # setting changes that): at least keep them off the fixed default ports 8793 / 8794.
    env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] = str(free_port())
    env["AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"] = str(free_port())
    log_path = home / "standalone.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [airflow_cli(), "standalone"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = Standalone(process, port, home, log_path)
    try:
        wait_for("the api-server to answer", server.answers, STARTUP_TIMEOUT, server, interval=1)
        wait_for("the admin password", server.password_file().exists, 60, server)
        server.login()
        wait_for(
            "the dag-processor to parse the 4 example DAGs",
            lambda: server.request("GET", "/api/v2/dags?dag_id_pattern=example_sagemaker_async")["total_entries"] == 4,
            STARTUP_TIMEOUT,
            server,
            interval=1,
        )
        yield server
    finally:
        server.stop()


#: The model's answer delay for each run (CustomAttributes ``sleep=N`` of the local iris model). Long enough to
#: see the inference task deferred, and to stay clear of an Airflow 3.3 scheduler race: when the scheduler
#: drains the executor's "success" event of the deferring attempt only after the trigger fired and the resumed
#: attempt is already running, it marks the task failed ("state mismatch"; apache/airflow#71580, #72716, fixes
#: open). On this 2-core machine, with four DAGs at once, that event came up to ~11 s after the deferral, and
#: mapped tasks whose model answered within 4 s were failed that way.
MODEL_SLEEP = {"custom_attributes": "sleep=15"}


@pytest.fixture(scope="module")
def runs(standalone: Standalone) -> dict[str, str]:
    """Trigger the four examples at once; return their run ids."""
    return {
        dag_id: standalone.trigger(dag_id, MODEL_SLEEP)
        for dag_id in (
            "example_sagemaker_async_inference",
            "example_sagemaker_async_batch",
            "example_sagemaker_async_failure",
            "example_sagemaker_async_sensor",
        )
    }


@pytest.fixture(scope="module")
def finished(standalone: Standalone, runs: dict[str, str]) -> dict[str, str]:
    """Wait until every triggered run is finished; return the state of each."""
    states: dict[str, str] = {}

    def all_finished() -> bool:
        for dag_id, run_id in runs.items():
            states[dag_id] = standalone.run_state(dag_id, run_id)
        return all(state in TERMINAL for state in states.values())

    wait_for(f"the runs to finish ({states})", all_finished, RUN_TIMEOUT, standalone, interval=1)
    return states


def test_inference_task_waits_in_deferred_state_while_the_model_works(
    standalone: Standalone, runs: dict[str, str]
) -> None:
    dag_id, run_id = "example_sagemaker_async_inference", runs["example_sagemaker_async_inference"]

    seen = wait_for(
        "predict to be deferred",
        lambda: standalone.task_states(dag_id, run_id).get(("predict", -1)) == "deferred",
        90,
        standalone,
        interval=0.3,
    )

    assert seen
    # The trigger ran in the triggerer process, which writes what a trigger logs beside the task's log, in
    # <task log>.trigger.<triggerer job id>.log.
    task_logs = standalone.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / "task_id=predict"

    def trigger_log() -> str:
        return "".join(path.read_text(errors="replace") for path in task_logs.glob("attempt=*.log.trigger.*.log"))

    wait_for("the trigger's log", lambda: "Trigger fired event" in trigger_log(), 90, standalone)
    logged = trigger_log()
    assert "Watching inference example_sagemaker_async_inference.predict-" in logged
    assert "SageMakerAsyncInferenceTrigger" in logged or "success after" in logged
    assert "Starting the triggerer" in standalone.log()


def test_inference_dag_succeeds_with_the_outcome_and_accuracy_in_xcom(
    standalone: Standalone, runs: dict[str, str], finished: dict[str, str]
) -> None:
    dag_id, run_id = "example_sagemaker_async_inference", runs["example_sagemaker_async_inference"]

    assert finished[dag_id] == "success"
    outcome = standalone.xcom(dag_id, run_id, "predict")
    assert outcome["status"] == "Completed"
    assert outcome["endpoint_name"] == "iris-endpoint"
    assert outcome["output_location"].startswith("s3://sagemaker-async-local/iris-endpoint/output/")
    assert len(outcome["output"]["predictions"]) == 24
    assert outcome["detected_at"] > outcome["submitted_at"]
    score = standalone.xcom(dag_id, run_id, "report_accuracy")
    assert score["total"] == 24
    assert score["accuracy"] >= 0.8


def test_batch_dag_counts_three_completed_and_one_failed_input(
    standalone: Standalone, runs: dict[str, str], finished: dict[str, str]
) -> None:
    dag_id, run_id = "example_sagemaker_async_batch", runs["example_sagemaker_async_batch"]

    assert finished[dag_id] == "success"
    states = standalone.task_states(dag_id, run_id)
    assert sorted(state for (task_id, _), state in states.items() if task_id == "predict") == ["success"] * 4
    assert standalone.xcom(dag_id, run_id, "summarize") == {"total": 4, "Completed": 3, "Failed": 1}
    failed = [standalone.xcom(dag_id, run_id, "predict", i) for i in range(4)]
    assert [o["status"] for o in failed].count("Failed") == 1


def test_failure_dag_fails_the_strict_task_and_runs_the_reactions(
    standalone: Standalone, runs: dict[str, str], finished: dict[str, str]
) -> None:
    dag_id, run_id = "example_sagemaker_async_failure", runs["example_sagemaker_async_failure"]

    assert finished[dag_id] == "success"
    assert standalone.task_states(dag_id, run_id) == {
        ("predict_strict", -1): "failed",
        ("on_failure", -1): "success",
        ("predict_tolerant", -1): "success",
        ("handle_outcome", -1): "success",
    }
    handled = standalone.xcom(dag_id, run_id, "handle_outcome")
    assert handled["status"] == "Failed"
    assert "Row 1 must hold exactly 4 numbers" in handled["failure_reason"]


def test_sensor_dag_waits_for_the_submitted_inference_and_gets_its_predictions(
    standalone: Standalone, runs: dict[str, str], finished: dict[str, str]
) -> None:
    dag_id, run_id = "example_sagemaker_async_sensor", runs["example_sagemaker_async_sensor"]

    assert finished[dag_id] == "success"
    submission = standalone.xcom(dag_id, run_id, "submit")
    outcome = standalone.xcom(dag_id, run_id, "wait_for_result")
    assert submission["status"] == "InProgress"
    assert outcome["status"] == "Completed"
    assert outcome["inference_id"] == submission["inference_id"]
    assert standalone.xcom(dag_id, run_id, "log_predictions") == ["setosa", "versicolor", "virginica"]
