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

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import traceback
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

import psutil

from airflow_sagemaker_async.local.topology import CELERY_COMPONENTS, CELERY_EXECUTOR

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from types import TracebackType

    from typing_extensions import Self

    from airflow_sagemaker_async.local.topology import CeleryServers

LOCALHOST = "127.0.0.1"
#: What ``airflow standalone`` forces, and this harness too when it sets up a cluster.
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
#: Where the simple auth manager writes the generated password of each user, in ``AIRFLOW_HOME``.
PASSWORD_FILE = "simple_auth_manager_passwords.json.generated"  # noqa: S105 - a file name, not a password
#: Airflow's components, in start order: (name, ``airflow`` arguments); ``{port}`` is the api-server's port.
#: ``--skip-serve-logs``: the log servers would listen on every interface; the api-server reads the log files.
COMPONENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("scheduler", ("scheduler", "--skip-serve-logs")),
    ("dag-processor", ("dag-processor",)),
    ("api-server", ("api-server", "--host", LOCALHOST, "--port", "{port}")),
    ("triggerer", ("triggerer", "--skip-serve-logs")),
)


class HarnessError(RuntimeError):
    """A process of the harness failed to start, exited, or a command it ran failed; the message says where to look."""


class ProcessExitedError(HarnessError):
    """A process that had to keep running (a backend, an Airflow component) exited."""


class WaitTimeoutError(HarnessError):
    """A condition (a port answering, a run finishing) did not come true within its timeout."""


# -- small things ----------------------------------------------------------------------------------------------


def free_port() -> int:
    """Return a TCP port free on 127.0.0.1 right now (the OS's choice; another process may take it later)."""
    with socket.socket() as probe:
        probe.bind((LOCALHOST, 0))
        return int(probe.getsockname()[1])


def console_script(name: str) -> str:
    """Return the path of the console script ``name`` beside this interpreter (the virtualenv's ``bin``).

    :param name: the script's name, e.g. ``"airflow"`` or ``"sagemaker-async-local"``.
    :return: its path when it exists there, else ``name`` itself (found on ``PATH``).
    """
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else name


def airflow_cli() -> str:
    """Return the ``airflow`` script of this interpreter's environment."""
    return console_script("airflow")


# -- process trees ---------------------------------------------------------------------------------------------


def process_tree(pid: int) -> list[psutil.Process]:
    """Return the process ``pid`` and all its descendants as they are now (empty when it is gone)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def signal_tree(pid: int, sig: signal.Signals) -> list[psutil.Process]:
    """Send ``sig`` once to ``pid`` and to every descendant, all listed before the first signal; return them.

    :param pid: the root of the tree.
    :param sig: the signal, e.g. ``signal.SIGKILL``.
    """
    tree = process_tree(pid)
    for member in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.send_signal(sig)
    return tree


def stop_trees(processes: Sequence[subprocess.Popen[Any]], grace: float = 30.0) -> None:
    """SIGTERM each process and its tree once, SIGKILL whatever is left after ``grace``, then each process group.

    Each process should lead its own session (``start_new_session=True``): the group's SIGKILL reaches
    children that left the tree (reparented) but not the group. Processes already gone are fine.

    :param processes: the processes to stop.
    :param grace: seconds the trees get to exit after SIGTERM, default 30.
    """
    trees = [signal_tree(process.pid, signal.SIGTERM) for process in processes]
    _, alive = psutil.wait_procs([member for tree in trees for member in tree], timeout=grace)
    for survivor in alive:
        signal_tree(survivor.pid, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=10)
    for process in processes:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10)


def stop_tree(process: subprocess.Popen[Any], grace: float = 30.0) -> None:
    """:func:`stop_trees` for one process; ``grace`` in seconds, default 30."""
    stop_trees([process], grace)


class Watched(Protocol):
    """What :func:`wait_for` watches while it waits: processes that must not exit, and a log to show."""

    def exited(self) -> str | None:
        """Say which watched process exited, or ``None`` while all run."""

    def log(self) -> str:
        """Return the log worth showing when the wait fails (its tail is shown)."""


def wait_for(
    what: str,
    condition: Callable[[], Any],
    timeout: float,
    watched: Watched | None = None,
    interval: float = 0.5,
) -> Any:
    """Call ``condition`` every ``interval`` until it returns a true value, and return that value.

    A request that times out or cannot connect (``OSError``: an api-server slow under load) counts as
    "not yet"; an HTTP error answer (``urllib.error.HTTPError``) is raised.

    :param what: what is awaited, for the error message ("the api-server to answer").
    :param condition: called without arguments; a true return value ends the wait.
    :param timeout: seconds.
    :param watched: processes that must keep running meanwhile, default none.
    :param interval: seconds between calls, default 0.5.
    :raises ProcessExitedError: when a watched process exits.
    :raises WaitTimeoutError: when ``timeout`` passes, with the last request error and the log's tail.
    """
    deadline = time.monotonic() + timeout
    last_error: OSError | None = None
    while time.monotonic() < deadline:
        if watched is not None and (exited := watched.exited()) is not None:
            raise ProcessExitedError(f"{exited} while waiting for {what}")
        try:
            value = condition()
        except urllib.error.HTTPError:
            raise
        except OSError as error:
            last_error, value = error, None
        if value:
            return value
        time.sleep(interval)
    tail = f"; log tail:\n{watched.log()[-4000:]}" if watched is not None else ""
    raise WaitTimeoutError(
        f"timed out after {timeout:.0f} s waiting for {what} (last request error: {last_error!r}){tail}"
    )


# -- the local backend -----------------------------------------------------------------------------------------


class BackendProcess:
    """``sagemaker-async-local up --ready-file`` in a process (and session) of its own.

    A separate process, so that moto and the runtime never share a GIL with what is tested or measured.
    As a context manager it starts on entry and stops (with every model container) on exit.

    :param work_dir: folder of the ready file (``backend-ready.json``) and, unless ``log_file`` is given,
        of the log (``backend.log``); created if missing.
    :param demo: create the demo endpoint ``iris-endpoint``, its topics and queue, default True.
    :param time_scale: multiply ``RequestTTLSeconds`` and ``InvocationTimeoutSeconds``, default 1.
    :param quiet: log warnings only, default False (one line per request state change).
    :param log_file: where its output goes, default ``work_dir / "backend.log"``.
    """

    def __init__(
        self,
        work_dir: Path,
        *,
        demo: bool = True,
        time_scale: float = 1.0,
        quiet: bool = False,
        log_file: Path | None = None,
    ) -> None:
        self.ready_file = work_dir / "backend-ready.json"
        self.log_file = log_file or work_dir / "backend.log"
        self.command = [sys.executable, "-m", "airflow_sagemaker_async.local.cli", "up"]
        self.command += ["--ready-file", str(self.ready_file), "--time-scale", f"{time_scale:g}"]
        self.command += [] if demo else ["--no-demo"]
        self.command += ["--quiet"] if quiet else []
        self.process: subprocess.Popen[bytes] | None = None
        self._ready: dict[str, Any] | None = None

    @property
    def ready(self) -> dict[str, Any]:
        """The ready document (``sagemaker-async-local``'s README shows its shape).

        :raises HarnessError: before :meth:`start` returned.
        """
        if self._ready is None:
            raise HarnessError("the local backend is not started; call start() or use it in a with block")
        return self._ready

    def start(self, timeout: float = 120.0) -> dict[str, Any]:
        """Start the backend and wait for its ready file; return the ready document.

        :param timeout: seconds to wait for the ready file, default 120.
        :raises ProcessExitedError: when it exits before it is ready.
        :raises WaitTimeoutError: when it is not ready in time (it is stopped).
        """
        self.ready_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.ready_file.unlink(missing_ok=True)
        with self.log_file.open("wb") as log:
            self.process = subprocess.Popen(  # noqa: S603 - this interpreter, the backend's module
                self.command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            wait_for(
                f"the local backend's ready file (log {self.log_file})", self.ready_file.exists, timeout, self, 0.1
            )
        except HarnessError:
            self.stop()
            raise
        self._ready = json.loads(self.ready_file.read_text())
        return self._ready

    def exited(self) -> str | None:
        """Say that the backend exited and with which code, or ``None`` while it runs (or was never started)."""
        if self.process is None or (code := self.process.poll()) is None:
            return None
        return f"the local backend exited with code {code} (log {self.log_file})"

    def log(self) -> str:
        """Return the backend's log so far."""
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM the backend (it stops its containers and removes its ready file); SIGKILL after ``grace`` s."""
        if self.process is not None:
            stop_tree(self.process, grace)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


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
        from firing that soon after the deferral (a scheduler race, see the README's known issues); default
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


# -- Airflow's state through its Python API ----------------------------------------------------------------------


@dataclass
class DagRunRecord:
    """One DAG run as Airflow holds it: task states and ``return_value`` XComs by (task_id, map_index)."""

    dag_id: str
    run_id: str
    state: str
    task_states: dict[tuple[str, int], str | None]
    xcoms: dict[tuple[str, int], Any] = field(default_factory=dict)

    def state_of(self, task_id: str, map_index: int = -1) -> str | None:
        """Return the state of one task instance (``map_index`` -1 when not mapped), None if there is none."""
        return self.task_states.get((task_id, map_index))

    def xcom(self, task_id: str, map_index: int = -1) -> Any:
        """Return the ``return_value`` XCom of one task instance, None if there is none."""
        return self.xcoms.get((task_id, map_index))


@dataclass
class TriggerRow:
    """One row of Airflow's ``trigger`` table, as its model reads it.

    ``encrypted_kwargs`` is the stored text (Fernet tokens carry a random IV: the same text means the kwargs were
    never re-written); ``kwargs`` is what a triggerer decrypts; ``triggerer_id`` is the job that owns it.
    """

    trigger_id: int
    classpath: str
    encrypted_kwargs: str
    kwargs: dict[str, Any]
    triggerer_id: int | None


_ANSWER = b"HARNESS-ANSWER "


class MetadataReader:
    """Read Airflow's metadata through its Python API, in one long-lived child Python with ``env``.

    The child (``python -m airflow_sagemaker_async.local.harness read-metadata``) imports Airflow once (a few
    seconds), then answers each question in a fresh session, so that it sees what other processes committed.
    As a context manager it starts on entry and ends on exit.

    :param env: the Airflow environment (:func:`airflow_environment`) of an already migrated home.
    :param log_file: where the child's stderr goes, default ``<AIRFLOW_HOME>/metadata-reader.log``.
    """

    def __init__(self, env: Mapping[str, str], log_file: Path | None = None) -> None:
        self.env = dict(env)
        self.log_file = log_file or Path(env["AIRFLOW_HOME"]) / "metadata-reader.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._buffer = b""

    def start(self) -> Self:
        """Start the child (it imports Airflow in the background while the caller goes on); return ``self``."""
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 - this interpreter, this module
                [sys.executable, "-m", __name__, "read-metadata"],
                env=self.env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,
            )
        return self

    def last_run(self, dag_id: str, timeout: float = 120.0) -> DagRunRecord | None:
        """Return the latest run of ``dag_id`` (highest id), None when it has none.

        :param timeout: seconds for the answer (the first one waits for Airflow's import), default 120.
        :raises HarnessError: when the child fails or does not answer in time.
        """
        return self.dag_run(dag_id, None, timeout)

    def dag_run(self, dag_id: str, run_id: str | None, timeout: float = 120.0) -> DagRunRecord | None:
        """Return one run of ``dag_id`` (the latest when ``run_id`` is None), None when there is no such run.

        :param timeout: seconds for the answer, default 120.
        :raises HarnessError: when the child fails or does not answer in time.
        """
        answer = self._ask({"query": "dag_run", "dag_id": dag_id, "run_id": run_id}, timeout)
        if answer is None:
            return None
        return DagRunRecord(
            dag_id=dag_id,
            run_id=answer["run_id"],
            state=answer["state"],
            task_states={(task_id, index): state for task_id, index, state in answer["task_states"]},
            xcoms={(task_id, index): value for task_id, index, value in answer["xcoms"]},
        )

    def trigger(self, trigger_id: int, timeout: float = 120.0) -> TriggerRow | None:
        """Return the ``trigger`` row ``trigger_id``, None when it is gone (fired and cleaned up).

        :param timeout: seconds for the answer, default 120.
        :raises HarnessError: when the child fails or does not answer in time.
        """
        answer = self._ask({"query": "trigger", "trigger_id": trigger_id}, timeout)
        return None if answer is None else TriggerRow(**answer)

    def _ask(self, question: dict[str, Any], timeout: float) -> Any:
        if self.process is None:
            self.start()
        assert self.process is not None
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        try:
            self.process.stdin.write(json.dumps(question).encode() + b"\n")
            self.process.stdin.flush()
        except BrokenPipeError as error:
            raise HarnessError(f"the metadata reader exited; see {self.log_file}") from error
        line = self._read_answer(self.process.stdout, time.monotonic() + timeout)
        answer = json.loads(line)
        if "error" in answer:
            raise HarnessError(f"the metadata reader failed on {question}:\n{answer['error']}")
        return answer["value"]

    def _read_answer(self, stdout: IO[bytes], deadline: float) -> bytes:
        """Return the next answer line of the child, skipping any other output (a stray log line)."""
        fd = stdout.fileno()
        while True:
            while b"\n" in self._buffer:
                line, self._buffer = self._buffer.split(b"\n", 1)
                if line.startswith(_ANSWER):
                    return line.removeprefix(_ANSWER)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise HarnessError(f"the metadata reader did not answer in time; see {self.log_file}")
            readable, _, _ = select.select([fd], [], [], remaining)
            if readable:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise HarnessError(f"the metadata reader exited; see {self.log_file}")
                self._buffer += chunk

    def close(self) -> None:
        """End the child (end of its input, then SIGTERM / SIGKILL if it lingers)."""
        if self.process is None:
            return
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            stop_tree(self.process, grace=5)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _serve_metadata(questions: Iterable[str], answer: Callable[[bytes], None]) -> None:
    """Answer each JSON question line with one answer line: the child of :class:`MetadataReader`."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.trigger import Trigger
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select as sql_select

    def dag_run(session: Any, dag_id: str, run_id: str | None) -> dict[str, Any] | None:
        query = sql_select(DagRun).where(DagRun.dag_id == dag_id)
        query = query.where(DagRun.run_id == run_id) if run_id else query.order_by(DagRun.id.desc()).limit(1)
        run = session.scalars(query).first()
        if run is None:
            return None
        instances = session.execute(
            sql_select(TaskInstance.task_id, TaskInstance.map_index, TaskInstance.state).where(
                TaskInstance.dag_id == dag_id, TaskInstance.run_id == run.run_id
            )
        )
        xcoms = session.scalars(
            sql_select(XComModel).where(
                XComModel.dag_id == dag_id, XComModel.run_id == run.run_id, XComModel.key == "return_value"
            )
        )
        return {
            "run_id": run.run_id,
            "state": str(run.state),
            "task_states": [
                [task_id, index, None if state is None else str(state)] for task_id, index, state in instances
            ],
            "xcoms": [[x.task_id, x.map_index, XComModel.deserialize_value(x)] for x in xcoms],
        }

    def trigger(session: Any, trigger_id: int) -> dict[str, Any] | None:
        row = session.get(Trigger, trigger_id)
        if row is None:
            return None
        return {
            "trigger_id": row.id,
            "classpath": row.classpath,
            "encrypted_kwargs": row.encrypted_kwargs,
            "kwargs": row.kwargs,
            "triggerer_id": row.triggerer_id,
        }

    queries: dict[str, Callable[..., Any]] = {"dag_run": dag_run, "trigger": trigger}
    for line in questions:
        try:
            question = json.loads(line)
            with create_session() as session:
                value = queries[question.pop("query")](session, **question)
            reply = json.dumps({"value": value}, default=str)
        except Exception:  # the parent raises it, with this traceback in its message
            reply = json.dumps({"error": traceback.format_exc()})
        answer(_ANSWER + reply.encode() + b"\n")


# -- Airflow's REST API and its components -----------------------------------------------------------------------


class AirflowApi:
    """A small client of Airflow's public REST API (``/api/v2``) on 127.0.0.1, with a simple auth manager token.

    :param port: the api-server's port.
    :param home: the ``AIRFLOW_HOME`` (where the simple auth manager writes the generated password).
    """

    def __init__(self, port: int, home: Path) -> None:
        self.port = port
        self.base = f"http://{LOCALHOST}:{port}"
        self.home = home
        self.token: str | None = None

    def request(self, method: str, path: str, body: Mapping[str, Any] | None = None, timeout: float = 10.0) -> Any:
        """Send one request and return its decoded JSON answer.

        :param method: ``GET``, ``POST`` ...
        :param path: from the root, e.g. ``/api/v2/dags``.
        :param body: a JSON body, default none.
        :param timeout: seconds, default 10.
        :raises urllib.error.HTTPError: on an error status; ``OSError`` when it cannot connect or times out.
        """
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, headers=headers, method=method)  # noqa: S310 - http://127.0.0.1
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - http://127.0.0.1 only
            return json.loads(response.read() or b"null")

    def answers(self) -> bool:
        """Return whether the api-server answers its health check."""
        try:
            self.request("GET", "/api/v2/monitor/health", timeout=2)
        except OSError:
            return False
        return True

    def password_file(self) -> Path:
        """Return the simple auth manager's generated password file."""
        return self.home / PASSWORD_FILE

    def password(self, user: str = "admin") -> str:
        """Return the generated password of ``user`` (default ``admin``)."""
        return str(json.loads(self.password_file().read_text())[user])

    def login(self, user: str = "admin") -> None:
        """Get a token for ``user`` (default ``admin``) and send it with every later request."""
        answer = self.request("POST", "/auth/token", {"username": user, "password": self.password(user)})
        self.token = answer["access_token"]

    def dag_count(self, dag_id_pattern: str) -> int:
        """Return how many parsed DAGs match ``dag_id_pattern`` (SQL ``LIKE`` syntax, e.g. ``example_%``)."""
        return int(self.request("GET", f"/api/v2/dags?dag_id_pattern={dag_id_pattern}")["total_entries"])

    def trigger(self, dag_id: str, conf: Mapping[str, Any] | None = None) -> str:
        """Trigger a run of ``dag_id`` now with ``conf`` (default none); return its run id."""
        run = self.request("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}})
        return str(run["dag_run_id"])

    def run_state(self, dag_id: str, run_id: str) -> str:
        """Return the state of one run (``queued``, ``running``, ``success``, ``failed``)."""
        return str(self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"])

    def task_states(self, dag_id: str, run_id: str) -> dict[tuple[str, int], str | None]:
        """Return the state of each task instance of one run, by (task_id, map_index)."""
        answer = self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=100")
        return {(ti["task_id"], ti["map_index"]): ti["state"] for ti in answer["task_instances"]}

    def task_instance(self, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
        """Return one (unmapped) task instance as the REST API describes it."""
        return dict(self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"))

    def xcom(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> Any:
        """Return the ``return_value`` XCom of one task instance (``map_index`` -1 when not mapped)."""
        path = (
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value"
            f"?map_index={map_index}&deserialize=true"
        )
        return self.request("GET", path)["value"]

    def task_log_dir(self, dag_id: str, run_id: str, task_id: str) -> Path:
        """Return the folder of one task's log files (and its triggers' ``<attempt>.log.trigger.<job>.log``)."""
        return self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1) -> str:
        """Return one attempt's log as the UI gets it from the api-server, one line per message."""
        path = (
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}"
            f"?full_content=true&map_index={map_index}"
        )
        content = self.request("GET", path, timeout=30)["content"]
        return "\n".join(line if isinstance(line, str) else json.dumps(line) for line in content)


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


def _main(argv: Sequence[str]) -> int:
    if list(argv) != ["read-metadata"]:
        print("usage: python -m airflow_sagemaker_async.local.harness read-metadata", file=sys.stderr)
        return 2
    out = sys.stdout.buffer

    def answer(line: bytes) -> None:
        out.write(line)
        out.flush()

    _serve_metadata(sys.stdin, answer)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
