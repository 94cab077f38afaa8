"""
End to end: the fast-event guard under a real Airflow, with models that answer within seconds.

apache/airflow#71580 / #72716: when a trigger fires before the scheduler has processed the executor's event of
the attempt that deferred, an Airflow 3.3 scheduler can mark the resumed task failed ("state mismatch"). The
plugin's guard (:mod:`airflow_sagemaker_async.waiting`) checks once on the worker before deferring and keeps
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

import urllib.error
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from airflow_sagemaker_async.local.cli import ready_document
from airflow_sagemaker_async.local.harness import AirflowCluster, airflow_environment, free_port, wait_for

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_sagemaker_async.local.backend import LocalEndpoint, LocalSageMakerAsyncBackend
    from airflow_sagemaker_async.local.records import InvocationRecord

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(300)]

DAGS_FOLDER = Path(__file__).resolve().parent / "dags" / "fast_events"
DAG_ID = "sagemaker_async_fast_events"
MAPPED = 16
BATCH_ITEMS = 40
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
def run(cluster: AirflowCluster, sagemaker_async_backend: LocalSageMakerAsyncBackend) -> dict[str, Any]:
    """Trigger the DAG, wait for its end; return its id, state, task instances and the endpoint's new records."""
    before = len(sagemaker_async_backend.invocations("iris-endpoint"))
    run_id = cluster.trigger(DAG_ID)

    def finished() -> str | None:
        state = cluster.run_state(DAG_ID, run_id)
        return state if state in {"success", "failed"} else None

    state = wait_for(f"{DAG_ID} to finish", finished, RUN_TIMEOUT, cluster, interval=1)
    answer = cluster.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances?limit=100")
    return {
        "run_id": run_id,
        "state": state,
        "task_instances": answer["task_instances"],
        "records": sagemaker_async_backend.invocations("iris-endpoint")[before:],
    }


def ours(records: list[InvocationRecord]) -> list[InvocationRecord]:
    """The records of this DAG's inferences (their InferenceId starts with the DAG's readable prefix)."""
    return [record for record in records if record.inference_id.startswith(DAG_ID)]


def test_every_fast_task_instance_succeeds_on_its_first_try_with_the_default_guard(run: dict[str, Any]) -> None:
    instances = {(ti["task_id"], ti["map_index"]): ti for ti in run["task_instances"]}

    assert run["state"] == "success"
    assert sorted(instances) == [("infer", index) for index in range(MAPPED)] + [("score", -1)]
    assert {key: ti["state"] for key, ti in instances.items() if ti["state"] != "success"} == {}
    assert {key: ti["try_number"] for key, ti in instances.items() if ti["try_number"] != 1} == {}


def test_fast_triggers_deferred_and_were_held_by_the_guard(cluster: AirflowCluster, run: dict[str, Any]) -> None:
    # Without a deferral this test would prove nothing about the race: most mapped tasks defer,
    # and their triggers hold the event until min_deferral_seconds after the deferral.
    trigger_logs = {
        task_id: "".join(
            path.read_text(errors="replace")
            for path in cluster.task_log_dir(DAG_ID, run["run_id"], task_id).rglob("attempt=*.log.trigger.*.log")
        )
        for task_id in ("infer", "score")
    }

    assert "fast-event guard" in trigger_logs["infer"]
    # The batch keeps checking on the worker for up to min_deferral_seconds after a wave: with a fast model it
    # ends without a deferral (nothing for the race to hit); when it did defer, its trigger held the event too.
    assert not trigger_logs["score"] or "fast-event guard" in trigger_logs["score"]


def test_no_state_mismatch_in_airflow_event_log(cluster: AirflowCluster, run: dict[str, Any]) -> None:
    try:
        events = cluster.request("GET", f"/api/v2/eventLogs?dag_id={DAG_ID}&event=state%20mismatch&limit=100")
    except urllib.error.HTTPError as error:  # pragma: no cover - shown if the API changes
        pytest.fail(f"the event log could not be read: {error}")

    assert [event.get("extra") for event in events["event_logs"]] == []
    assert "state attribute is" not in cluster.processes["scheduler"].log()


def test_endpoint_saw_each_inference_exactly_once(run: dict[str, Any]) -> None:
    records = ours(run["records"])
    counts = Counter(record.inference_id for record in records)

    assert {inference_id: n for inference_id, n in counts.items() if n != 1} == {}
    assert len(counts) == MAPPED + BATCH_ITEMS
    assert {record.status.value for record in records} == {"Completed"}
