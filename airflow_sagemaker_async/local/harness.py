"""Start and stop the processes of a local test or demo: the backend, Airflow's components, ``airflow dags test``.

One harness for the demo (``scripts/run_demo.py``), the end-to-end tests and the benchmarks, and for your own
DAG tests under a real Airflow. Everything listens on 127.0.0.1; nothing here imports Airflow: it is driven
through its command line (``airflow db migrate``, ``airflow dags test``, ``airflow scheduler`` ...), its REST
API (:class:`AirflowApi`) and, for what the REST API needs a running api-server for, its Python API in a child
process (:class:`MetadataReader`). Its state is never read with SQL.

- :class:`BackendProcess`: ``sagemaker-async-local up --ready-file`` in a process of its own, and its ready
  document (URLs, credentials, the demo endpoint's names).
- :func:`airflow_environment`: the environment of every Airflow command: a private ``AIRFLOW_HOME`` with
  SQLite, the DAG folder, ``aws_default`` pointing at the backend, and (with ``api_port``) the cluster
  settings that keep the api-server on 127.0.0.1.
- :func:`migrate_db`, :func:`dags_test`: the two one-shot commands.
- :class:`AirflowCluster`: ``airflow scheduler --skip-serve-logs``, ``dag-processor``, ``api-server --host
  127.0.0.1`` and ``triggerer --skip-serve-logs`` as separate processes, what ``airflow standalone`` would run
  (LocalExecutor, the simple auth manager) but without its log servers, which listen on every interface (no
  setting changes that). On one machine nothing is lost: tasks and triggers write their logs under
  ``<AIRFLOW_HOME>/logs`` and the api-server reads those files.
- :func:`stop_trees`: every process started here leads a session of its own; Airflow's supervisors put task
  runners in process groups of their own, so a stop signals each process's whole tree (listed before the
  signal: orphans cannot be found), then its process group.

Errors::

    HarnessError (RuntimeError)      a command failed; the message names its log
     +-- ProcessExitedError          a process that had to keep running exited
     +-- WaitTimeoutError            a condition did not come true in time

.. code-block:: python

    with BackendProcess(work_dir) as backend:
        env = airflow_environment(work_dir / "airflow", ready=backend.ready, dags_folder=Path("dags"))
        migrate_db(env, work_dir / "db-migrate.log")
        assert dags_test(env, "my_dag", work_dir / "my_dag.log") == 0
        with MetadataReader(env) as metadata:
            assert metadata.last_run("my_dag").state == "success"
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from airflow_sagemaker_async.local.topology import CELERY_COMPONENTS, CELERY_EXECUTOR

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from types import TracebackType
    from typing import Self

    from airflow_sagemaker_async.local.topology import CeleryServers
from airflow_sagemaker_async.local.airflow_api import PASSWORD_FILE, SIMPLE_AUTH_MANAGER, AirflowApi
from airflow_sagemaker_async.local.airflow_metadata import DagRunRecord, MetadataReader, TriggerRow
from airflow_sagemaker_async.local.processes import (
    LOCALHOST,
    BackendProcess,
    HarnessError,
    ProcessExitedError,
    WaitTimeoutError,
    airflow_cli,
    console_script,
    free_port,
    process_tree,
    signal_tree,
    stop_tree,
    stop_trees,
    wait_for,
)

__all__ = [
    "LOCALHOST",
    "PASSWORD_FILE",
    "SIMPLE_AUTH_MANAGER",
    "AirflowApi",
    "AirflowCluster",
    "AirflowProcess",
    "BackendProcess",
    "DagRunRecord",
    "HarnessError",
    "MetadataReader",
    "ProcessExitedError",
    "TriggerRow",
    "WaitTimeoutError",
    "airflow_cli",
    "airflow_environment",
    "console_script",
    "dags_test",
    "free_port",
    "migrate_db",
    "process_tree",
    "signal_tree",
    "stop_tree",
    "stop_trees",
    "wait_for",
]

#: Airflow's components, in start order: (name, ``airflow`` arguments); ``{port}`` is the api-server's port.
#: ``--skip-serve-logs``: the log servers would listen on every interface; the api-server reads the log files.
COMPONENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("scheduler", ("scheduler", "--skip-serve-logs")),
    ("dag-processor", ("dag-processor",)),
    ("api-server", ("api-server", "--host", LOCALHOST, "--port", "{port}")),
    ("triggerer", ("triggerer", "--skip-serve-logs")),
)


# -- Airflow's environment and one-shot commands ----------------------------------------------------------------


def airflow_environment(
    home: Path,
    *,
    ready: Mapping[str, Any] | None = None,
    dags_folder: Path | None = None,
    api_port: int | None = None,
    poll_interval: float | None = None,
    max_poll_interval: float | None = None,
    min_deferral_seconds: float | None = None,
    servers: CeleryServers | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Return the environment of every Airflow command of one test or demo.

    It starts from ``os.environ`` without any ``AIRFLOW*``, ``AWS_*`` or ``SAGEMAKER_ASYNC_*`` variable, so that
    nothing of the caller's Airflow or AWS account leaks in, and sets: ``AIRFLOW_HOME`` = ``home`` with a SQLite
    DB in it, no Airflow examples, unbuffered Python output, and this environment's ``bin`` first on ``PATH``
    (anything that starts ``airflow ...`` by name finds the same Airflow).

    :param home: the Airflow home (created if missing; not emptied).
    :param ready: the backend's ready document (:attr:`BackendProcess.ready`, or
        :func:`~airflow_sagemaker_async.local.cli.ready_document` of a backend in this process): sets
        ``AIRFLOW_CONN_AWS_DEFAULT``, the ``AWS_*`` credentials and region (boto3 outside the connection stays
        away from real accounts and the metadata service) and, with a demo, ``SAGEMAKER_ASYNC_ENDPOINT``,
        ``SAGEMAKER_ASYNC_BUCKET`` and ``SAGEMAKER_ASYNC_NOTIFICATION_QUEUE_URL``. Default none.
    :param dags_folder: ``[core] dags_folder``, default Airflow's (``<home>/dags``).
    :param api_port: set up a cluster (:class:`AirflowCluster`): LocalExecutor, the simple auth manager with
        the user ``admin``, DAGs unpaused at creation, the api-server on 127.0.0.1:``api_port`` and the
        tasks' way to it. Default none (``airflow dags test`` needs none of it).
    :param poll_interval: ``[sagemaker_async] poll_interval`` (seconds), the first wait of the operators and
        sensors that do not set theirs; default none (the plugin's default).
    :param max_poll_interval: ``[sagemaker_async] max_poll_interval`` (seconds); default none.
    :param min_deferral_seconds: ``[sagemaker_async] min_deferral_seconds``, the guard that keeps a trigger
        from firing that soon after the deferral (a scheduler race, see docs/known-issues.md); default
        none (the plugin's default). 0 is safe only where triggers run in line (``airflow dags test``).
    :param servers: the PostgreSQL and Redis of the Celery topology (:func:`~airflow_sagemaker_async.local.
        topology.cluster_servers`): the metadata DB, the CeleryExecutor and its broker instead of SQLite and the
        LocalExecutor; :class:`AirflowCluster` then starts :data:`~airflow_sagemaker_async.local.topology.
        CELERY_COMPONENTS`. Default none (SQLite).
    :param extra: more variables, set last (they win). Default none.
    """
    home.mkdir(parents=True, exist_ok=True)
    env = {
        key: value for key, value in os.environ.items() if not key.startswith(("AIRFLOW", "AWS_", "SAGEMAKER_ASYNC_"))
    }
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "PYTHONUNBUFFERED": "1",
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        }
    )
    if dags_folder is not None:
        env["AIRFLOW__CORE__DAGS_FOLDER"] = str(dags_folder)
    if ready is not None:
        env.update(
            {
                "AIRFLOW_CONN_AWS_DEFAULT": ready["airflow_conn_aws_default"],
                "AWS_ACCESS_KEY_ID": ready["aws_access_key_id"],
                "AWS_SECRET_ACCESS_KEY": ready["aws_secret_access_key"],
                "AWS_DEFAULT_REGION": ready["region_name"],
                "AWS_EC2_METADATA_DISABLED": "true",
            }
        )
        if ready.get("demo"):
            env["SAGEMAKER_ASYNC_ENDPOINT"] = ready["demo"]["endpoint_name"]
            env["SAGEMAKER_ASYNC_BUCKET"] = ready["demo"]["bucket"]
            if queue_url := ready["demo"].get("notification_queue_url"):
                env["SAGEMAKER_ASYNC_NOTIFICATION_QUEUE_URL"] = queue_url
    if api_port is not None:
        env.update(
            {
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                # The settings that keep the api-server on 127.0.0.1 and let tasks reach it on our port.
                "AIRFLOW__API__HOST": LOCALHOST,
                "AIRFLOW__API__PORT": str(api_port),
                "AIRFLOW__API__BASE_URL": f"http://{LOCALHOST}:{api_port}",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://{LOCALHOST}:{api_port}/execution/",
            }
        )
    if servers is not None:
        env.update(servers.environment())
    if poll_interval is not None:
        env["AIRFLOW__SAGEMAKER_ASYNC__POLL_INTERVAL"] = f"{poll_interval:g}"
    if max_poll_interval is not None:
        env["AIRFLOW__SAGEMAKER_ASYNC__MAX_POLL_INTERVAL"] = f"{max_poll_interval:g}"
    if min_deferral_seconds is not None:
        env["AIRFLOW__SAGEMAKER_ASYNC__MIN_DEFERRAL_SECONDS"] = f"{min_deferral_seconds:g}"
    env.update(extra or {})
    return env


def migrate_db(env: Mapping[str, str], log_file: Path, timeout: float = 300.0) -> None:
    """Run ``airflow db migrate`` (creates the DB of a new home), its output in ``log_file``.

    :param env: the environment (:func:`airflow_environment`).
    :param log_file: where its output goes (overwritten).
    :param timeout: seconds, default 300.
    :raises HarnessError: when it fails or times out.
    """
    code = _run_logged([airflow_cli(), "db", "migrate"], env, log_file, timeout)
    if code != 0:
        raise HarnessError(f"airflow db migrate {_ended(code)}; see {log_file}")


def dags_test(
    env: Mapping[str, str],
    dag_id: str,
    log_file: Path,
    *,
    conf: Mapping[str, Any] | None = None,
    timeout: float = 300.0,
) -> int | None:
    """Run one DAG with ``airflow dags test`` (tasks in that process, triggers in line), output in ``log_file``.

    :param env: the environment (:func:`airflow_environment`).
    :param dag_id: the DAG to run.
    :param log_file: where its output goes (overwritten).
    :param conf: the run's conf (``--conf``), default none.
    :param timeout: seconds, default 300; then its process tree is stopped.
    :return: its exit code, ``None`` when it timed out.
    """
    command = [airflow_cli(), "dags", "test", dag_id]
    command += ["--conf", json.dumps(conf)] if conf is not None else []
    return _run_logged(command, env, log_file, timeout)


def _run_logged(command: Sequence[str], env: Mapping[str, str], log_file: Path, timeout: float) -> int | None:
    """Run ``command`` in a session of its own, output in ``log_file``; stop its tree if it outlasts ``timeout``.

    :param command: the program and its arguments.
    :param env: its environment.
    :param log_file: where its output goes (overwritten; the folder is created).
    :param timeout: seconds.
    :return: its exit code, ``None`` when it timed out.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("wb") as log:
        process = subprocess.Popen(  # noqa: S603 - the airflow script, with our arguments
            list(command), env=dict(env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        return None
    finally:
        stop_tree(process, grace=10)  # on a timeout the whole tree; else what it left behind in its session


def _ended(code: int | None) -> str:
    return "timed out" if code is None else f"exited with code {code}"


class AirflowProcess:
    """One long-running ``airflow`` command (``airflow triggerer`` ...) in its own session.

    :param name: its name, also of its log ``<log_dir>/<name>.log`` (appended to).
    :param command: the ``airflow`` arguments.
    :param env: its environment.
    :param log_dir: the folder of its log.
    """

    def __init__(self, name: str, command: Sequence[str], env: Mapping[str, str], log_dir: Path) -> None:
        self.name = name
        self.command = tuple(command)
        self.env = dict(env)
        self.log_path = log_dir / f"{name}.log"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 - the airflow script
                [airflow_cli(), *command], env=dict(env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    @property
    def pid(self) -> int:
        """The process id of the ``airflow`` command."""
        return self.process.pid

    def exit_code(self) -> int | None:
        """Return its exit code, None while it runs."""
        return self.process.poll()

    def log(self) -> str:
        """Return its log so far."""
        return self.log_path.read_text(errors="replace")

    def stop(self, grace: float = 30.0) -> None:
        """Stop its process tree (:func:`stop_tree`); ``grace`` in seconds, default 30."""
        stop_tree(self.process, grace)


class AirflowCluster(AirflowApi):
    """Airflow's components as separate processes in one ``AIRFLOW_HOME``, on 127.0.0.1, and a REST API client.

    As a context manager, every process it started is stopped on the way out, whatever happened.

    :param env: an environment made by :func:`airflow_environment` with ``api_port``.
    :param log_dir: the folder of the components' logs (``<name>.log``), default the Airflow home.
    :raises HarnessError: when ``env`` has no api-server port.
    """

    def __init__(self, env: Mapping[str, str], log_dir: Path | None = None) -> None:
        if "AIRFLOW__API__PORT" not in env:
            raise HarnessError("the cluster's environment has no AIRFLOW__API__PORT: build it with api_port=...")
        super().__init__(int(env["AIRFLOW__API__PORT"]), Path(env["AIRFLOW_HOME"]))
        self.env = dict(env)
        self.log_dir = log_dir or self.home
        self.processes: dict[str, AirflowProcess] = {}

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def migrate_db(self, timeout: float = 300.0) -> None:
        """:func:`migrate_db`, its output in ``<log_dir>/db-migrate.log``; ``timeout`` in seconds, default 300."""
        migrate_db(self.env, self.log_dir / "db-migrate.log", timeout)

    def start(self, name: str, *command: str, env: Mapping[str, str] | None = None) -> AirflowProcess:
        """Start ``airflow <command>`` as the component ``name`` and watch it (:meth:`exited`).

        :param env: variables added to the cluster's environment for this component only, default none.
        """
        self.processes[name] = AirflowProcess(name, command, {**self.env, **(env or {})}, self.log_dir)
        return self.processes[name]

    def restart(self, name: str) -> AirflowProcess:
        """Start a component again, as it was started, after it died or was killed (:meth:`forget` it first)."""
        dead = self.processes.get(f"{name} (dead)") or self.processes[name]
        self.processes[name] = AirflowProcess(name, dead.command, dead.env, self.log_dir)
        return self.processes[name]

    @property
    def celery(self) -> bool:
        """Whether this cluster runs the Celery topology (its environment names the CeleryExecutor)."""
        return self.env.get("AIRFLOW__CORE__EXECUTOR") == CELERY_EXECUTOR

    def component_plan(self) -> tuple[tuple[str, tuple[str, ...], dict[str, str]], ...]:
        """Return the components this cluster starts: (name, ``airflow`` arguments, extra environment).

        :data:`COMPONENTS` on the local topology, :data:`~airflow_sagemaker_async.local.topology.
        CELERY_COMPONENTS` on the Celery one.
        """
        if self.celery:
            return CELERY_COMPONENTS
        return tuple((name, command, {}) for name, command in COMPONENTS)

    def start_components(self, startup_timeout: float = 180.0) -> None:
        """Start every component of :meth:`component_plan`, wait for the api-server to answer, log in as ``admin``.

        :param startup_timeout: seconds for the api-server to answer, default 180.
        :raises ProcessExitedError: when a component exits meanwhile.
        :raises WaitTimeoutError: when the api-server does not answer in time.
        """
        for name, command, extra in self.component_plan():
            self.start(name, *(argument.format(port=self.port) for argument in command), env=extra)
        wait_for("the api-server to answer", self.answers, startup_timeout, self, interval=1)
        wait_for("the admin password", self.password_file().exists, 60, self)
        self.login()

    def forget(self, name: str) -> AirflowProcess:
        """Stop watching a component that is meant to die (it is still stopped at the end); return it."""
        process = self.processes.pop(name)
        self.processes[f"{name} (dead)"] = process
        return process

    def exited(self) -> str | None:
        """Say which watched component exited and with which code, or None while all run."""
        for name, process in self.processes.items():
            if not name.endswith("(dead)") and (code := process.exit_code()) is not None:
                return f"airflow {name} exited with code {code} (log {process.log_path})"
        return None

    def log(self) -> str:
        """Return the tail of every component's log."""
        return "\n".join(f"==> {name}:\n{process.log()[-1500:]}" for name, process in self.processes.items())

    def stop(self, grace: float = 20.0) -> None:
        """Stop every component's process tree (:func:`stop_trees`); ``grace`` in seconds, default 20."""
        stop_trees([process.process for process in self.processes.values()], grace)

    def listening_addresses(self) -> set[tuple[str, int]]:
        """Return every TCP address on which a component (or a descendant) listens."""
        addresses = set()
        for process in self.processes.values():
            for member in process_tree(process.pid):
                try:
                    connections = member.net_connections(kind="tcp")
                except psutil.NoSuchProcess:
                    continue
                addresses |= {(c.laddr.ip, c.laddr.port) for c in connections if c.status == psutil.CONN_LISTEN}
        return addresses
