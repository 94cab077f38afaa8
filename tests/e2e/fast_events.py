"""
The fast-event DAG (``tests/e2e/dags/fast_events/``) and what must hold after it ran, on either topology.

apache/airflow#71580 / #72716: when a trigger fires before the scheduler has processed the executor's event of
the attempt that deferred, an Airflow 3.3 scheduler can mark the resumed task failed ("state mismatch"). The
DAG runs 16 mapped single-operator inferences whose model answers in 0-2 s and one batch task of 40 items of
0.5 s; :mod:`tests.e2e.test_fast_events` runs it on the LocalExecutor, :mod:`tests.e2e.test_celery_topology`
on Celery workers with two schedulers.
"""

from __future__ import annotations

import urllib.error
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from airflow_sagemaker_async.local.harness import wait_for

if TYPE_CHECKING:
    from airflow_sagemaker_async.local.backend import LocalSageMakerAsyncBackend
    from airflow_sagemaker_async.local.harness import AirflowCluster
    from airflow_sagemaker_async.local.records import InvocationRecord

DAGS_FOLDER = Path(__file__).resolve().parent / "dags" / "fast_events"
DAG_ID = "sagemaker_async_fast_events"
MAPPED = 16
BATCH_ITEMS = 40


@dataclass
class FastRun:
    """One finished run of the fast-event DAG: its id and state, its task instances, the endpoint's new records."""

    run_id: str
    state: str
    task_instances: list[dict[str, Any]]
    records: list[InvocationRecord]


def run_fast_events(cluster: AirflowCluster, backend: LocalSageMakerAsyncBackend, timeout: float) -> FastRun:
    """Trigger the DAG, wait for its end (``timeout`` seconds) and return what the checks read."""
    before = len(backend.invocations("iris-endpoint"))
    run_id = cluster.trigger(DAG_ID)

    def finished() -> str | None:
        state = cluster.run_state(DAG_ID, run_id)
        return state if state in {"success", "failed"} else None

    state = wait_for(f"{DAG_ID} to finish", finished, timeout, cluster, interval=1)
    answer = cluster.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances?limit=100")
    return FastRun(run_id, state, answer["task_instances"], backend.invocations("iris-endpoint")[before:])


def ours(records: list[InvocationRecord]) -> list[InvocationRecord]:
    """The records of this DAG's inferences (their InferenceId starts with the DAG's readable prefix)."""
    return [record for record in records if record.inference_id.startswith(DAG_ID)]


def check_every_task_instance_succeeded_on_its_first_try(run: FastRun) -> None:
    """Every mapped inference and the batch ended ``success`` with ``try_number`` 1."""
    instances = {(ti["task_id"], ti["map_index"]): ti for ti in run.task_instances}

    assert run.state == "success"
    assert sorted(instances) == [("infer", index) for index in range(MAPPED)] + [("score", -1)]
    assert {key: ti["state"] for key, ti in instances.items() if ti["state"] != "success"} == {}
    assert {key: ti["try_number"] for key, ti in instances.items() if ti["try_number"] != 1} == {}


def check_fast_triggers_were_held_by_the_guard(cluster: AirflowCluster, run: FastRun) -> None:
    """The mapped tasks deferred and their triggers held the event until ``min_deferral_seconds``.

    Without a deferral the run would prove nothing about the race. The batch keeps checking on the worker for
    up to ``min_deferral_seconds`` after a wave: with a fast model it may end without a deferral (nothing for
    the race to hit); when it did defer, its trigger held the event too.
    """
    trigger_logs = {
        task_id: "".join(
            path.read_text(errors="replace")
            for path in cluster.task_log_dir(DAG_ID, run.run_id, task_id).rglob("attempt=*.log.trigger.*.log")
        )
        for task_id in ("infer", "score")
    }

    assert "fast-event guard" in trigger_logs["infer"]
    assert not trigger_logs["score"] or "fast-event guard" in trigger_logs["score"]


def check_no_state_mismatch(cluster: AirflowCluster, run: FastRun) -> None:
    """No "state mismatch" in Airflow's event log of the DAG, nor in any scheduler's log."""
    try:
        events = cluster.request("GET", f"/api/v2/eventLogs?dag_id={DAG_ID}&event=state%20mismatch&limit=100")
    except urllib.error.HTTPError as error:  # pragma: no cover - shown if the API changes
        pytest.fail(f"the event log could not be read: {error}")

    assert [event.get("extra") for event in events["event_logs"]] == []
    schedulers = [process for name, process in cluster.processes.items() if name.startswith("scheduler")]
    assert schedulers
    assert [process.name for process in schedulers if "state attribute is" in process.log()] == []


def check_each_inference_exactly_once(run: FastRun) -> None:
    """The endpoint saw each of the run's inferences once, all Completed."""
    records = ours(run.records)
    counts = Counter(record.inference_id for record in records)

    assert {inference_id: n for inference_id, n in counts.items() if n != 1} == {}
    assert len(counts) == MAPPED + BATCH_ITEMS
    assert {record.status.value for record in records} == {"Completed"}
