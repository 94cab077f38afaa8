"""
What the end-to-end tests of assets need: the watched endpoint and its queue, inferences submitted outside
Airflow, and the checks of the asset pair and of the notification-started runs (read through the REST API).

Used by the LocalExecutor cluster's module (``test_airflow_cluster.py``), which parses every example DAG: the
asset pair and the notification DAG run on the same cluster as the other examples (no cluster of their own).
"""

from __future__ import annotations

import functools
import json
import time
import urllib.parse
import uuid
from typing import TYPE_CHECKING, Any

from airflow_sagemaker_async.local.harness import wait_for

if TYPE_CHECKING:
    from airflow_sagemaker_async.local.backend import LocalSageMakerAsyncBackend
    from airflow_sagemaker_async.local.harness import AirflowCluster

SCORE_DAG = "example_sagemaker_async_assets_score"
REPORT_DAG = "example_sagemaker_async_assets_report"
NOTIFIED_DAG = "example_sagemaker_async_notifications"
ASSET_DAGS = (SCORE_DAG, REPORT_DAG, NOTIFIED_DAG)
#: The endpoint the notification DAG watches: its own, so that the other examples start none of its runs.
WATCHED_ENDPOINT = "watched-iris"
WATCHER_QUEUE = "e2e-watcher-notifications"
GOOD_ROW, BAD_ROW = b"5.1,3.5,1.4,0.2", b"5.1,3.5,1.4"


def watcher_environment(backend: LocalSageMakerAsyncBackend) -> dict[str, str]:
    """Create ``watched-iris``, its topics and a queue of the watcher's own; return the DAGs' settings."""
    sns = backend.client("sns")
    topics = [sns.create_topic(Name=f"{WATCHED_ENDPOINT}-{kind}")["TopicArn"] for kind in ("success", "error")]
    backend.create_endpoint(WATCHED_ENDPOINT, success_topic_arn=topics[0], error_topic_arn=topics[1])
    queue_url = backend.subscribe_queue(WATCHER_QUEUE, topics)
    return {"SAGEMAKER_ASYNC_WATCHED_ENDPOINT": WATCHED_ENDPOINT, "SAGEMAKER_ASYNC_WATCHER_QUEUE_URL": queue_url}


def dag_runs(cluster: AirflowCluster, dag_id: str) -> list[dict[str, Any]]:
    """The DAG's runs, oldest first, as the REST API lists them."""
    answer = cluster.request("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=100&order_by=logical_date")
    runs: list[dict[str, Any]] = answer["dag_runs"]
    return sorted(runs, key=lambda run: run.get("queued_at") or run.get("run_after") or "")


def asset_events(cluster: AirflowCluster, **query: str) -> list[dict[str, Any]]:
    """Asset events as the REST API (and the UI) shows them, e.g. ``source_dag_id=...``."""
    params = urllib.parse.urlencode(query)
    events: list[dict[str, Any]] = cluster.request("GET", f"/api/v2/assets/events?{params}")["asset_events"]
    return events


# -- part 1: score in DAG A, report in DAG B scheduled on A's asset ----------------------------------------------


def run_asset_pair(cluster: AirflowCluster, timeout: float) -> tuple[str, dict[str, Any]]:
    """Trigger the score DAG; return its run id and the report run that its asset event started."""
    before = {run["dag_run_id"] for run in dag_runs(cluster, REPORT_DAG)}
    score_run = cluster.trigger(SCORE_DAG)
    wait_for(
        f"{SCORE_DAG} to finish",
        lambda: cluster.run_state(SCORE_DAG, score_run) in {"success", "failed"},
        timeout,
        cluster,
        interval=1,
    )
    assert cluster.run_state(SCORE_DAG, score_run) == "success", cluster.task_states(SCORE_DAG, score_run)
    found: list[dict[str, Any]] = []

    def report_finished() -> bool:
        found[:] = [
            run
            for run in dag_runs(cluster, REPORT_DAG)
            if run["dag_run_id"] not in before and run["state"] in {"success", "failed"}
        ]
        return bool(found)

    wait_for(f"{REPORT_DAG} to run because of the batch's asset", report_finished, timeout, cluster, interval=1)
    return score_run, found[0]


def check_asset_pair(cluster: AirflowCluster, score_run: str, report_run: dict[str, Any]) -> dict[str, Any]:
    """B ran because A's batch finished, with A's counts read from the triggering asset event; return the event."""
    assert report_run["state"] == "success"
    assert report_run["run_type"] == "asset_triggered"
    report = cluster.xcom(REPORT_DAG, report_run["dag_run_id"], "report")
    assert report["source_dag_id"] == SCORE_DAG
    assert report["source_run_id"] == score_run
    assert report["counts"] == {"Completed": 5, "Failed": 1, "TimedOut": 0}
    assert report["manifest_lines"] == 6
    summary = cluster.xcom(SCORE_DAG, score_run, "score")
    assert report["manifest_location"] == summary["manifest_location"]
    assert report["batch_tag"] == summary["batch_tag"]
    (event,) = asset_events(cluster, source_dag_id=SCORE_DAG, source_run_id=score_run)
    assert event["uri"] == "s3://sagemaker-async-local/iris-endpoint/output/airflow-batch"
    assert event["extra"]["counts"] == summary["counts"]
    assert [(run["dag_id"], run["run_id"]) for run in event["created_dagruns"]] == [
        (REPORT_DAG, report_run["dag_run_id"])
    ]
    return event


# -- part 2: DAG runs started by SageMaker notifications -----------------------------------------------------------


def send_foreign_and_malformed(backend: LocalSageMakerAsyncBackend, queue_url: str) -> None:
    """Put in the watcher's queue a message that is not SageMaker's and a notification of another endpoint."""
    foreign = {
        "eventName": "InferenceResult",
        "eventSource": "aws:sagemaker",
        "invocationStatus": "Completed",
        "inferenceId": f"foreign-{uuid.uuid4().hex[:8]}",
        "requestParameters": {"endpointName": "some-other-endpoint"},
        "responseParameters": {"outputLocation": "s3://elsewhere/out/x.out"},
    }
    sqs = backend.client("sqs")
    sqs.send_message(QueueUrl=queue_url, MessageBody="this is not a SageMaker notification")
    sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(foreign))


def submit_outside_airflow(
    backend: LocalSageMakerAsyncBackend, cluster: AirflowCluster, rows: list[bytes], timeout: float
) -> dict[str, str]:
    """
    Submit each row with plain boto3, one at a time, each once the previous one's run has started.

    Airflow starts one run for the asset events queued before the scheduler creates it, so inferences that end
    together may share a run; spacing them shows one run per notification. Returns inference id -> status.
    """
    runtime, s3 = backend.client("sagemaker-runtime"), backend.client("s3")
    expected: dict[str, str] = {}
    for row in rows:
        started = len(dag_runs(cluster, NOTIFIED_DAG))
        key = f"e2e-watcher/{uuid.uuid4().hex}.csv"
        s3.put_object(Bucket="sagemaker-async-local", Key=key, Body=row)
        answer = runtime.invoke_endpoint_async(
            EndpointName=WATCHED_ENDPOINT,
            InputLocation=f"s3://sagemaker-async-local/{key}",
            ContentType="text/csv",
            InferenceId=f"outside-{uuid.uuid4().hex[:12]}",
        )
        expected[answer["InferenceId"]] = "Completed" if row == GOOD_ROW else "Failed"
        wait_for(
            f"a run of {NOTIFIED_DAG} for {answer['InferenceId']}",
            functools.partial(_more_runs, cluster, started),
            timeout,
            cluster,
            interval=0.5,
        )
    return expected


def _more_runs(cluster: AirflowCluster, started: int) -> bool:
    return len(dag_runs(cluster, NOTIFIED_DAG)) > started


def notified_payloads(cluster: AirflowCluster, timeout: float, count: int) -> list[list[dict[str, Any]]]:
    """Wait until ``count`` runs of the notification DAG ended; return each run's payloads (its XCom)."""
    wait_for(
        f"{count} runs of {NOTIFIED_DAG} to end",
        lambda: sum(run["state"] in {"success", "failed"} for run in dag_runs(cluster, NOTIFIED_DAG)) >= count,
        timeout,
        cluster,
        interval=1,
    )
    runs = dag_runs(cluster, NOTIFIED_DAG)
    assert [run["state"] for run in runs] == ["success"] * len(runs)
    assert {run["run_type"] for run in runs} == {"asset_triggered"}
    return [cluster.xcom(NOTIFIED_DAG, run["dag_run_id"], "handle_result") for run in runs]


def queue_depth(backend: LocalSageMakerAsyncBackend, queue_url: str) -> int:
    """Messages still in the queue, visible or in flight."""
    attributes = backend.client("sqs").get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


def wait_queue_depth(backend: LocalSageMakerAsyncBackend, queue_url: str, depth: int, timeout: float) -> int:
    """Wait (up to ``timeout`` s) until the queue holds ``depth`` messages; return the last depth seen."""
    deadline = time.monotonic() + timeout
    while (seen := queue_depth(backend, queue_url)) != depth and time.monotonic() < deadline:
        time.sleep(0.5)
    return seen
