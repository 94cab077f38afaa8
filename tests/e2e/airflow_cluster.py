"""
What the end-to-end tests share: an Airflow cluster on 127.0.0.1, a client of its REST API, and a sure way to
end every process they started.

The cluster is what ``airflow standalone`` would run (SQLite, LocalExecutor, the simple auth manager), started
as separate processes: ``airflow scheduler --skip-serve-logs``, ``airflow dag-processor``, ``airflow api-server``
(``--host 127.0.0.1``) and ``airflow triggerer --skip-serve-logs``. Not standalone itself: it starts the
scheduler's and the triggerer's log servers, which listen on every interface (0.0.0.0 / [::]) and no setting
changes that. Without them nothing is lost on one machine: tasks (LocalExecutor) and triggers write their logs
under ``<AIRFLOW_HOME>/logs`` and the api-server reads those files.

Each Airflow process runs in its own session (process group). Airflow's supervisors put some children in
process groups of their own (task runners, ``setpgid``), so a stop signals the process's whole tree (every
descendant found before the signal), then its process group.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Self

import psutil
import pytest

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from airflow_sagemaker_async.local.backend import LocalEndpoint, LocalSageMakerAsyncBackend

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "example_dags"
PASSWORD_FILE = "simple_auth_manager_passwords.json.generated"


def airflow_cli() -> str:
    """The ``airflow`` script of this virtualenv."""
    return str(Path(sys.executable).with_name("airflow"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def airflow_environment(
    home: Path, port: int, backend: LocalSageMakerAsyncBackend, endpoint: LocalEndpoint
) -> dict[str, str]:
    """The environment of every Airflow process: SQLite in ``home``, the example DAGs, the API on 127.0.0.1.

    The executor and auth manager are the ones ``airflow standalone`` forces: LocalExecutor, simple auth manager.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__DAGS_FOLDER": str(EXAMPLES_DIR),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            # The two settings that keep the api-server on 127.0.0.1 and let tasks reach it on our port.
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW_CONN_AWS_DEFAULT": backend.airflow_connection_env(),
            "SAGEMAKER_ASYNC_ENDPOINT": endpoint.endpoint_name,
            "PYTHONUNBUFFERED": "1",
            # Anything that starts `airflow ...` by name finds this environment's script first.
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        }
    )
    return env


def process_tree(pid: int) -> list[psutil.Process]:
    """The process ``pid`` and all its descendants, as they are now (empty when it is gone)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def kill_tree(pid: int, sig: signal.Signals) -> list[psutil.Process]:
    """Send ``sig`` once to ``pid`` and to every descendant; return them all.

    The descendants are listed before the signal: once their parent is dead they can no longer be found.
    """
    tree = process_tree(pid)
    for process in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(sig)
    return tree


def stop_trees(processes: Sequence[subprocess.Popen[bytes]], grace: float = 30) -> None:
    """SIGTERM each process and its tree once, SIGKILL whatever is left after ``grace`` seconds.

    Each process must lead its own process group (``start_new_session=True``): the group gets SIGKILL too,
    for children that left the tree (reparented) but not the group.
    """
    trees = [kill_tree(process.pid, signal.SIGTERM) for process in processes]
    _, alive = psutil.wait_procs([member for tree in trees for member in tree], timeout=grace)
    for survivor in alive:
        kill_tree(survivor.pid, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=10)
    for process in processes:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10)


def stop_tree(process: subprocess.Popen[bytes], grace: float = 30) -> None:
    """:func:`stop_trees` for one process."""
    stop_trees([process], grace)


class AirflowProcess:
    """One Airflow command (``airflow triggerer``, ...) in its own session, its output in ``<home>/<name>.log``."""

    def __init__(self, name: str, command: Sequence[str], env: dict[str, str], home: Path) -> None:
        self.name = name
        self.log_path = home / f"{name}.log"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [airflow_cli(), *command], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def exit_code(self) -> int | None:
        return self.process.poll()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, grace: float = 30) -> None:
        stop_tree(self.process, grace)


class Watched(Protocol):
    """What :func:`wait_for` watches while it waits: processes that must not exit, a log to show on failure."""

    def exited(self) -> str | None:
        """Say which watched process exited, or ``None`` while all run."""

    def log(self) -> str: ...


def wait_for(what: str, condition: Callable[[], Any], timeout: float, watched: Watched, interval: float = 0.5) -> Any:
    """Call ``condition`` every ``interval`` seconds until it returns a true value, and return that value.

    Fails the test when ``timeout`` seconds pass or a watched process exits. A request that times out or
    cannot connect (an api-server slow under load) counts as "not yet"; an HTTP error answer does not.
    """
    deadline = time.monotonic() + timeout
    last_error: OSError | None = None
    while time.monotonic() < deadline:
        if (exited := watched.exited()) is not None:
            pytest.fail(f"{exited} while waiting for {what}")
        try:
            value = condition()
        except urllib.error.HTTPError:
            raise
        except OSError as error:
            last_error, value = error, None
        if value:
            return value
        time.sleep(interval)
    pytest.fail(
        f"timed out after {timeout:.0f} s waiting for {what} (last request error: {last_error!r}); "
        f"log tail:\n{watched.log()[-4000:]}"
    )


class AirflowApi:
    """A small client of Airflow's public REST API (``/api/v2``) on 127.0.0.1, with a simple auth manager token."""

    def __init__(self, port: int, home: Path) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.home = home
        self.token: str | None = None

    def request(self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 10) -> Any:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, headers=headers, method=method)
        with urllib.request.urlopen(request, timeout=timeout) as response:  # 127.0.0.1 only
            return json.loads(response.read() or b"null")

    def answers(self) -> bool:
        try:
            self.request("GET", "/api/v2/monitor/health", timeout=2)
        except OSError:
            return False
        return True

    def password_file(self) -> Path:
        return self.home / PASSWORD_FILE

    def login(self) -> None:
        passwords = json.loads(self.password_file().read_text())
        answer = self.request("POST", "/auth/token", {"username": "admin", "password": passwords["admin"]})
        self.token = answer["access_token"]

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        run = self.request("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}})
        return str(run["dag_run_id"])

    def run_state(self, dag_id: str, run_id: str) -> str:
        return str(self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"])

    def task_states(self, dag_id: str, run_id: str) -> dict[tuple[str, int], str | None]:
        answer = self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=100")
        return {(ti["task_id"], ti["map_index"]): ti["state"] for ti in answer["task_instances"]}

    def task_instance(self, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
        answer = self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")
        return dict(answer)

    def xcom(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> Any:
        path = (
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value"
            f"?map_index={map_index}&deserialize=true"
        )
        return self.request("GET", path)["value"]

    def task_log_dir(self, dag_id: str, run_id: str, task_id: str) -> Path:
        return self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1) -> str:
        """One attempt's log as the UI gets it from the api-server (``.../logs/{try}``), one line per message."""
        path = (
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}"
            f"?full_content=true&map_index={map_index}"
        )
        content = self.request("GET", path, timeout=30)["content"]
        return "\n".join(line if isinstance(line, str) else json.dumps(line) for line in content)


#: The components of a cluster, in start order: (name, ``airflow`` arguments). ``{port}`` is the API's port.
#: --skip-serve-logs: the log servers would listen on every interface; the api-server reads the log files.
COMPONENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("scheduler", ("scheduler", "--skip-serve-logs")),
    ("dag-processor", ("dag-processor",)),
    ("api-server", ("api-server", "--host", "127.0.0.1", "--port", "{port}")),
    ("triggerer", ("triggerer", "--skip-serve-logs")),
)


class AirflowCluster(AirflowApi):
    """Airflow's components as separate processes in one ``AIRFLOW_HOME``, and a client of its REST API.

    Use it as a context manager: whatever happens, every process it started is stopped on the way out.
    """

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        super().__init__(int(env["AIRFLOW__API__PORT"]), home)
        self.port = int(env["AIRFLOW__API__PORT"])
        self.env = env
        self.processes: dict[str, AirflowProcess] = {}

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def migrate_db(self, timeout: float = 300) -> None:
        """``airflow db migrate``, its output in ``<home>/db-migrate.log``."""
        with (self.home / "db-migrate.log").open("wb") as log:
            subprocess.run(
                [airflow_cli(), "db", "migrate"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=True,
            )

    def start(self, name: str, *command: str) -> AirflowProcess:
        self.processes[name] = AirflowProcess(name, command, self.env, self.home)
        return self.processes[name]

    def start_components(self, startup_timeout: float) -> None:
        """Start every component, wait for the api-server to answer, log in as admin."""
        for name, command in COMPONENTS:
            self.start(name, *(argument.format(port=self.port) for argument in command))
        wait_for("the api-server to answer", self.answers, startup_timeout, self, interval=1)
        wait_for("the admin password", self.password_file().exists, 60, self)
        self.login()

    def forget(self, name: str) -> AirflowProcess:
        """Stop watching a process that is meant to die (it is still stopped at the end)."""
        process = self.processes.pop(name)
        self.processes[f"{name} (dead)"] = process
        return process

    def exited(self) -> str | None:
        for name, process in self.processes.items():
            if not name.endswith("(dead)") and (code := process.exit_code()) is not None:
                return f"airflow {name} exited ({code})"
        return None

    def log(self) -> str:
        return "\n".join(f"==> {name}:\n{process.log()[-1500:]}" for name, process in self.processes.items())

    def stop(self) -> None:
        stop_trees([process.process for process in self.processes.values()], grace=20)

    def listening_addresses(self) -> set[tuple[str, int]]:
        """Every TCP address on which a process of the cluster (or a descendant) listens."""
        addresses = set()
        for process in self.processes.values():
            for member in process_tree(process.pid):
                try:
                    connections = member.net_connections(kind="tcp")
                except psutil.NoSuchProcess:
                    continue
                addresses |= {(c.laddr.ip, c.laddr.port) for c in connections if c.status == psutil.CONN_LISTEN}
        return addresses
