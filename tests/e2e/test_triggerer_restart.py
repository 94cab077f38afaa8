"""
Reliability end to end: the triggerer is SIGKILLed while it watches an inference, then started again.

A real Airflow on 127.0.0.1 (``airflow scheduler``, ``dag-processor``, ``api-server`` and ``triggerer`` as
separate processes, so that the triggerer alone can die; SQLite, LocalExecutor, as ``airflow standalone`` sets
them up) runs ``example_sagemaker_async_inference`` against the local SageMaker async backend, with the model
slowed down. Once ``predict`` is deferred and its trigger logs that it watches the inference, the triggerer's
whole process tree gets SIGKILL; a new ``airflow triggerer`` starts, adopts the trigger once the dead one's
heartbeat is older than ``[triggerer] triggerer_health_check_threshold``, and rebuilds it from its row alone.

What must hold: the task ends ``success`` with the model's answer, the endpoint saw exactly one invocation (the
deferred task is not run again from the start, and a trigger never invokes), and the trigger row (id, kwargs
with the deadline) is the one written at the deferral, byte for byte.
"""

from __future__ import annotations

import re
import signal
import time
import urllib.error
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psutil
import pytest

from airflow_sagemaker_async.common.submission import default_inference_id
from airflow_sagemaker_async.local.harness import AirflowCluster, MetadataReader, free_port, signal_tree, wait_for
from tests.e2e.airflow_cluster import examples_environment

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from airflow_sagemaker_async.local.backend import LocalEndpoint, LocalSageMakerAsyncBackend
    from airflow_sagemaker_async.local.records import InvocationRecord

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(480)]

DAG_ID = "example_sagemaker_async_inference"
STARTUP_TIMEOUT = 180.0
RUN_TIMEOUT = 180.0
TERMINAL = {"success", "failed"}

#: A triggerer whose heartbeat is older than this (seconds; Airflow's default 30) counts as dead, and its
#: triggers go to another triggerer. Halved so that the new triggerer adopts the trigger sooner.
HEALTH_CHECK_THRESHOLD = 15

#: How long the model takes (CustomAttributes ``sleep=N`` of the local iris model), seconds. It outlasts, with
#: a wide margin for a loaded machine, deferral -> kill (~2 s) -> adoption by the new triggerer (10-25 s:
#: its start, and the dead one's last heartbeat growing older than HEALTH_CHECK_THRESHOLD), so that the
#: rebuilt trigger really waits for the model; and it keeps the task clear of the Airflow 3.3 scheduler race
#: with fast triggers (docs/known-issues.md).
MODEL_SLEEP_SECONDS = 60

WATCHING = re.compile(r"Watching inference (?P<inference_id>\S+): output .*?, deadline (?P<deadline>[0-9T:.+Z-]+)")


class Cluster(AirflowCluster):
    """The harness's cluster, and what this test reads of the trigger and its row (through Airflow's models)."""

    def __init__(self, env: Mapping[str, str]) -> None:
        super().__init__(env)
        self.metadata = MetadataReader(env)

    def stop(self, grace: float = 20.0) -> None:
        self.metadata.close()
        super().stop(grace)

    def dag_parsed(self) -> bool:
        try:
            self.request("GET", f"/api/v2/dags/{DAG_ID}")
        except urllib.error.HTTPError:
            return False
        return True

    def triggerer_healthy(self) -> bool:
        health = self.request("GET", "/api/v2/monitor/health")
        return bool(health["triggerer"]["status"] == "healthy")

    def trigger_logs(self, run_id: str) -> dict[int, str]:
        """The trigger's log of each triggerer job that ran it: ``<task log>.trigger.<job id>.log``."""
        logs = self.task_log_dir(DAG_ID, run_id, "predict")
        return {
            int(path.name.rsplit(".", 2)[-2]): path.read_text(errors="replace")
            for path in logs.glob("attempt=*.log.trigger.*.log")
        }

    def trigger_row(self, trigger_id: int) -> tuple[str, int | None] | None:
        """The ``trigger`` row as stored: its encrypted kwargs (Fernet: re-written means different) and owner."""
        row = self.metadata.trigger(trigger_id)
        return None if row is None else (row.encrypted_kwargs, row.triggerer_id)

    def trigger_kwargs(self, trigger_id: int) -> dict[str, Any] | None:
        """The trigger's kwargs decrypted by Airflow itself (its model, the cluster's Fernet key)."""
        row = self.metadata.trigger(trigger_id)
        return None if row is None else row.kwargs


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
    sagemaker_async_backend: LocalSageMakerAsyncBackend,
    sagemaker_async_iris_endpoint: LocalEndpoint,
) -> Iterator[Cluster]:
    home = tmp_path_factory.mktemp("triggerer-restart-airflow")
    env = examples_environment(
        home,
        sagemaker_async_backend,
        sagemaker_async_iris_endpoint,
        api_port=free_port(),
        extra={"AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": str(HEALTH_CHECK_THRESHOLD)},
    )
    with Cluster(env) as server:
        server.migrate_db()
        server.metadata.start()  # imports Airflow while the components start
        server.start_components(STARTUP_TIMEOUT)
        wait_for(f"the dag-processor to parse {DAG_ID}", server.dag_parsed, STARTUP_TIMEOUT, server, interval=1)
        wait_for("the triggerer to heartbeat", server.triggerer_healthy, STARTUP_TIMEOUT, server, interval=1)
        yield server


@dataclass
class Restart:
    """What was seen around the triggerer's restart."""

    run_id: str
    inference_id: str
    trigger_id: int
    first_job_id: int
    killed_pids: list[int]
    survivors: list[int]
    state_after_kill: str | None
    record_at_kill: InvocationRecord
    row_before: tuple[str, int | None] | None
    kwargs_before: dict[str, Any] | None
    second_job_id: int = 0
    row_after: tuple[str, int | None] | None = None
    record_at_adoption: InvocationRecord | None = None
    seconds_to_adoption: float = 0.0
    run_state: str = ""
    new_invocations: list[InvocationRecord] = field(default_factory=list)


def watching_jobs(cluster: Cluster, run_id: str) -> dict[int, str]:
    """The trigger logs that show the trigger running: the job id of each triggerer and its log."""
    return {job_id: log for job_id, log in cluster.trigger_logs(run_id).items() if WATCHING.search(log)}


@pytest.fixture(scope="module")
def restart(cluster: Cluster, sagemaker_async_backend: LocalSageMakerAsyncBackend) -> Restart:
    """Trigger the DAG, SIGKILL the triggerer while the trigger watches, start a new one, wait for the run."""
    invocations_before = len(sagemaker_async_backend.invocations("iris-endpoint"))
    run_id = cluster.trigger(DAG_ID, {"custom_attributes": f"sleep={MODEL_SLEEP_SECONDS}"})
    inference_id = default_inference_id(DAG_ID, "predict", run_id)

    wait_for(
        "predict to be deferred",
        lambda: cluster.task_states(DAG_ID, run_id).get(("predict", -1)) == "deferred",
        150,
        cluster,
        interval=0.3,
    )
    trigger_id = int(cluster.task_instance(DAG_ID, run_id, "predict")["trigger"]["id"])
    (first_job_id,) = wait_for(
        "the triggerer to log that it watches the inference", lambda: watching_jobs(cluster, run_id), 60, cluster
    )

    # SIGKILL the triggerer and every process under it (its trigger runner), all at once.
    triggerer = cluster.forget("triggerer")
    killed = signal_tree(triggerer.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    _, alive = psutil.wait_procs(killed, timeout=10)
    (record_at_kill,) = (
        r for r in sagemaker_async_backend.invocations("iris-endpoint") if r.inference_id == inference_id
    )
    seen = Restart(
        run_id=run_id,
        inference_id=inference_id,
        trigger_id=trigger_id,
        first_job_id=first_job_id,
        killed_pids=[p.pid for p in killed],
        survivors=[p.pid for p in alive],
        state_after_kill=cluster.task_states(DAG_ID, run_id).get(("predict", -1)),
        record_at_kill=record_at_kill,
        row_before=cluster.trigger_row(trigger_id),
        kwargs_before=cluster.trigger_kwargs(trigger_id),
    )

    cluster.start("triggerer-2", "triggerer", "--skip-serve-logs")

    def adopted() -> tuple[str, int | None] | None:
        row = cluster.trigger_row(trigger_id)
        if row is None:
            pytest.fail(f"trigger {trigger_id} vanished before a new triggerer adopted it")
        return row if row[1] not in (None, first_job_id) else None

    # Read the row the moment it changes hands, before the rebuilt trigger can fire (and the row go away).
    seen.row_after = wait_for("the new triggerer to adopt the trigger", adopted, 120, cluster, interval=0.1)
    seen.seconds_to_adoption = time.monotonic() - killed_at
    (seen.record_at_adoption,) = (
        r for r in sagemaker_async_backend.invocations("iris-endpoint") if r.inference_id == inference_id
    )
    seen.second_job_id = int(seen.row_after[1])
    wait_for(
        "the new triggerer to log that it watches the inference",
        lambda: seen.second_job_id in watching_jobs(cluster, run_id),
        60,
        cluster,
    )

    def finished() -> str | None:
        state = cluster.run_state(DAG_ID, run_id)
        return state if state in TERMINAL else None

    seen.run_state = wait_for("the run to finish", finished, RUN_TIMEOUT, cluster, interval=1)
    seen.new_invocations = sagemaker_async_backend.invocations("iris-endpoint")[invocations_before:]
    # Shown with -s, or beside a failure: how the restart went.
    print(
        f"killed {seen.killed_pids}; trigger {trigger_id} adopted by triggerer job {seen.second_job_id} "
        f"{seen.seconds_to_adoption:.1f} s after the kill (model: {MODEL_SLEEP_SECONDS} s, "
        f"record then {seen.record_at_adoption.status.value})"
    )
    return seen


def test_triggerer_process_tree_is_gone_after_sigkill_while_the_task_stays_deferred_mid_inference(
    restart: Restart,
) -> None:
    assert restart.killed_pids
    assert restart.survivors == []
    assert restart.state_after_kill == "deferred"
    assert restart.record_at_kill.status.value == "InProgress"


def test_new_triggerer_adopts_the_same_trigger_and_it_fires_there(cluster: Cluster, restart: Restart) -> None:
    logs = cluster.trigger_logs(restart.run_id)

    assert restart.second_job_id != restart.first_job_id
    assert sorted(logs) == sorted([restart.first_job_id, restart.second_job_id])
    assert f"Watching inference {restart.inference_id}" in logs[restart.first_job_id]
    assert "Trigger fired event" not in logs[restart.first_job_id]
    assert f"Watching inference {restart.inference_id}" in logs[restart.second_job_id]
    assert "Trigger fired event" in logs[restart.second_job_id]
    # The model was still working when the new triggerer took over: the rebuilt trigger waited for it.
    assert restart.record_at_adoption is not None
    assert restart.record_at_adoption.status.value == "InProgress"


def test_trigger_row_and_its_deadline_are_unchanged_by_the_restart(cluster: Cluster, restart: Restart) -> None:
    assert restart.row_before is not None
    assert restart.row_after is not None
    kwargs_before, owner_before = restart.row_before
    kwargs_after, owner_after = restart.row_after
    assert owner_before == restart.first_job_id
    assert owner_after == restart.second_job_id
    # Fernet tokens carry a random IV: an identical token means the row's kwargs were never re-written.
    assert kwargs_after == kwargs_before
    assert restart.kwargs_before is not None
    assert restart.kwargs_before["inference_id"] == restart.inference_id
    logged_deadlines = {
        job_id: WATCHING.search(log)["deadline"] for job_id, log in cluster.trigger_logs(restart.run_id).items()
    }
    assert logged_deadlines == {
        restart.first_job_id: restart.kwargs_before["deadline"],
        restart.second_job_id: restart.kwargs_before["deadline"],
    }


def test_task_succeeds_with_the_outcome_of_its_one_inference(cluster: Cluster, restart: Restart) -> None:
    assert restart.run_state == "success"
    assert cluster.task_states(DAG_ID, restart.run_id) == {
        ("load_samples", -1): "success",
        ("predict", -1): "success",
        ("report_accuracy", -1): "success",
    }
    predict = cluster.task_instance(DAG_ID, restart.run_id, "predict")
    assert predict["try_number"] == 1
    outcome = cluster.xcom(DAG_ID, restart.run_id, "predict")
    assert outcome["status"] == "Completed"
    assert outcome["inference_id"] == restart.inference_id
    assert outcome["output_location"] == restart.record_at_kill.output_location
    assert len(outcome["output"]["predictions"]) == 24
    score = cluster.xcom(DAG_ID, restart.run_id, "report_accuracy")
    assert score["inference_id"] == restart.inference_id
    assert score["accuracy"] >= 0.8


def test_endpoint_saw_exactly_one_invocation(restart: Restart) -> None:
    assert [(r.inference_id, r.status.value) for r in restart.new_invocations] == [(restart.inference_id, "Completed")]
    assert restart.new_invocations[0].custom_attributes == f"sleep={MODEL_SLEEP_SECONDS}"


def test_airflow_processes_listen_on_127_0_0_1_only(cluster: Cluster) -> None:
    addresses = cluster.listening_addresses()

    assert ("127.0.0.1", cluster.port) in addresses
    assert {ip for ip, _ in addresses} == {"127.0.0.1"}
