"""
Run the example DAGs against the local SageMaker async backend and show what each inference did.

``python example_dags/run_demo.py`` (``make demo``):

1. starts the local backend (``sagemaker-async-local up``: moto + the async runtime + the iris model, on
   127.0.0.1) with its demo endpoint ``iris-endpoint``;
2. creates a throw-away Airflow home in ``.demo/airflow`` (SQLite; ``.demo/`` is git-ignored, nothing is
   written elsewhere) and runs ``airflow db migrate``;
3. runs each example DAG with ``airflow dags test`` (tasks in this process, triggers in line), logs in
   ``.demo/logs/``;
4. reads the task states and XComs of each run from the metadata DB and prints, for each inference, its id,
   status, predictions (or the model's error) and the time from submission to outcome;
5. exits non-zero if any example did not end as designed.

``python example_dags/run_demo.py --ui`` (``make demo-ui``) starts the backend and Airflow's components with the
examples instead (``airflow scheduler``, ``dag-processor``, ``api-server`` on 127.0.0.1, ``triggerer``; SQLite,
LocalExecutor, the simple auth manager, as ``airflow standalone`` sets them up), prints the URL and the login,
and runs until Ctrl-C: trigger a DAG and watch its inference task sit in ``deferred``. Not ``airflow
standalone`` itself: its log servers listen on every interface; here the scheduler and the triggerer run with
``--skip-serve-logs`` and the api-server shows task and trigger logs from the local files.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

EXAMPLES_DIR = Path(__file__).resolve().parent
REPO = EXAMPLES_DIR.parent
DEMO_DIR = REPO / ".demo"
BACKEND_READY_TIMEOUT = 120.0
DAG_TEST_TIMEOUT = 300.0


def say(message: str) -> None:
    """Print one progress line at once."""
    print(message, flush=True)


# -- the local backend and the Airflow environment -----------------------------------------------------------


def start_backend(ready_file: Path, log_file: Path) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    """Start ``sagemaker-async-local up`` in its own process group; return it and its ready document."""
    ready_file.unlink(missing_ok=True)
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "airflow_sagemaker_async.local.cli", "up", "--ready-file", str(ready_file)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + BACKEND_READY_TIMEOUT
    while not ready_file.exists():
        if process.poll() is not None:
            raise SystemExit(f"The local backend exited with code {process.returncode}; see {log_file}.")
        if time.monotonic() > deadline:
            stop_process_group(process)
            raise SystemExit(f"The local backend was not ready after {BACKEND_READY_TIMEOUT:.0f} s; see {log_file}.")
        time.sleep(0.2)
    return process, json.loads(ready_file.read_text())


def stop_process_group(process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """SIGTERM the process group of ``process`` (started with ``start_new_session``), SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


def airflow_environment(airflow_home: Path, ready: dict[str, Any]) -> dict[str, str]:
    """Return the environment of every Airflow command: the demo's home, DB, DAG folder and AWS connection."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW", "AWS_")) and key not in ("SAGEMAKER_ASYNC_ENDPOINT", "SAGEMAKER_ASYNC_BUCKET")
    }
    env.update(
        {
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
            "AIRFLOW__CORE__DAGS_FOLDER": str(EXAMPLES_DIR),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW_CONN_AWS_DEFAULT": ready["airflow_conn_aws_default"],
            # boto3 outside the connection (none expected) stays away from real accounts and the metadata service.
            "AWS_ACCESS_KEY_ID": ready["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": ready["aws_secret_access_key"],
            "AWS_DEFAULT_REGION": ready["region_name"],
            "AWS_EC2_METADATA_DISABLED": "true",
            "SAGEMAKER_ASYNC_ENDPOINT": ready["demo"]["endpoint_name"],
            "SAGEMAKER_ASYNC_BUCKET": ready["demo"]["bucket"],
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def fresh_airflow_home(env: dict[str, str]) -> Path:
    """Empty the demo's Airflow home and create its metadata DB."""
    home = Path(env["AIRFLOW_HOME"])
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    log_file = DEMO_DIR / "logs" / "db-migrate.log"
    with log_file.open("wb") as log:
        result = subprocess.run(
            [airflow_cli(), "db", "migrate"], env=env, stdout=log, stderr=subprocess.STDOUT, check=False
        )
    if result.returncode != 0:
        raise SystemExit(f"airflow db migrate failed (exit {result.returncode}); see {log_file}.")
    return home


def airflow_cli() -> str:
    """Return the ``airflow`` script of this interpreter's environment."""
    return str(Path(sys.executable).with_name("airflow"))


def free_port() -> int:
    """Return a TCP port free on 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- reading a run back from the metadata DB -----------------------------------------------------------------


@dataclass
class RunRecord:
    """One DAG run as the metadata DB holds it: task states and ``return_value`` XComs by (task_id, map_index)."""

    dag_id: str
    run_id: str
    state: str
    task_states: dict[tuple[str, int], str]
    xcoms: dict[tuple[str, int], Any] = field(default_factory=dict)

    def state_of(self, task_id: str, map_index: int = -1) -> str | None:
        """Return the state of one task instance, None if there is none."""
        return self.task_states.get((task_id, map_index))

    def xcom(self, task_id: str, map_index: int = -1) -> Any:
        """Return the ``return_value`` XCom of one task instance, None if there is none."""
        return self.xcoms.get((task_id, map_index))


def read_last_run(db_path: Path, dag_id: str) -> RunRecord | None:
    """Read the latest run of ``dag_id`` (Airflow 3 schema: ``dag_run``, ``task_instance``, ``xcom``)."""
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as db:
        row = db.execute(
            "SELECT run_id, state FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (dag_id,)
        ).fetchone()
        if row is None:
            return None
        run_id, state = row
        states = {
            (task_id, map_index): task_state
            for task_id, map_index, task_state in db.execute(
                "SELECT task_id, map_index, state FROM task_instance WHERE dag_id = ? AND run_id = ?", (dag_id, run_id)
            )
        }
        xcoms = {
            (task_id, map_index): json.loads(value)
            for task_id, map_index, value in db.execute(
                "SELECT task_id, map_index, value FROM xcom WHERE dag_id = ? AND run_id = ? AND key = 'return_value'",
                (dag_id, run_id),
            )
        }
    return RunRecord(dag_id, run_id, state, states, xcoms)


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


def check_states(run: RunRecord, expected: dict[str, str], problems: list[str]) -> None:
    """Record a problem for each task whose state is not the expected one, and for a run not ``success``."""
    expect(problems, run.state == "success", f"the run ended {run.state}, expected success")
    for task_id, state in expected.items():
        actual = run.state_of(task_id)
        expect(problems, actual == state, f"task {task_id} ended {actual}, expected {state}")


def report_inference(run: RunRecord, log_file: Path) -> tuple[list[str], list[str]]:
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


def report_batch(run: RunRecord, log_file: Path) -> tuple[list[str], list[str]]:
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


def report_failure(run: RunRecord, log_file: Path) -> tuple[list[str], list[str]]:
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


def report_sensor(run: RunRecord, log_file: Path) -> tuple[list[str], list[str]]:
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


#: (dag_id, run conf, what it shows, reporter). The sensor's model sleeps 2 s so that the wait is visible.
EXAMPLES = [
    ("example_sagemaker_async_inference", None, "24 iris flowers in one request", report_inference),
    ("example_sagemaker_async_batch", None, "one inference per S3 input, one malformed", report_batch),
    ("example_sagemaker_async_failure", None, "a malformed payload, handled two ways", report_failure),
    ("example_sagemaker_async_sensor", {"custom_attributes": "sleep=2"}, "submit, then a sensor waits", report_sensor),
]


def run_examples(env: dict[str, str]) -> int:
    """Run every example with ``airflow dags test``, report each, return the exit code."""
    db_path = Path(env["AIRFLOW_HOME"]) / "airflow.db"
    failed: list[str] = []
    for number, (dag_id, conf, what, reporter) in enumerate(EXAMPLES, start=1):
        log_file = DEMO_DIR / "logs" / f"{dag_id}.log"
        say(f"[{number}/{len(EXAMPLES)}] {dag_id}: {what} (airflow dags test, log {log_file.relative_to(REPO)})")
        command = [airflow_cli(), "dags", "test", dag_id]
        if conf:
            command += ["--conf", json.dumps(conf)]
        started = time.monotonic()
        with log_file.open("wb") as log:
            try:
                result = subprocess.run(
                    command, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=DAG_TEST_TIMEOUT, check=False
                )
                code = result.returncode
            except subprocess.TimeoutExpired:
                code = None
        run = read_last_run(db_path, dag_id)
        if run is None:
            say(f"    FAILED: no run recorded (airflow dags test exit {code}); see {log_file}")
            failed.append(dag_id)
            continue
        lines, problems = reporter(run, log_file)
        if code != 0:
            problems.append(f"airflow dags test exited {code}" if code is not None else "airflow dags test timed out")
        for line in lines:
            say(line)
        verdict = "as designed" if not problems else "NOT as designed: " + "; ".join(problems)
        say(f"    run {run.state} in {time.monotonic() - started:.1f} s: {verdict}")
        if problems:
            failed.append(dag_id)
    if failed:
        say(f"FAILED: {', '.join(failed)} did not end as designed (logs in {(DEMO_DIR / 'logs').relative_to(REPO)}/).")
        return 1
    say(f"All {len(EXAMPLES)} examples ended as designed.")
    return 0


# -- the UI ----------------------------------------------------------------------------------------------------


#: Airflow's components for the UI, in start order: (name, ``airflow`` arguments); ``{port}`` is the API's port.
#: --skip-serve-logs: the log servers would listen on every interface (no setting changes that); on one
#: machine the api-server reads the task and trigger logs from the files under ``$AIRFLOW_HOME/logs``.
UI_COMPONENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("scheduler", ("scheduler", "--skip-serve-logs")),
    ("dag-processor", ("dag-processor",)),
    ("api-server", ("api-server", "--host", "127.0.0.1", "--port", "{port}")),
    ("triggerer", ("triggerer", "--skip-serve-logs")),
)
UI_STARTUP_TIMEOUT = 180.0


def stop_process_trees(processes: list[subprocess.Popen[bytes]], grace: float = 20.0) -> None:
    """SIGTERM each process and every descendant, SIGKILL what is left after ``grace`` s, then each group.

    Each process leads its own session (``start_new_session``). Airflow's supervisors put task runners in
    process groups of their own, so the tree is listed (before the signal: orphans cannot be found) and signalled.
    """
    import psutil  # an Airflow dependency

    members: list[psutil.Process] = []
    for process in processes:
        try:
            root = psutil.Process(process.pid)
            members += [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
    for member in members:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.terminate()
    _, alive = psutil.wait_procs(members, timeout=grace)
    for member in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
    psutil.wait_procs(alive, timeout=10)
    for process in processes:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10)


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_ui(env: dict[str, str], port: int) -> int:
    """Run Airflow's components on 127.0.0.1:``port`` until Ctrl-C (or SIGTERM); return the exit code."""
    env = {
        **env,
        # What `airflow standalone` forces.
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        # The api-server on 127.0.0.1 only, and the tasks' way to it.
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        # Anything that starts `airflow ...` by name finds this environment's script first.
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
    }
    # Ctrl-C, or SIGINT / SIGTERM from a script (which may have started us with SIGINT ignored), stops everything.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    logs = DEMO_DIR / "logs"
    say(
        f"Starting Airflow on 127.0.0.1:{port}: {', '.join(name for name, _ in UI_COMPONENTS)} "
        f"(logs {logs.relative_to(REPO)}/<component>.log) ..."
    )
    processes: dict[str, subprocess.Popen[bytes]] = {}
    passwords = Path(env["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated"

    def exited() -> str | None:
        for name, process in processes.items():
            if process.poll() is not None:
                return f"airflow {name} exited with code {process.returncode}; see {logs / (name + '.log')}"
        return None

    try:
        for name, command in UI_COMPONENTS:
            with (logs / f"{name}.log").open("wb") as log:
                processes[name] = subprocess.Popen(
                    [airflow_cli(), *(argument.format(port=port) for argument in command)],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        deadline = time.monotonic() + UI_STARTUP_TIMEOUT
        while not (_answers(port) and passwords.exists()):
            if (problem := exited()) is not None:
                say(problem)
                return 1
            if time.monotonic() > deadline:
                say(f"    no api-server after {UI_STARTUP_TIMEOUT:.0f} s; see {logs / 'api-server.log'}")
                return 1
            time.sleep(1)
        password = json.loads(passwords.read_text()).get("admin", "?")
        say(f"Airflow is up: http://127.0.0.1:{port}   login: admin / {password}")
        say(
            "Trigger example_sagemaker_async_inference with custom_attributes 'sleep=20' to watch 'predict' "
            "sit in deferred while the model works. Ctrl-C stops everything."
        )
        while (problem := exited()) is None:
            time.sleep(1)
        say(problem)
        return 1
    except KeyboardInterrupt:
        say("Stopping Airflow (scheduler, dag-processor, api-server, triggerer) ...")
        return 0
    finally:
        stop_process_trees(list(processes.values()))


def _answers(port: int) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=2):
            return True
    except (urllib.error.URLError, OSError):
        return False


def main() -> int:
    """Parse the arguments, start the backend, run the examples (or the UI), stop everything."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--ui", action="store_true", help="run Airflow's UI on 127.0.0.1 with the examples instead")
    parser.add_argument("--port", type=int, default=0, help="api-server port for --ui (default: a free one)")
    arguments = parser.parse_args()

    started = time.monotonic()
    (DEMO_DIR / "logs").mkdir(parents=True, exist_ok=True)
    say("Starting the local SageMaker async backend (moto, async runtime, iris model) on 127.0.0.1 ...")
    backend, ready = start_backend(DEMO_DIR / "backend-ready.json", DEMO_DIR / "logs" / "backend.log")
    try:
        say(f"    moto {ready['endpoint_url']}, runtime {ready['runtime_url']}")
        env = airflow_environment(DEMO_DIR / "airflow", ready)
        say(f"Creating a fresh Airflow home in {(DEMO_DIR / 'airflow').relative_to(REPO)} (airflow db migrate) ...")
        fresh_airflow_home(env)
        if arguments.ui:
            return run_ui(env, arguments.port or free_port())
        code = run_examples(env)
        say(f"Demo finished in {time.monotonic() - started:.0f} s. To watch the DAGs in the UI: make demo-ui")
        return code
    finally:
        say("Stopping the local backend ...")
        stop_process_group(backend)


if __name__ == "__main__":
    sys.exit(main())
