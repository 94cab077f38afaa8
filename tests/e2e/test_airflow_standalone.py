"""
End to end: the example DAGs under a real ``airflow standalone`` (scheduler, dag-processor, triggerer,
api-server; SQLite, LocalExecutor) on 127.0.0.1, against the local SageMaker async backend.

One standalone serves the whole module (it takes ~30-60 s to start on two cores). The DAGs are triggered
and read back through the public REST API (``/api/v2``) with a token from the simple auth manager. Every
process of the standalone runs in its own process group, killed at the end whatever happens.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_sagemaker_async.local.backend import LocalEndpoint, LocalSageMakerAsyncBackend

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(420)]

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "example_dags"
STARTUP_TIMEOUT = 180.0
RUN_TIMEOUT = 180.0
TERMINAL = {"success", "failed"}


def _airflow_cli() -> str:
    return str(Path(sys.executable).with_name("airflow"))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Standalone:
    """A running ``airflow standalone`` and a small client of its REST API."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, home: Path, log_path: Path) -> None:
        self.process = process
        self.base = f"http://127.0.0.1:{port}"
        self.home = home
        self.log_path = log_path
        self.token: str | None = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def request(self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 10) -> Any:
        import urllib.request

        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, headers=headers, method=method)
        with urllib.request.urlopen(request, timeout=timeout) as response:  # 127.0.0.1 only
            return json.loads(response.read() or b"null")

    def answers(self) -> bool:
        try:
            self.request("GET", "/api/v2/monitor/health", timeout=2)
        except OSError:
            return False
        return True

    def login(self) -> None:
        passwords = json.loads((self.home / "simple_auth_manager_passwords.json.generated").read_text())
        answer = self.request("POST", "/auth/token", {"username": "admin", "password": passwords["admin"]})
        self.token = answer["access_token"]

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        run = self.request("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}})
        return str(run["dag_run_id"])

    def run_state(self, dag_id: str, run_id: str) -> str:
        return str(self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"])

    def task_states(self, dag_id: str, run_id: str) -> dict[tuple[str, int], str | None]:
        answer = self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=100")
        return {(ti["task_id"], ti["map_index"]): ti["state"] for ti in answer["task_instances"]}

    def xcom(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> Any:
        path = (
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value"
            f"?map_index={map_index}&deserialize=true"
        )
        return self.request("GET", path)["value"]

    def stop(self) -> None:
        """SIGTERM the whole process group, SIGKILL what is left after 30 s."""
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        except ProcessLookupError:
            pass
        # Children that outlived their parent stay in the group: make sure none is left.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)


def wait_for(what: str, condition: Any, timeout: float, standalone: Standalone, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if standalone.process.poll() is not None:
            pytest.fail(f"airflow standalone exited ({standalone.process.returncode}) while waiting for {what}")
        value = condition()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}; log tail:\n{standalone.log()[-4000:]}")


@pytest.fixture(scope="module")
def standalone(
    tmp_path_factory: pytest.TempPathFactory,
    sagemaker_async_backend: LocalSageMakerAsyncBackend,
    sagemaker_async_iris_endpoint: LocalEndpoint,
) -> Iterator[Standalone]:
    home = tmp_path_factory.mktemp("standalone-airflow")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__DAGS_FOLDER": str(EXAMPLES_DIR),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            # The two settings that keep the api-server on 127.0.0.1 and let tasks reach it on our port.
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW_CONN_AWS_DEFAULT": sagemaker_async_backend.airflow_connection_env(),
            "SAGEMAKER_ASYNC_ENDPOINT": sagemaker_async_iris_endpoint.endpoint_name,
            "PYTHONUNBUFFERED": "1",
            # standalone starts its components as `airflow ...`: find this environment's script first.
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        }
    )
    log_path = home / "standalone.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [_airflow_cli(), "standalone"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = Standalone(process, port, home, log_path)
    try:
        wait_for("the api-server to answer", server.answers, STARTUP_TIMEOUT, server, interval=1)
        wait_for("the admin password", (home / "simple_auth_manager_passwords.json.generated").exists, 60, server)
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
