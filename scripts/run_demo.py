"""
Run the example DAGs against the local SageMaker async backend and show what each inference did.

``python scripts/run_demo.py`` (``make demo``):

1. starts the local backend (``sagemaker-async-local up``: moto + the runtime + the iris and streaming text
   models, on 127.0.0.1) with its demo endpoints ``iris-endpoint`` (async), ``iris-realtime`` and
   ``text-streaming`` (real-time);
2. creates a throw-away Airflow home in ``.demo/airflow`` (SQLite; ``.demo/`` is git-ignored, nothing is
   written elsewhere) and runs ``airflow db migrate``;
3. runs each example DAG with ``airflow dags test`` (tasks in this process, triggers in line), logs in
   ``.demo/logs/``;
4. reads the task states and XComs of each run through Airflow's Python API (a child Python with the demo's
   ``AIRFLOW_HOME``) and prints, for each inference, its id, status, predictions (or the model's error) and
   the time from submission to outcome;
5. then the asset examples, which need the scheduler and the triggerer (``airflow dags test`` has neither): it
   subscribes a queue of the watcher's own to the demo endpoint's topics, starts Airflow's components (as
   ``--ui`` does, logs in ``.demo/logs/assets/``), runs ``example_sagemaker_async_assets_score`` and shows what
   ``example_sagemaker_async_assets_report``, started by the batch's asset event, read from it; then submits
   three inferences with plain boto3 and shows the run of ``example_sagemaker_async_notifications`` that each
   notification started (``--no-assets`` skips this step, ``--assets-only`` runs only it);
6. exits non-zero if any example did not end as designed.

The example DAGs keep the plugin's default poll schedule (a copied DAG runs as in production); the demo speeds
them up from outside, with ``[sagemaker_async] poll_interval = 0.5`` and ``max_poll_interval = 1`` in the
environment (``AIRFLOW__SAGEMAKER_ASYNC__POLL_INTERVAL``, ``AIRFLOW__SAGEMAKER_ASYNC__MAX_POLL_INTERVAL``).
``airflow dags test`` runs each trigger in line, where the scheduler race that ``min_deferral_seconds`` guards
against cannot happen, so the demo sets it to 0 there; ``--ui`` keeps its default.

``python scripts/run_demo.py --ui`` (``make demo-ui``) starts the backend and Airflow's components with the
examples instead (``airflow scheduler``, ``dag-processor``, ``api-server`` on 127.0.0.1, ``triggerer``; SQLite,
LocalExecutor, the simple auth manager, as ``airflow standalone`` sets them up), prints the URL and the login,
and runs until Ctrl-C: trigger a DAG and watch its inference task sit in ``deferred``. Not ``airflow
standalone`` itself: its log servers listen on every interface; here the scheduler and the triggerer run with
``--skip-serve-logs`` and the api-server shows task and trigger logs from the local files.

Every process is started and stopped by :mod:`airflow_sagemaker_async.local.harness`.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import signal
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_sagemaker_async.local.harness import (
    AirflowCluster,
    BackendProcess,
    HarnessError,
    MetadataReader,
    airflow_environment,
    dags_test,
    free_port,
    migrate_db,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_sagemaker_async.local.harness import DagRunRecord

    #: Lines to print and problems found, from a run and its ``airflow dags test`` log.
    Reporter = Callable[[DagRunRecord, Path], tuple[list[str], list[str]]]

REPO = Path(__file__).resolve().parent.parent
EXAMPLES_DIR = REPO / "example_dags"
DEMO_DIR = REPO / ".demo"
LOGS = DEMO_DIR / "logs"
DAG_TEST_TIMEOUT = 300.0
UI_STARTUP_TIMEOUT = 180.0
#: The demo's pace: first check after 0.5 s, then at most every second (the plugin's defaults are slower).
POLL_INTERVAL = 0.5
MAX_POLL_INTERVAL = 1.0


def say(message: str) -> None:
    """Print one progress line at once."""
    print(message, flush=True)


# -- what each example must show -------------------------------------------------------------------------------


def seconds_between(start: str | None, end: str | None) -> str:
    """``end - start`` of two ISO-8601 timestamps, as ``"1.23 s"`` (``"?"`` when one is missing)."""
    if not start or not end:
        return "?"
    return f"{(datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds():.2f} s"


def describe_outcome(outcome: dict[str, Any], submitted_at: str | None = None) -> list[str]:
    """Lines telling one inference: id, status, time from submission to outcome, predictions or the model error."""
    took = seconds_between(submitted_at or outcome.get("submitted_at"), outcome.get("detected_at"))
    lines = [f"    inference {outcome['inference_id']}: {outcome['status']}, submit -> outcome {took}"]
    if outcome["status"] == "Completed" and isinstance(outcome.get("output"), dict):
        labels = [p["label"] for p in outcome["output"].get("predictions", [])]
        lines.append(f"      predictions ({len(labels)}): {dict(Counter(labels))}")
    elif outcome["status"] == "Failed":
        lines.append(f"      model error: {outcome.get('failure_reason')}")
    return lines


def expect(problems: list[str], condition: bool, message: str) -> None:
    """Record ``message`` as a problem unless ``condition`` holds."""
    if not condition:
        problems.append(message)


def check_states(run: DagRunRecord, expected: dict[str, str], problems: list[str]) -> None:
    """Record a problem for each task whose state is not the expected one, and for a run not ``success``."""
    expect(problems, run.state == "success", f"the run ended {run.state}, expected success")
    for task_id, state in expected.items():
        actual = run.state_of(task_id)
        expect(problems, actual == state, f"task {task_id} ended {actual}, expected {state}")


def report_inference(run: DagRunRecord, log_file: Path) -> tuple[list[str], list[str]]:
    """Lines and problems of ``example_sagemaker_async_inference``."""
    problems: list[str] = []
    check_states(run, {"load_samples": "success", "predict": "success", "report_accuracy": "success"}, problems)
    lines: list[str] = []
    outcome, score = run.xcom("predict"), run.xcom("report_accuracy")
    if outcome:
        lines += describe_outcome(outcome)
        expect(problems, outcome["status"] == "Completed", f"predict's outcome is {outcome['status']}")
    if score:
        lines.append(f"      accuracy against the true species: {score['correct']}/{score['total']}")
        expect(problems, score["accuracy"] >= 0.8, f"accuracy {score['accuracy']:.2f} is below 0.8")
    expect(problems, bool(outcome and score), "no outcome / accuracy in XCom")
    return lines, problems


def report_batch(run: DagRunRecord, log_file: Path) -> tuple[list[str], list[str]]:
    """Lines and problems of ``example_sagemaker_async_batch``."""
    problems: list[str] = []
    check_states(run, {"upload_inputs": "success", "summarize": "success"}, problems)
    inputs = run.xcom("upload_inputs") or []
    lines: list[str] = []
    for map_index, uri in enumerate(inputs):
        expect(problems, run.state_of("predict", map_index) == "success", f"predict[{map_index}] did not succeed")
        lines.append(f"    input {uri.rsplit('/', 1)[-1]}:")
        outcome = run.xcom("predict", map_index)
        if outcome:
            lines += describe_outcome(outcome)
    counts = run.xcom("summarize")
    lines.append(f"    summarize counted: {counts}")
    expect(problems, len(inputs) == 4, f"{len(inputs)} inputs uploaded, expected 4")
    expect(
        problems,
        bool(counts) and counts["Completed"] == 3 and counts["Failed"] == 1,
        f"summarize counted {counts}, expected 3 Completed and 1 Failed",
    )
    return lines, problems


def report_batch_scoring(run: DagRunRecord, log_file: Path) -> tuple[list[str], list[str]]:
    """Lines and problems of ``example_sagemaker_async_batch_scoring``."""
    problems: list[str] = []
    check_states(run, {"upload_inputs": "success", "score": "success", "report": "success"}, problems)
    summary = run.xcom("score") or {}
    lines = [
        f"    batch {summary.get('batch_tag')}: {summary.get('total')} items, {summary.get('counts')} in "
        f"{summary.get('duration_seconds')} s, {summary.get('invocations')} invocations, "
        f"{summary.get('deferrals')} deferral(s)",
        f"    manifest: {summary.get('manifest_location')}",
    ]
    log_lines = [line for line in log_file.read_text(errors="replace").splitlines() if "] item " in line]
    lines += [f"    {line.split('] ', 1)[-1].split(' [', 1)[0]}" for line in log_lines[:3]]
    expect(
        problems,
        summary.get("counts") == {"Completed": 288, "Failed": 12, "TimedOut": 0},
        f"the batch counted {summary.get('counts')}, expected 288 Completed and 12 Failed",
    )
    expect(problems, summary.get("invocations") == 300, f"{summary.get('invocations')} invocations, expected 300")
    return lines, problems


def report_failure(run: DagRunRecord, log_file: Path) -> tuple[list[str], list[str]]:
    """Lines and problems of ``example_sagemaker_async_failure``."""
    problems: list[str] = []
    check_states(
        run,
        {
            "predict_strict": "failed",
            "on_failure": "success",
            "predict_tolerant": "success",
            "handle_outcome": "success",
        },
        problems,
    )
    error = next(
        (
            line.strip()
            for line in log_file.read_text(errors="replace").splitlines()
            if "SageMakerAsyncInferenceError:" in line
        ),
        None,
    )
    lines = [
        f"    predict_strict: task {run.state_of('predict_strict')} (as designed), "
        f"on_failure (one_failed): {run.state_of('on_failure')}",
        f"      error: {error.split('SageMakerAsyncInferenceError: ', 1)[-1] if error else '(not found in the log)'}",
    ]
    expect(
        problems, error is not None and "must hold exactly 4 numbers" in error, "the model's error is not in the log"
    )
    outcome = run.xcom("predict_tolerant")
    lines.append(f"    predict_tolerant (fail_on_model_error=False): task {run.state_of('predict_tolerant')}")
    if outcome:
        lines += describe_outcome(outcome)
    expect(problems, bool(outcome) and outcome["status"] == "Failed", "predict_tolerant's outcome is not Failed")
    expect(
        problems,
        "must hold exactly 4 numbers" in str((outcome or {}).get("failure_reason")),
        "no model error in failure_reason",
    )
    return lines, problems


def report_sensor(run: DagRunRecord, log_file: Path) -> tuple[list[str], list[str]]:
    """Lines and problems of ``example_sagemaker_async_sensor``."""
    problems: list[str] = []
    check_states(run, {"submit": "success", "wait_for_result": "success", "log_predictions": "success"}, problems)
    submission, outcome = run.xcom("submit") or {}, run.xcom("wait_for_result")
    lines = [f"    submit returned at once: status {submission.get('status')}"]
    if outcome:
        lines += describe_outcome(outcome, submitted_at=submission.get("submitted_at"))
    expect(problems, submission.get("status") == "InProgress", "submit did not return the InProgress record")
    expect(problems, bool(outcome) and outcome["status"] == "Completed", "the sensor's outcome is not Completed")
    expect(problems, run.xcom("log_predictions") == ["setosa", "versicolor", "virginica"], "unexpected labels")
    return lines, problems


def report_push(run: DagRunRecord, log_file: Path) -> tuple[list[str], list[str]]:
    """Lines and problems of ``example_sagemaker_async_push``."""
    problems: list[str] = []
    check_states(run, {"predict": "success", "log_predictions": "success"}, problems)
    outcome = run.xcom("predict")
    lines = describe_outcome(outcome) if outcome else []
    log = log_file.read_text(errors="replace")
    woken = "woken by a notification" in log
    lines.append(f"    detected {'through the SQS notification' if woken else 'by a poll (before the notification)'}")
    expect(problems, "notifications https://" in log or "notifications http://" in log, "the trigger had no queue")
    expect(problems, run.xcom("log_predictions") == ["setosa", "versicolor", "virginica"], "unexpected labels")
    return lines, problems


def report_realtime(run: DagRunRecord, log_file: Path) -> tuple[list[str], list[str]]:
    """Lines and problems of ``example_sagemaker_realtime``."""
    problems: list[str] = []
    check_states(run, {"load_samples": "success", "predict": "success", "report_accuracy": "success"}, problems)
    lines: list[str] = []
    outcome, score = run.xcom("predict"), run.xcom("report_accuracy")
    if outcome:
        took = seconds_between(outcome.get("invoked_at"), outcome.get("completed_at"))
        labels = [p["label"] for p in (outcome.get("output") or {}).get("predictions", [])]
        lines += [
            f"    inference {outcome['inference_id']}: answered by variant {outcome['invoked_production_variant']} "
            f"in {took} ({outcome['output_bytes']} bytes, {outcome['content_type']})",
            f"      predictions ({len(labels)}): {dict(Counter(labels))}",
        ]
    if score:
        lines.append(f"      accuracy against the true species: {score['correct']}/{score['total']}")
        expect(problems, score["accuracy"] >= 0.8, f"accuracy {score['accuracy']:.2f} is below 0.8")
    expect(problems, bool(outcome and score), "no outcome / accuracy in XCom")
    return lines, problems


def report_streaming(run: DagRunRecord, log_file: Path) -> tuple[list[str], list[str]]:
    """Lines and problems of ``example_sagemaker_streaming``."""
    problems: list[str] = []
    check_states(run, {"generate": "success", "report": "success"}, problems)
    lines: list[str] = []
    outcome, report = run.xcom("generate"), run.xcom("report")
    if outcome:
        took = seconds_between(outcome.get("invoked_at"), outcome.get("completed_at"))
        first = outcome.get("time_to_first_part_seconds")
        first_text = f"{first * 1000:.0f} ms" if first is not None else "none arrived"
        lines.append(
            f"    stream {outcome['inference_id']}: {outcome['parts']} parts, {outcome['output_bytes']} bytes in "
            f"{took}, first part after {first_text}"
        )
        lines.append(f"      written part by part to {outcome['output_location']}")
        expect(problems, outcome["parts"] > 1, "the answer did not arrive in parts")
    if report:
        lines.append(f"      read back: {report['words']} words")
    expect(problems, bool(outcome and report), "no outcome / report in XCom")
    return lines, problems


#: (dag_id, run conf, what it shows, reporter). The sensor's model sleeps 2 s so that the wait is visible.
EXAMPLES: list[tuple[str, dict[str, Any] | None, str, Reporter]] = [
    ("example_sagemaker_async_inference", None, "24 iris flowers in one request", report_inference),
    ("example_sagemaker_async_batch", None, "one inference per S3 input, one malformed", report_batch),
    (
        "example_sagemaker_async_batch_scoring",
        None,
        "300 inputs in one batch task, every 25th malformed",
        report_batch_scoring,
    ),
    ("example_sagemaker_async_failure", None, "a malformed payload, handled two ways", report_failure),
    ("example_sagemaker_async_sensor", {"custom_attributes": "sleep=2"}, "submit, then a sensor waits", report_sensor),
    (
        "example_sagemaker_async_push",
        # Long enough for the poll schedule (0.5 s growing 1.5x, up to 300 s with a queue) to fall behind.
        {"custom_attributes": "sleep=8"},
        "woken by the endpoint's SNS notification through SQS",
        report_push,
    ),
    ("example_sagemaker_realtime", None, "24 iris flowers, one real-time call", report_realtime),
    ("example_sagemaker_streaming", None, "a text generation streamed into S3", report_streaming),
]


def run_examples(env: dict[str, str]) -> int:
    """Run every example with ``airflow dags test``, report each, return the exit code."""
    failed: list[str] = []
    # Its child imports Airflow while the first example runs; each later question takes milliseconds.
    with MetadataReader(env, LOGS / "metadata-reader.log") as metadata:
        for number, (dag_id, conf, what, reporter) in enumerate(EXAMPLES, start=1):
            log_file = LOGS / f"{dag_id}.log"
            say(f"[{number}/{len(EXAMPLES)}] {dag_id}: {what} (airflow dags test, log {log_file.relative_to(REPO)})")
            started = time.monotonic()
            code = dags_test(env, dag_id, log_file, conf=conf, timeout=DAG_TEST_TIMEOUT)
            run = metadata.last_run(dag_id)
            if run is None:
                say(f"    FAILED: no run recorded (airflow dags test exit {code}); see {log_file}")
                failed.append(dag_id)
                continue
            lines, problems = reporter(run, log_file)
            if code != 0:
                problems.append(
                    f"airflow dags test exited {code}" if code is not None else "airflow dags test timed out"
                )
            for line in lines:
                say(line)
            verdict = "as designed" if not problems else "NOT as designed: " + "; ".join(problems)
            say(f"    run {run.state} in {time.monotonic() - started:.1f} s: {verdict}")
            if problems:
                failed.append(dag_id)
    if failed:
        say(f"FAILED: {', '.join(failed)} did not end as designed (logs in {LOGS.relative_to(REPO)}/).")
        return 1
    say(f"All {len(EXAMPLES)} examples ended as designed.")
    return 0


# -- assets: the scheduler and the triggerer at work ----------------------------------------------------------

SCORE_DAG = "example_sagemaker_async_assets_score"
REPORT_DAG = "example_sagemaker_async_assets_report"
NOTIFIED_DAG = "example_sagemaker_async_notifications"
#: The watcher's queue: its own (push completion's queue deletes what it routes), on the demo's topics.
WATCHER_QUEUE = "sagemaker-async-local-watcher"
ASSETS_TIMEOUT = 240.0
TERMINAL = {"success", "failed"}


def _boto3(ready: dict[str, Any], service: str) -> Any:
    import boto3

    session: Any = boto3.session.Session()
    return session.client(
        service,
        endpoint_url=ready["runtime_url"] if service == "sagemaker-runtime" else ready["endpoint_url"],
        region_name=ready["region_name"],
        aws_access_key_id=ready["aws_access_key_id"],
        aws_secret_access_key=ready["aws_secret_access_key"],
    )


def _runs(cluster: AirflowCluster, dag_id: str) -> list[dict[str, Any]]:
    answer = cluster.request("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=100")
    return list(answer["dag_runs"])


def _wait(what: str, condition: Callable[[], Any], cluster: AirflowCluster) -> Any:
    from airflow_sagemaker_async.local.harness import wait_for

    return wait_for(what, condition, ASSETS_TIMEOUT, cluster, interval=1)


def watcher_queue(ready: dict[str, Any]) -> str:
    """Subscribe a queue of the watcher's own to the demo endpoint's topics; return its URL."""
    sqs, sns = _boto3(ready, "sqs"), _boto3(ready, "sns")
    url: str = sqs.create_queue(QueueName=WATCHER_QUEUE)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sqs.set_queue_attributes(
        QueueUrl=url,
        Attributes={
            "Policy": json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "sqs:SendMessage", "Resource": arn}],
                }
            )
        },
    )
    for topic in (ready["demo"]["success_topic_arn"], ready["demo"]["error_topic_arn"]):
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
    return url


def run_asset_examples(env: dict[str, str], ready: dict[str, Any]) -> int:
    """Start Airflow's components; show the asset pair and DAG runs started by notifications; return the exit code."""
    problems: list[str] = []
    (LOGS / "assets").mkdir(parents=True, exist_ok=True)
    with AirflowCluster(env, log_dir=LOGS / "assets") as cluster:
        say(f"[assets] starting Airflow's components (logs {(LOGS / 'assets').relative_to(REPO)}/) ...")
        try:
            cluster.start_components(UI_STARTUP_TIMEOUT)
            dags = (SCORE_DAG, REPORT_DAG, NOTIFIED_DAG)
            _wait("the asset DAGs to be parsed", lambda: all(cluster.dag_count(d) >= 1 for d in dags), cluster)
            # The `dags test` phase created every DAG of the folder paused (Airflow's default): unpause these three.
            for dag_id in dags:
                cluster.request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
            # The notifications first: the asset pair's batch runs on the same endpoint, and its notifications, received
            # together with one of these, would make one run for all (apache/airflow#62501 on SQLite).
            say(f"[assets] {NOTIFIED_DAG}: inferences submitted with plain boto3, one DAG run per notification")
            runtime, s3 = _boto3(ready, "sagemaker-runtime"), _boto3(ready, "s3")

            def seen(inference_id: str) -> dict[str, Any] | None:
                for run in _runs(cluster, NOTIFIED_DAG):
                    if run["state"] == "success":
                        for payload in cluster.xcom(NOTIFIED_DAG, run["dag_run_id"], "handle_result") or []:
                            if payload["inference_id"] == inference_id:
                                return {**payload, "run_id": run["dag_run_id"]}
                return None

            # One at a time: Airflow starts one run for the events queued before it creates the run, and on SQLite
            # an event stored while the scheduler creates a run waits for the next event (apache/airflow#62501).
            for number, row in enumerate([b"5.1,3.5,1.4,0.2", b"5.1,3.5,1.4", b"6.3,3.3,6.0,2.5"]):
                key = f"demo-watcher/{number}.csv"
                s3.put_object(Bucket="sagemaker-async-local", Key=key, Body=row)
                inference_id = runtime.invoke_endpoint_async(
                    EndpointName=ready["demo"]["endpoint_name"],
                    InputLocation=f"s3://sagemaker-async-local/{key}",
                    ContentType="text/csv",
                    InferenceId=f"demo-outside-airflow-{number}-{int(time.time())}",
                )["InferenceId"]
                expected = "Failed" if row.count(b",") < 3 else "Completed"
                payload = _wait(
                    f"a run of {NOTIFIED_DAG} for {inference_id}", functools.partial(seen, inference_id), cluster
                )
                say(f"    {inference_id} (submitted with boto3): {payload['status']} -> run {payload['run_id']}")
                say(f"      {payload['output_location'] or payload['failure_reason']}")
                expect(
                    problems, payload["status"] == expected, f"{inference_id} is {payload['status']}, not {expected}"
                )
            say(f"[assets] {SCORE_DAG}: a batch whose asset starts {REPORT_DAG}")
            score_run = cluster.trigger(SCORE_DAG)
            _wait(f"{SCORE_DAG} to end", lambda: cluster.run_state(SCORE_DAG, score_run) in TERMINAL, cluster)
            reports = _wait(
                f"{REPORT_DAG} to run on the asset event",
                lambda: [r for r in _runs(cluster, REPORT_DAG) if r["state"] in TERMINAL],
                cluster,
            )
            report = cluster.xcom(REPORT_DAG, reports[0]["dag_run_id"], "report")
            say(
                f"    {SCORE_DAG} run {cluster.run_state(SCORE_DAG, score_run)}; {REPORT_DAG} run {reports[0]['state']}"
            )
            say(f"    ({reports[0]['run_type']}), read from the asset event: {report}")
            expect(problems, report and report["source_run_id"] == score_run, "the report did not read A's event")
            expect(problems, report and report["counts"].get("Completed") == 5, "unexpected batch counts")

        except HarnessError as error:
            problems.append(str(error))
    if problems:
        say("    NOT as designed: " + "; ".join(problems))
        return 1
    say("    as designed")
    return 0


# -- the UI ----------------------------------------------------------------------------------------------------


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_ui(env: dict[str, str]) -> int:
    """Run Airflow's components on the environment's API port until Ctrl-C (or SIGTERM); return the exit code."""
    # Ctrl-C, or SIGINT / SIGTERM from a script (which may have started us with SIGINT ignored), stops everything.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    with AirflowCluster(env, log_dir=LOGS) as cluster:
        say(
            f"Starting Airflow on 127.0.0.1:{cluster.port}: scheduler, dag-processor, api-server, triggerer "
            f"(logs {LOGS.relative_to(REPO)}/<component>.log) ..."
        )
        try:
            cluster.start_components(UI_STARTUP_TIMEOUT)
            say(f"Airflow is up: {cluster.base}   login: admin / {cluster.password()}")
            say(
                "Trigger example_sagemaker_async_inference with custom_attributes 'sleep=20' to watch 'predict' "
                "sit in deferred while the model works. Ctrl-C stops everything."
            )
            while (problem := cluster.exited()) is None:
                time.sleep(1)
            say(problem)
            return 1
        except HarnessError as error:
            say(f"    {error}")
            return 1
        except KeyboardInterrupt:
            say("Stopping Airflow (scheduler, dag-processor, api-server, triggerer) ...")
            return 0


def main() -> int:
    """Parse the arguments, start the backend, run the examples (or the UI), stop everything."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--ui", action="store_true", help="run Airflow's UI on 127.0.0.1 with the examples instead")
    parser.add_argument("--port", type=int, default=0, help="api-server port for --ui (default: a free one)")
    parser.add_argument(
        "--no-assets", action="store_true", help="skip the asset examples (they start Airflow's components)"
    )
    parser.add_argument("--assets-only", action="store_true", help="run only the asset examples")
    arguments = parser.parse_args()

    started = time.monotonic()
    LOGS.mkdir(parents=True, exist_ok=True)
    say("Starting the local SageMaker backend (moto, runtime, iris and streaming text models) on 127.0.0.1 ...")
    try:
        with BackendProcess(DEMO_DIR, log_file=LOGS / "backend.log") as backend:
            try:
                ready = backend.ready
                say(f"    moto {ready['endpoint_url']}, runtime {ready['runtime_url']}")
                home = DEMO_DIR / "airflow"
                say(f"Creating a fresh Airflow home in {home.relative_to(REPO)} (airflow db migrate) ...")
                shutil.rmtree(home, ignore_errors=True)
                env = airflow_environment(
                    home,
                    ready=ready,
                    dags_folder=EXAMPLES_DIR,
                    api_port=(arguments.port or free_port()) if arguments.ui else None,
                    poll_interval=POLL_INTERVAL,
                    max_poll_interval=MAX_POLL_INTERVAL,
                    # The fast-event guard is for the scheduler's race; `dags test` runs triggers in line.
                    min_deferral_seconds=None if arguments.ui else 0,
                )
                migrate_db(env, LOGS / "db-migrate.log")
                if arguments.ui:
                    return run_ui(env)
                code = 0 if arguments.assets_only else run_examples(env)
                if not arguments.no_assets:
                    assets_env = airflow_environment(
                        home,
                        ready=ready,
                        dags_folder=EXAMPLES_DIR,
                        api_port=free_port(),
                        poll_interval=POLL_INTERVAL,
                        max_poll_interval=MAX_POLL_INTERVAL,
                        extra={"SAGEMAKER_ASYNC_WATCHER_QUEUE_URL": watcher_queue(ready)},
                    )
                    code = max(code, run_asset_examples(assets_env, ready))
                say(f"Demo finished in {time.monotonic() - started:.0f} s. To watch the DAGs in the UI: make demo-ui")
                return code
            finally:
                say("Stopping the local backend ...")
    except HarnessError as error:
        say(f"FAILED: {error}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
