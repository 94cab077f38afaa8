"""The harness itself, with real processes on 127.0.0.1: process trees, waits, the backend process, the env."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from airflow_sagemaker_async.local.harness import (
    BackendProcess,
    HarnessError,
    MetadataReader,
    ProcessExitedError,
    WaitTimeoutError,
    airflow_environment,
    free_port,
    process_tree,
    stop_tree,
    wait_for,
)

#: A parent that starts a child in a process group of its own (as Airflow's supervisors do), prints the child's
#: pid, and sleeps; with "ignore" as argument both ignore SIGTERM.
TREE = """
import os, signal, subprocess, sys, time
if sys.argv[1:] == ["ignore"]:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen(
    [sys.executable, "-c", "import signal, sys, time; "
     "signal.signal(signal.SIGTERM, signal.SIG_IGN) if sys.argv[1:] == ['ignore'] else None; time.sleep(600)",
     *sys.argv[1:]],
    start_new_session=True,
)
print(child.pid, flush=True)
time.sleep(600)
"""


def start_tree(*arguments: str) -> tuple[subprocess.Popen[bytes], int]:
    process = subprocess.Popen([sys.executable, "-c", TREE, *arguments], stdout=subprocess.PIPE, start_new_session=True)
    assert process.stdout is not None
    child = int(process.stdout.readline())
    process.stdout.close()  # it prints nothing more
    return process, child


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_free_port_can_be_bound_on_127_0_0_1() -> None:
    port = free_port()

    with socket.socket() as server:
        server.bind(("127.0.0.1", port))
        assert server.getsockname() == ("127.0.0.1", port)


def test_stop_tree_ends_a_descendant_in_a_process_group_of_its_own() -> None:
    process, child = start_tree()
    assert {member.pid for member in process_tree(process.pid)} == {process.pid, child}

    stop_tree(process, grace=10)

    assert gone(process.pid)
    assert wait_for("the child to go", lambda: gone(child), 10)


def test_stop_tree_sigkills_a_tree_that_ignores_sigterm_after_the_grace() -> None:
    process, child = start_tree("ignore")
    started = time.monotonic()

    stop_tree(process, grace=1)

    assert gone(process.pid)
    assert time.monotonic() - started >= 1  # SIGTERM was ignored for the whole grace
    assert wait_for("the child to go", lambda: gone(child), 10)


class OneProcess:
    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process

    def exited(self) -> str | None:
        code = self.process.poll()
        return None if code is None else f"the sleeper exited with code {code}"

    def log(self) -> str:
        return "the sleeper's log"


def test_wait_for_returns_the_first_true_value_and_counts_connection_errors_as_not_yet() -> None:
    answers = iter([ConnectionRefusedError(), 0, {"state": "success"}])

    def condition() -> object:
        answer = next(answers)
        if isinstance(answer, OSError):
            raise answer
        return answer

    assert wait_for("the answer", condition, 10, interval=0.01) == {"state": "success"}


def test_wait_for_raises_process_exited_when_a_watched_process_exits() -> None:
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    process.wait(30)

    with pytest.raises(ProcessExitedError, match="the sleeper exited with code 3 while waiting for Godot"):
        wait_for("Godot", lambda: False, 10, OneProcess(process))


def test_wait_for_raises_timeout_with_the_last_request_error_and_the_log() -> None:
    def refused() -> bool:
        raise ConnectionRefusedError("nobody home")

    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with pytest.raises(WaitTimeoutError, match=r"(?s)after 0 s waiting for Godot.*nobody home.*sleeper's log"):
            wait_for("Godot", refused, 0.3, OneProcess(process), interval=0.05)
    finally:
        stop_tree(process, grace=5)


def test_environment_leaves_out_the_callers_airflow_and_aws_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
    monkeypatch.setenv("AWS_PROFILE", "production")
    monkeypatch.setenv("SAGEMAKER_ASYNC_ENDPOINT", "someone-elses")
    monkeypatch.setenv("HARNESS_TEST_KEPT", "yes")

    env = airflow_environment(tmp_path / "home", dags_folder=tmp_path / "dags")

    assert "AIRFLOW__CORE__EXECUTOR" not in env
    assert "AWS_PROFILE" not in env
    assert "SAGEMAKER_ASYNC_ENDPOINT" not in env
    assert env["HARNESS_TEST_KEPT"] == "yes"
    assert env["AIRFLOW_HOME"] == str(tmp_path / "home")
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{tmp_path / 'home' / 'airflow.db'}"
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(tmp_path / "dags")
    assert env["PATH"].split(":")[0] == str(Path(sys.executable).parent)
    assert (tmp_path / "home").is_dir()
    assert not any(key.startswith("AIRFLOW__SAGEMAKER_ASYNC__") for key in env)


def test_environment_with_api_port_poll_schedule_and_extra(tmp_path: Path) -> None:
    env = airflow_environment(
        tmp_path,
        api_port=8123,
        poll_interval=0.5,
        max_poll_interval=1.0,
        min_deferral_seconds=0,
        extra={"AIRFLOW__CORE__EXECUTOR": "SequentialExecutor"},
    )

    assert env["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert env["AIRFLOW__API__PORT"] == "8123"
    assert env["AIRFLOW__API__BASE_URL"] == "http://127.0.0.1:8123"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:8123/execution/"
    assert env["AIRFLOW__SAGEMAKER_ASYNC__POLL_INTERVAL"] == "0.5"
    assert env["AIRFLOW__SAGEMAKER_ASYNC__MAX_POLL_INTERVAL"] == "1"
    assert env["AIRFLOW__SAGEMAKER_ASYNC__MIN_DEFERRAL_SECONDS"] == "0"
    assert env["AIRFLOW__CORE__EXECUTOR"] == "SequentialExecutor"  # extra wins


@pytest.mark.slow
def test_backend_process_is_ready_on_127_0_0_1_and_stops_with_its_ready_file(tmp_path: Path) -> None:
    with BackendProcess(tmp_path, quiet=True) as backend:
        ready = backend.ready
        pid = ready["pid"]
        env = airflow_environment(tmp_path / "airflow", ready=ready)

        assert ready["endpoint_url"].startswith("http://127.0.0.1:")
        assert ready["runtime_url"].startswith("http://127.0.0.1:")
        assert json.loads(backend.ready_file.read_text()) == ready
        assert backend.exited() is None
        assert env["AIRFLOW_CONN_AWS_DEFAULT"] == ready["airflow_conn_aws_default"]
        assert env["SAGEMAKER_ASYNC_ENDPOINT"] == "iris-endpoint"
        assert env["AWS_EC2_METADATA_DISABLED"] == "true"

    assert backend.process is not None
    assert backend.process.returncode == 0  # SIGTERM: a clean stop
    assert not backend.ready_file.exists()
    assert gone(pid)


def test_backend_process_that_exits_at_start_raises_with_its_log(tmp_path: Path) -> None:
    backend = BackendProcess(tmp_path)
    backend.command.append("--no-such-option")

    with pytest.raises(ProcessExitedError, match=r"local backend exited with code 2 \(log .*backend.log\)"):
        backend.start(timeout=60)
    assert "unrecognized arguments: --no-such-option" in backend.log()
    with pytest.raises(HarnessError, match="not started"):
        _ = backend.ready


def test_importing_the_harness_imports_no_airflow() -> None:
    code = (
        "import sys\n"
        "import airflow_sagemaker_async.local.harness\n"
        "print(sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.strip() == "[]"


@pytest.mark.slow
def test_metadata_reader_raises_airflows_error_when_the_home_has_no_database(tmp_path: Path) -> None:
    env = airflow_environment(tmp_path)

    with MetadataReader(env) as metadata, pytest.raises(HarnessError, match=r"(?s)dag_run.*no such table"):
        metadata.last_run("example")
