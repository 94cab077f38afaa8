"""
End to end on the production topology: a PostgreSQL metadata database, the CeleryExecutor with a Redis broker,
two schedulers, two Celery workers that Airflow sees as two hosts, two triggerers, a dag-processor and the
api-server, each its own process on 127.0.0.1 (:mod:`airflow_sagemaker_async.local.topology`), against the
local backend of the pytest plugin (with a notification queue and two real-time endpoints of this module's).

One cluster serves the whole module: the heavy topology starts once (about a minute on two cores). On it run
the four example DAGs with the checks of the LocalExecutor suite; the push (the queue both triggerers read),
real-time and streaming examples; the fast-event DAG with the guard at its default (its checks too); and a
triggerer fault: both triggerers are SIGKILLed one after the other while an inference waits, and the trigger
must move and fire once.

Without PostgreSQL, Redis or the ``celery`` extra the module is skipped with a one-line reason, except under
``CI=true``, where that is a failure (``.ci/run`` installs the servers).
"""

from __future__ import annotations

import re
import signal
from collections import Counter
from typing import TYPE_CHECKING

import pytest

from airflow_sagemaker_async.common.submission import default_inference_id
from airflow_sagemaker_async.local.harness import AirflowCluster, free_port, signal_tree, wait_for
from tests.e2e.airflow_cluster import EXAMPLE_CHECKS, EXAMPLES_DIR, MORE_EXAMPLE_CHECKS, examples_environment
from tests.e2e.fast_events import (
    DAG_ID as FAST_DAG_ID,
)
from tests.e2e.fast_events import (
    DAGS_FOLDER as FAST_DAGS_FOLDER,
)
from tests.e2e.fast_events import (
    FastRun,
    check_each_inference_exactly_once,
    check_every_task_instance_succeeded_on_its_first_try,
    check_fast_triggers_were_held_by_the_guard,
    check_no_state_mismatch,
    run_fast_events,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from airflow_sagemaker_async.local.backend import LocalEndpoint, LocalSageMakerAsyncBackend
    from airflow_sagemaker_async.local.topology import CeleryServers

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

STARTUP_TIMEOUT = 240.0
RUN_TIMEOUT = 240.0
#: Seconds after which a triggerer without a heartbeat is dead and its triggers move (Airflow's default: 30).
HEALTH_CHECK_THRESHOLD = 15
#: The examples' model delay, as in the LocalExecutor suite: long enough to see deferrals.
MODEL_SLEEP = {"custom_attributes": "sleep=15"}
#: The model delay of the triggerer fault: it outlasts two adoptions (each ~HEALTH_CHECK_THRESHOLD + a start).
FAULT_MODEL_SLEEP_SECONDS = 90
FAULT_DAG_ID = "example_sagemaker_async_inference"
REALTIME_ENDPOINT = "celery-iris-realtime"
STREAMING_ENDPOINT = "celery-text-streaming"
#: The four examples of the LocalExecutor suite, push (the queue both triggerers read), real-time, streaming.
ALL_CHECKS: dict[str, Callable[[AirflowCluster, str], None]] = {**EXAMPLE_CHECKS, **MORE_EXAMPLE_CHECKS}
TRIGGER_LOG = re.compile(r"\.log\.trigger\.(?P<job_id>\d+)\.log$")


@pytest.fixture(scope="module")
def servers(celery_servers: CeleryServers) -> CeleryServers:
    return celery_servers


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
    servers: CeleryServers,
    sagemaker_async_backend: LocalSageMakerAsyncBackend,
    sagemaker_async_iris_endpoint: LocalEndpoint,
) -> Iterator[AirflowCluster]:
    # One DAG folder with the examples (and their data) and the fast-event DAG.
    dags = tmp_path_factory.mktemp("celery-dags")
    for dag_id in ALL_CHECKS:
        (dags / f"{dag_id}.py").symlink_to(EXAMPLES_DIR / f"{dag_id}.py")
    (dags / "data").symlink_to(EXAMPLES_DIR / "data")
    (dags / f"{FAST_DAG_ID}.py").symlink_to(FAST_DAGS_FOLDER / f"{FAST_DAG_ID}.py")
    env = examples_environment(
        tmp_path_factory.mktemp("celery-airflow"),
        sagemaker_async_backend,
        sagemaker_async_iris_endpoint,
        api_port=free_port(),
        servers=servers,
        dags_folder=dags,
        extra={
            "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": str(HEALTH_CHECK_THRESHOLD),
            **push_and_realtime(sagemaker_async_backend),
        },
    )
    assert "AIRFLOW__SAGEMAKER_ASYNC__MIN_DEFERRAL_SECONDS" not in env  # the guard keeps its default
    with AirflowCluster(env) as server:
        assert server.celery
        server.migrate_db()
        server.start_components(STARTUP_TIMEOUT)
        wanted = [*ALL_CHECKS, FAST_DAG_ID]
        wait_for(
            f"the dag-processor to parse {wanted}",
            lambda: all(server.dag_count(dag_id) >= 1 for dag_id in wanted),
            STARTUP_TIMEOUT,
            server,
            interval=1,
        )
        yield server


def wait_finished(cluster: AirflowCluster, runs: dict[str, str], timeout: float) -> dict[str, str]:
    """Wait until every run (dag_id -> run_id) is finished; return the state of each."""
    states: dict[str, str] = {}

    def all_finished() -> bool:
        for dag_id, run_id in runs.items():
            states[dag_id] = cluster.run_state(dag_id, run_id)
        return all(state in {"success", "failed"} for state in states.values())

    wait_for(f"the runs to finish ({states})", all_finished, timeout, cluster, interval=1)
    return states


def push_and_realtime(backend: LocalSageMakerAsyncBackend) -> dict[str, str]:
    """A queue on ``iris-endpoint``'s topics and two real-time endpoints of this module's own; their settings."""
    sns = backend.client("sns")
    topics = [sns.create_topic(Name=f"iris-endpoint-{kind}")["TopicArn"] for kind in ("success", "error")]
    queue_url = backend.subscribe_queue("celery-e2e-notifications", topics)
    backend.create_endpoint(REALTIME_ENDPOINT, async_inference=False)
    backend.create_endpoint(STREAMING_ENDPOINT, model="text", async_inference=False)
    return {
        "SAGEMAKER_ASYNC_NOTIFICATION_QUEUE_URL": queue_url,
        "SAGEMAKER_REALTIME_ENDPOINT": REALTIME_ENDPOINT,
        "SAGEMAKER_STREAMING_ENDPOINT": STREAMING_ENDPOINT,
    }


@pytest.fixture(scope="module")
def example_runs(cluster: AirflowCluster) -> dict[str, str]:
    """Trigger the seven examples at once, wait for their end; return their run ids."""
    runs = {dag_id: cluster.trigger(dag_id, MODEL_SLEEP) for dag_id in EXAMPLE_CHECKS}
    runs |= {
        "example_sagemaker_async_push": cluster.trigger("example_sagemaker_async_push", MODEL_SLEEP),
        "example_sagemaker_realtime": cluster.trigger("example_sagemaker_realtime"),
        "example_sagemaker_streaming": cluster.trigger("example_sagemaker_streaming"),
    }
    wait_finished(cluster, runs, RUN_TIMEOUT)
    return runs


@pytest.fixture(scope="module")
def fast_run(
    cluster: AirflowCluster, sagemaker_async_backend: LocalSageMakerAsyncBackend, example_runs: dict[str, str]
) -> FastRun:
    """The fast-event DAG, after the examples ended."""
    return run_fast_events(cluster, sagemaker_async_backend, RUN_TIMEOUT)


@pytest.mark.parametrize("dag_id", list(ALL_CHECKS))
def test_example_dag_ends_as_designed_on_celery(
    cluster: AirflowCluster, example_runs: dict[str, str], dag_id: str
) -> None:
    ALL_CHECKS[dag_id](cluster, example_runs[dag_id])


def test_tasks_ran_on_both_celery_workers_as_two_hosts(
    cluster: AirflowCluster, example_runs: dict[str, str], fast_run: FastRun
) -> None:
    hosts = Counter(ti["hostname"] for ti in fast_run.task_instances)
    for dag_id, run_id in example_runs.items():
        answer = cluster.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=100")
        hosts.update(ti["hostname"] for ti in answer["task_instances"] if ti["state"] is not None)

    assert set(hosts) == {"worker-1", "worker-2"}, hosts


def test_fast_task_instances_succeed_on_their_first_try_on_celery(fast_run: FastRun) -> None:
    check_every_task_instance_succeeded_on_its_first_try(fast_run)


def test_fast_triggers_were_held_by_the_guard_on_celery(cluster: AirflowCluster, fast_run: FastRun) -> None:
    check_fast_triggers_were_held_by_the_guard(cluster, fast_run)


def test_no_state_mismatch_with_two_schedulers(cluster: AirflowCluster, fast_run: FastRun) -> None:
    check_no_state_mismatch(cluster, fast_run)


def test_endpoint_saw_each_fast_inference_exactly_once_on_celery(fast_run: FastRun) -> None:
    check_each_inference_exactly_once(fast_run)


def test_processes_listen_on_127_0_0_1_only(cluster: AirflowCluster, fast_run: FastRun) -> None:
    addresses = cluster.listening_addresses()

    assert ("127.0.0.1", cluster.port) in addresses
    assert {ip for ip, _ in addresses} == {"127.0.0.1"}


def test_trigger_moves_and_fires_once_when_both_triggerers_are_killed_one_after_the_other(
    cluster: AirflowCluster, sagemaker_async_backend: LocalSageMakerAsyncBackend, fast_run: FastRun
) -> None:
    run_id = cluster.trigger(FAULT_DAG_ID, {"custom_attributes": f"sleep={FAULT_MODEL_SLEEP_SECONDS}"})
    inference_id = default_inference_id(FAULT_DAG_ID, "predict", run_id)
    log_dir = cluster.task_log_dir(FAULT_DAG_ID, run_id, "predict")

    def trigger_jobs() -> set[str]:
        return {m["job_id"] for path in log_dir.glob("attempt=*") if (m := TRIGGER_LOG.search(path.name))}

    wait_for("the trigger to run in a triggerer", trigger_jobs, 150, cluster, interval=0.5)
    first_jobs = trigger_jobs()
    # Kill the first triggerer; start it again (a new job); once it is up, kill the second one.
    killed = cluster.forget("triggerer-1")
    signal_tree(killed.pid, signal.SIGKILL)
    logged_before = len(killed.log())
    cluster.restart("triggerer-1")
    wait_for(
        "the restarted triggerer to start",
        lambda: "Starting the triggerer" in cluster.processes["triggerer-1"].log()[logged_before:],
        120,
        cluster,
    )
    signal_tree(cluster.forget("triggerer-2").pid, signal.SIGKILL)

    states = wait_finished(cluster, {FAULT_DAG_ID: run_id}, FAULT_MODEL_SLEEP_SECONDS + RUN_TIMEOUT)

    assert states == {FAULT_DAG_ID: "success"}
    assert cluster.xcom(FAULT_DAG_ID, run_id, "predict")["status"] == "Completed"
    # The trigger ran in more than one triggerer job: it moved at least once, and still fired.
    assert len(trigger_jobs()) >= 2, (first_jobs, trigger_jobs())
    records = [r for r in sagemaker_async_backend.invocations("iris-endpoint") if r.inference_id == inference_id]
    assert len(records) == 1
