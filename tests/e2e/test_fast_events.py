"""
End to end: the fast-event guard under a real Airflow, with models that answer within seconds.

apache/airflow#71580 / #72716: when a trigger fires before the scheduler has processed the executor's event of
the attempt that deferred, an Airflow 3.3 scheduler can mark the resumed task failed ("state mismatch"). The
plugin's guard (:mod:`airflow_sagemaker_async.inference.waiting`) checks once on the worker before deferring and keeps
every trigger's event until ``min_deferral_seconds`` (default 10 s) after the deferral.

A real Airflow on 127.0.0.1 (scheduler with the LocalExecutor, dag-processor, triggerer, api-server; SQLite)
runs ``tests/e2e/dags/fast_events/`` against the local backend of the pytest plugin: 16 mapped single-operator
inferences whose model answers in 0-2 s and one batch task of 40 items of 0.5 s, every guard setting at its
default. The triggers check every 0.5-1 s (``[sagemaker_async] poll_interval`` / ``max_poll_interval``), so
without the guard most of them would fire within 1-3 s of their deferral.

What must hold: every task instance ends ``success`` on its first try, no "state mismatch" is in Airflow's
event log, and the endpoint saw each inference exactly once. ``benchmarks/fast_events.py`` runs the same DAG
with the guard off and on and counts the failures.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from airflow_sagemaker_async.local.cli import ready_document
from airflow_sagemaker_async.local.harness import AirflowCluster, airflow_environment, free_port, wait_for
from tests.e2e.fast_events import (
    DAG_ID,
    DAGS_FOLDER,
    FastRun,
    check_each_inference_exactly_once,
    check_every_task_instance_succeeded_on_its_first_try,
    check_fast_triggers_were_held_by_the_guard,
    check_no_state_mismatch,
    run_fast_events,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_sagemaker_async.local.backend import LocalEndpoint, LocalSageMakerAsyncBackend

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(300)]

STARTUP_TIMEOUT = 180.0
RUN_TIMEOUT = 150.0


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
    sagemaker_async_backend: LocalSageMakerAsyncBackend,
    sagemaker_async_iris_endpoint: LocalEndpoint,
) -> Iterator[AirflowCluster]:
    env = airflow_environment(
        tmp_path_factory.mktemp("fast-events-airflow"),
        ready=ready_document(sagemaker_async_backend, None),
        dags_folder=DAGS_FOLDER,
        api_port=free_port(),
        poll_interval=0.5,
        max_poll_interval=1.0,
        extra={"SAGEMAKER_ASYNC_ENDPOINT": sagemaker_async_iris_endpoint.endpoint_name},
    )
    assert "AIRFLOW__SAGEMAKER_ASYNC__MIN_DEFERRAL_SECONDS" not in env  # the guard keeps its default
    with AirflowCluster(env) as server:
        server.migrate_db()
        server.start_components(STARTUP_TIMEOUT)
        wait_for(f"the dag-processor to parse {DAG_ID}", lambda: server.dag_count(DAG_ID) == 1, STARTUP_TIMEOUT, server)
        yield server


@pytest.fixture(scope="module")
def run(cluster: AirflowCluster, sagemaker_async_backend: LocalSageMakerAsyncBackend) -> FastRun:
    """Trigger the DAG, wait for its end; return what the checks read."""
    return run_fast_events(cluster, sagemaker_async_backend, RUN_TIMEOUT)


def test_every_fast_task_instance_succeeds_on_its_first_try_with_the_default_guard(run: FastRun) -> None:
    check_every_task_instance_succeeded_on_its_first_try(run)


def test_fast_triggers_deferred_and_were_held_by_the_guard(cluster: AirflowCluster, run: FastRun) -> None:
    check_fast_triggers_were_held_by_the_guard(cluster, run)


def test_no_state_mismatch_in_airflow_event_log(cluster: AirflowCluster, run: FastRun) -> None:
    check_no_state_mismatch(cluster, run)


def test_endpoint_saw_each_inference_exactly_once(run: FastRun) -> None:
    check_each_inference_exactly_once(run)
