"""
End to end: the example DAGs under a real Airflow on 127.0.0.1 (scheduler, dag-processor, triggerer,
api-server as separate processes; SQLite, LocalExecutor, as ``airflow standalone`` would set them up), against
the local SageMaker async backend.

Not ``airflow standalone`` itself: its log servers listen on every interface. The scheduler and the triggerer
run with ``--skip-serve-logs`` instead, and the api-server serves task logs from the local files
(``airflow_sagemaker_async.local.harness``); one test reads a task's log through the REST API as the UI does.

One cluster serves the whole module (it takes ~30-60 s to start on two cores). The DAGs are triggered and read
back through the public REST API (``/api/v2``) with a token from the simple auth manager. Each component runs
in its own process group; each and every process under it are killed at the end whatever happens.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from airflow_sagemaker_async.local.harness import AirflowCluster, free_port, wait_for
from tests.e2e.airflow_cluster import (
    check_batch_example,
    check_failure_example,
    check_inference_example,
    check_sensor_example,
    examples_environment,
)
from tests.statsd_listener import StatsdListener

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_sagemaker_async.local.backend import LocalEndpoint, LocalSageMakerAsyncBackend

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(420)]

STARTUP_TIMEOUT = 180.0
RUN_TIMEOUT = 180.0
TERMINAL = {"success", "failed"}
EXAMPLE_DAGS = (
    "example_sagemaker_async_inference",
    "example_sagemaker_async_batch",
    "example_sagemaker_async_failure",
    "example_sagemaker_async_sensor",
)


@pytest.fixture(scope="module")
def statsd() -> Iterator[StatsdListener]:
    """A StatsD server on 127.0.0.1 that the cluster's ``[metrics]`` sends to (Airflow's metrics and ours)."""
    with StatsdListener() as listener:
        yield listener


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
    sagemaker_async_backend: LocalSageMakerAsyncBackend,
    sagemaker_async_iris_endpoint: LocalEndpoint,
    statsd: StatsdListener,
) -> Iterator[AirflowCluster]:
    home = tmp_path_factory.mktemp("cluster-airflow")
    env = examples_environment(
        home,
        sagemaker_async_backend,
        sagemaker_async_iris_endpoint,
        api_port=free_port(),
        extra=statsd.airflow_environment(),
    )
    with AirflowCluster(env) as server:
        server.migrate_db()
        server.start_components(STARTUP_TIMEOUT)
        wait_for(
            f"the dag-processor to parse the {len(EXAMPLE_DAGS)} example DAGs",
            lambda: all(server.dag_count(dag_id) >= 1 for dag_id in EXAMPLE_DAGS),  # a LIKE pattern: batch_scoring too
            STARTUP_TIMEOUT,
            server,
            interval=1,
        )
        yield server


#: The model's answer delay for each run (CustomAttributes ``sleep=N`` of the local iris model). Long enough to
#: see the inference task deferred, and to stay clear of an Airflow 3.3 scheduler race: when the scheduler
#: drains the executor's "success" event of the deferring attempt only after the trigger fired and the resumed
#: attempt is already running, it marks the task failed ("state mismatch"; apache/airflow#71580, #72716, fixes
#: open). On this 2-core machine, with four DAGs at once, that event came up to ~11 s after the deferral, and
#: mapped tasks whose model answered within 4 s were failed that way.
MODEL_SLEEP = {"custom_attributes": "sleep=15"}


@pytest.fixture(scope="module")
def runs(cluster: AirflowCluster) -> dict[str, str]:
    """Trigger the four examples at once; return their run ids."""
    return {dag_id: cluster.trigger(dag_id, MODEL_SLEEP) for dag_id in EXAMPLE_DAGS}


@pytest.fixture(scope="module")
def finished(cluster: AirflowCluster, runs: dict[str, str]) -> dict[str, str]:
    """Wait until every triggered run is finished; return the state of each."""
    states: dict[str, str] = {}

    def all_finished() -> bool:
        for dag_id, run_id in runs.items():
            states[dag_id] = cluster.run_state(dag_id, run_id)
        return all(state in TERMINAL for state in states.values())

    wait_for(f"the runs to finish ({states})", all_finished, RUN_TIMEOUT, cluster, interval=1)
    return states


def test_inference_task_waits_in_deferred_state_while_the_model_works(
    cluster: AirflowCluster, runs: dict[str, str]
) -> None:
    dag_id, run_id = "example_sagemaker_async_inference", runs["example_sagemaker_async_inference"]

    seen = wait_for(
        "predict to be deferred",
        lambda: cluster.task_states(dag_id, run_id).get(("predict", -1)) == "deferred",
        90,
        cluster,
        interval=0.3,
    )

    assert seen
    # The UI shows the deferred task's log too (the api-server reads the local file; its try at the served logs
    # of the triggerer, which has none, only adds a "Could not read served logs" source line).
    assert "Submitted inference example_sagemaker_async_inference.predict-" in cluster.task_log(
        dag_id, run_id, "predict", 1
    )
    # The trigger ran in the triggerer process, which writes what a trigger logs beside the task's log, in
    # <task log>.trigger.<triggerer job id>.log.
    task_logs = cluster.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / "task_id=predict"

    def trigger_log() -> str:
        return "".join(path.read_text(errors="replace") for path in task_logs.glob("attempt=*.log.trigger.*.log"))

    wait_for("the trigger's log", lambda: "Trigger fired event" in trigger_log(), 90, cluster)
    logged = trigger_log()
    assert "Watching inference example_sagemaker_async_inference.predict-" in logged
    assert "SageMakerAsyncInferenceTrigger" in logged or "success after" in logged
    assert "Starting the triggerer" in cluster.processes["triggerer"].log()


def test_airflow_processes_listen_on_127_0_0_1_only(cluster: AirflowCluster, runs: dict[str, str]) -> None:
    # While the runs are under way: task runners and trigger runners are in the process trees too.
    addresses = cluster.listening_addresses()

    assert ("127.0.0.1", cluster.port) in addresses
    assert {ip for ip, _ in addresses} == {"127.0.0.1"}


def test_task_log_reaches_the_ui_through_the_api_server_without_log_servers(
    cluster: AirflowCluster, runs: dict[str, str], finished: dict[str, str]
) -> None:
    # What the UI's log view asks for; the api-server reads the file the LocalExecutor's task wrote.
    dag_id, run_id = "example_sagemaker_async_inference", runs["example_sagemaker_async_inference"]
    try_number = cluster.task_instance(dag_id, run_id, "predict")["try_number"]

    logged = cluster.task_log(dag_id, run_id, "predict", try_number)

    assert "Submitted inference example_sagemaker_async_inference.predict-" in logged
    assert "Could not read served logs" not in logged


def test_inference_dag_succeeds_with_the_outcome_and_accuracy_in_xcom(
    cluster: AirflowCluster, runs: dict[str, str], finished: dict[str, str]
) -> None:
    check_inference_example(cluster, runs["example_sagemaker_async_inference"])


def test_batch_dag_counts_three_completed_and_one_failed_input(
    cluster: AirflowCluster, runs: dict[str, str], finished: dict[str, str]
) -> None:
    check_batch_example(cluster, runs["example_sagemaker_async_batch"])


def test_failure_dag_fails_the_strict_task_and_runs_the_reactions(
    cluster: AirflowCluster, runs: dict[str, str], finished: dict[str, str]
) -> None:
    check_failure_example(cluster, runs["example_sagemaker_async_failure"])


def test_sensor_dag_waits_for_the_submitted_inference_and_gets_its_predictions(
    cluster: AirflowCluster, runs: dict[str, str], finished: dict[str, str]
) -> None:
    check_sensor_example(cluster, runs["example_sagemaker_async_sensor"])


def test_metrics_of_workers_and_triggerer_reach_the_statsd_server_beside_airflows_own(
    cluster: AirflowCluster, runs: dict[str, str], finished: dict[str, str], statsd: StatsdListener
) -> None:
    # Submitted: predict (1), the batch example's four mapped predict, the failure example's two, the sensor's submit.
    assert statsd.total("airflow.sagemaker_async.submissions.async") >= 8
    # Ended, on the workers: inference + three batch inputs + the sensor; one batch input + both failure tasks.
    assert statsd.total("airflow.sagemaker_async.outcomes.Completed") >= 5
    assert statsd.total("airflow.sagemaker_async.outcomes.Failed") >= 3
    timers = {metric.name for metric in statsd.metrics("airflow.sagemaker_async.") if metric.type == "ms"}
    assert "airflow.sagemaker_async.detection_latency" in timers
    assert "airflow.sagemaker_async.submit_to_outcome.Completed" in timers
    # From the triggerer's trigger runner, where Airflow set up only its internal Stats (apache/airflow#69172).
    assert statsd.total("airflow.sagemaker_async.s3_requests.head") > 0
    held = [metric for metric in statsd.metrics("airflow.sagemaker_async.waits_held.") if metric.type == "g"]
    assert max(metric.value for metric in held) >= 1
    statsd.wait_for(
        "the waits held back at 0",
        lambda: statsd.metrics("airflow.sagemaker_async.waits_held.")[-1].value == 0,
    )
    # Airflow's own metrics on the same server, under the same prefix.
    assert statsd.metrics("airflow.triggerer_heartbeat")
