"""The production topology for tests: PostgreSQL and Redis on 127.0.0.1, and Airflow on the CeleryExecutor.

The harness (:mod:`airflow_sagemaker_async.local.harness`) runs Airflow in one of two topologies:

- ``local`` (the default): SQLite and the LocalExecutor, one process of each component, what ``airflow
  standalone`` runs. The demo and the quick tests use it.
- ``celery``: what MWAA, Astronomer and Cloud Composer run. A PostgreSQL metadata database and a Redis broker
  (:class:`CeleryServers`, real servers on 127.0.0.1 with their data in a temporary folder), two schedulers,
  two Celery workers that Airflow sees as two hosts (``worker-1``, ``worker-2``), two triggerers, a
  dag-processor and the api-server, each a process of its own (:data:`CELERY_COMPONENTS`).

Choose with the ``topology`` parameter of :func:`cluster_servers`, or with the environment variable
``SAGEMAKER_ASYNC_TOPOLOGY`` (``local`` / ``celery``) when the parameter is not given.

Where the servers come from: Debian's ``postgresql`` and ``redis-server`` packages (``.ci/run`` installs them
when missing; as root, ``apt-get install -y postgresql redis-server``). The Python side is the ``celery``
extra: ``apache-airflow-providers-celery``, ``psycopg2-binary`` and ``asyncpg`` (Airflow's async engine).
:func:`missing_for_celery` says what is missing, in one line, so that a test can skip with that reason (and
fail instead under ``CI=true``).

PostgreSQL refuses to run as root: when this process is root, the data folder is given to the ``postgres``
user (which Debian's package creates) and the server runs as that user (``runuser``). Its socket lives in the
data folder, it listens on 127.0.0.1 only, trusts local connections (a test database) and runs with
``fsync=off`` (a test's data is thrown away).

Nothing here imports Airflow.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Self

LOCALHOST = "127.0.0.1"
#: The environment variable that picks the topology when no parameter does.
TOPOLOGY_ENV = "SAGEMAKER_ASYNC_TOPOLOGY"
TOPOLOGIES = ("local", "celery")
#: The variable that :func:`worker_hostname` reads: each Celery worker's host name, as Airflow records it.
WORKER_HOSTNAME_ENV = "SAGEMAKER_ASYNC_WORKER_HOSTNAME"
CELERY_EXECUTOR = "airflow.providers.celery.executors.celery_executor.CeleryExecutor"
#: Airflow's components on the Celery topology, in start order: (name, ``airflow`` arguments, extra environment).
#: ``{port}`` is the api-server's port. ``--skip-serve-logs``: log servers listen on every interface; the
#: components share one ``AIRFLOW_HOME`` on this machine, so the api-server reads every log from its file.
CELERY_COMPONENTS: tuple[tuple[str, tuple[str, ...], dict[str, str]], ...] = (
    ("scheduler-1", ("scheduler", "--skip-serve-logs"), {}),
    ("scheduler-2", ("scheduler", "--skip-serve-logs"), {}),
    ("dag-processor", ("dag-processor",), {}),
    ("api-server", ("api-server", "--host", LOCALHOST, "--port", "{port}"), {}),
    ("triggerer-1", ("triggerer", "--skip-serve-logs"), {}),
    ("triggerer-2", ("triggerer", "--skip-serve-logs"), {}),
    *(
        (
            f"worker-{n}",
            ("celery", "worker", "--skip-serve-logs", "--celery-hostname", f"worker-{n}@{LOCALHOST}"),
            {
                WORKER_HOSTNAME_ENV: f"worker-{n}",
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": f"{__name__}.worker_hostname",
            },
        )
        for n in (1, 2)
    ),
)


class TopologyError(RuntimeError):
    """A server of the Celery topology is missing, failed to start, or a command on it failed."""


def worker_hostname() -> str:
    """Return this Celery worker's host name for Airflow (``[core] hostname_callable`` on the workers).

    :return: ``$SAGEMAKER_ASYNC_WORKER_HOSTNAME``, else the machine's fully qualified name (Airflow's default).
    """
    return os.environ.get(WORKER_HOSTNAME_ENV) or socket.getfqdn()


def topology_from(topology: str | None) -> str:
    """Return the topology to run: ``topology`` when given, else ``$SAGEMAKER_ASYNC_TOPOLOGY``, else ``local``.

    :raises ValueError: for a name that is not ``local`` or ``celery``, naming where it came from.
    """
    source = "topology" if topology is not None else TOPOLOGY_ENV
    name = (topology if topology is not None else os.environ.get(TOPOLOGY_ENV, "local")).strip().lower()
    if name not in TOPOLOGIES:
        raise ValueError(f"{source}={name!r} is invalid: it must be one of {', '.join(TOPOLOGIES)}")
    return name


def postgres_bin(program: str) -> str | None:
    """Return the path of a PostgreSQL server program (``initdb``, ``postgres``), or None when not installed.

    Debian keeps them out of ``PATH``, in ``/usr/lib/postgresql/<major>/bin``; the newest major wins.
    """
    if found := shutil.which(program):
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{program}"), key=_major_version, reverse=True)
    return candidates[0] if candidates else None


def _major_version(path: str) -> int:
    with contextlib.suppress(ValueError, IndexError):
        return int(Path(path).parts[-3])
    return 0


def missing_for_celery() -> str | None:
    """Say in one line what the Celery topology lacks on this machine, or None when it can run."""
    missing = [name for name in ("initdb", "postgres") if postgres_bin(name) is None]
    missing += [] if shutil.which("redis-server") else ["redis-server"]
    modules = {
        "airflow.providers.celery": "apache-airflow-providers-celery",
        "psycopg2": "psycopg2-binary",
        "asyncpg": "asyncpg",
    }
    missing += [package for module, package in modules.items() if not _importable(module)]
    if not missing:
        return None
    return (
        f"the Celery topology needs {', '.join(missing)}: apt-get install postgresql redis-server; "
        "pip install 'airflow-sagemaker-async[celery]'"
    )


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOCALHOST, 0))
        return int(probe.getsockname()[1])


def _wait_port(port: int, process: subprocess.Popen[bytes], what: str, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (code := process.poll()) is not None:
            raise TopologyError(f"{what} exited with code {code}; see {log}")
        with contextlib.suppress(OSError), socket.create_connection((LOCALHOST, port), timeout=1):
            return
        time.sleep(0.1)
    raise TopologyError(f"{what} did not listen on {LOCALHOST}:{port} within {timeout:.0f} s; see {log}")


def _stop(process: subprocess.Popen[bytes] | None, grace: float) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


class PostgresServer:
    """A PostgreSQL server on 127.0.0.1 with a fresh cluster in a temporary folder, and one database.

    :param log_dir: the folder of its log (``postgres.log``).
    :param database: the database created at the first start, default ``airflow``.
    """

    def __init__(self, log_dir: Path, database: str = "airflow") -> None:
        self.log_file = log_dir / "postgres.log"
        self.database = database
        self.port = _free_port()
        self.data_dir: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of the database (psycopg2 driver, trusted user ``postgres``)."""
        return f"postgresql+psycopg2://postgres@{LOCALHOST}:{self.port}/{self.database}"

    def _as_owner(self, command: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command

    def start(self, timeout: float = 60.0) -> None:
        """Create the cluster (first start only) and start the server; wait until it accepts connections.

        :param timeout: seconds, default 60.
        :raises TopologyError: when a program is missing or the server does not come up.
        """
        initdb, postgres = postgres_bin("initdb"), postgres_bin("postgres")
        if initdb is None or postgres is None:
            raise TopologyError(missing_for_celery() or "PostgreSQL's server programs were not found")
        first = self.data_dir is None
        if self.data_dir is None:
            # Not under the caller's folder: pytest's are 0700 root, and the server runs as postgres.
            self.data_dir = Path(tempfile.mkdtemp(prefix="sagemaker-async-pg-"))
            if os.geteuid() == 0:
                shutil.chown(self.data_dir, "postgres", "postgres")
            init = subprocess.run(  # noqa: S603 - PostgreSQL's initdb, our arguments
                self._as_owner([initdb, "-D", str(self.data_dir), "-U", "postgres", "--auth=trust", "-E", "UTF8"]),
                capture_output=True,
                check=False,
            )
            if init.returncode != 0:
                raise TopologyError(f"initdb failed: {init.stderr.decode(errors='replace')[-2000:]}")
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        settings = {
            "listen_addresses": LOCALHOST,
            "port": str(self.port),
            "unix_socket_directories": str(self.data_dir),
            "max_connections": "300",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
        }
        arguments = [postgres, "-D", str(self.data_dir)]
        for key, value in settings.items():
            arguments += ["-c", f"{key}={value}"]
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 - PostgreSQL's server, our arguments
                self._as_owner(arguments), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        _wait_port(self.port, self.process, "PostgreSQL", self.log_file, timeout)
        deadline = time.monotonic() + timeout
        while (answer := self._psql("SELECT 1", "postgres", check=False)).returncode != 0:
            if time.monotonic() > deadline:
                raise TopologyError(f"PostgreSQL does not answer: {answer.stderr.decode(errors='replace')}")
            time.sleep(0.2)
        if first:
            self._psql(f'CREATE DATABASE "{self.database}"', "postgres")

    def _psql(self, sql: str, database: str | None = None, *, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        psql = postgres_bin("psql") or "psql"
        command = [psql, "-h", LOCALHOST, "-p", str(self.port), "-U", "postgres", "-d", database or self.database]
        answer = subprocess.run(  # noqa: S603 - psql on our server
            [*command, "-v", "ON_ERROR_STOP=1", "-Atc", sql], capture_output=True, check=False
        )
        if check and answer.returncode != 0:
            raise TopologyError(f"psql {sql!r} failed: {answer.stderr.decode(errors='replace')}")
        return answer

    def query(self, sql: str) -> str:
        """Run one SQL statement on the database as ``postgres`` and return psql's unaligned output.

        For fault injection (``pg_terminate_backend``), never to read Airflow's state (use its APIs).
        """
        return self._psql(sql).stdout.decode().strip()

    def terminate_connections(self) -> int:
        """Terminate every other connection to the database (``pg_terminate_backend``); return how many."""
        sql = (
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return int(self.query(sql) or 0)

    def stop(self, grace: float = 20.0) -> None:
        """Stop the server with a fast shutdown (clients disconnected, ``pg_ctl stop -m fast``); the data stays.

        :param grace: seconds for it to exit, default 20; then it is killed.
        """
        if self.process is None or self.process.poll() is not None or self.data_dir is None:
            return
        pg_ctl = postgres_bin("pg_ctl") or "pg_ctl"
        subprocess.run(  # noqa: S603 - PostgreSQL's pg_ctl on our data folder
            self._as_owner([pg_ctl, "-D", str(self.data_dir), "stop", "-m", "fast", "-w", "-t", f"{grace:.0f}"]),
            capture_output=True,
            check=False,
        )
        _stop(self.process, grace)

    def restart(self, timeout: float = 60.0) -> None:
        """Stop and start the server on the same port, with the same data."""
        self.stop()
        self.start(timeout)

    def remove(self) -> None:
        """Stop the server and delete its data folder."""
        self.stop()
        if self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)


class RedisServer:
    """A Redis server on 127.0.0.1 with no persistence, as the Celery broker.

    :param log_dir: the folder of its log (``redis.log``).
    """

    def __init__(self, log_dir: Path) -> None:
        self.log_file = log_dir / "redis.log"
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The broker URL (database 0)."""
        return f"redis://{LOCALHOST}:{self.port}/0"

    def start(self, timeout: float = 30.0) -> None:
        """Start the server and wait until it listens; ``timeout`` in seconds, default 30.

        :raises TopologyError: when ``redis-server`` is missing or does not come up.
        """
        program = shutil.which("redis-server")
        if program is None:
            raise TopologyError(missing_for_celery() or "redis-server was not found")
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        arguments = [program, "--bind", LOCALHOST, "--port", str(self.port), "--save", "", "--appendonly", "no"]
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 - redis-server, our arguments
                arguments, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        _wait_port(self.port, self.process, "Redis", self.log_file, timeout)

    def stop(self, grace: float = 10.0) -> None:
        """Stop the server (SIGTERM, SIGKILL after ``grace`` s); queued messages are lost, as in a crash."""
        _stop(self.process, grace)

    def restart(self, timeout: float = 30.0) -> None:
        """Stop and start the server on the same port (empty: it keeps nothing)."""
        self.stop()
        self.start(timeout)


class CeleryServers:
    """PostgreSQL and Redis for one Celery topology; a context manager that starts and removes both.

    :param log_dir: the folder of the servers' logs.
    """

    def __init__(self, log_dir: Path) -> None:
        self.postgres = PostgresServer(log_dir)
        self.redis = RedisServer(log_dir)

    def start(self) -> Self:
        """Start both servers; return ``self``.

        :raises TopologyError: when one is missing or does not come up (both are stopped).
        """
        try:
            self.postgres.start()
            self.redis.start()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop both servers and delete PostgreSQL's data."""
        self.redis.stop()
        self.postgres.remove()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def environment(self, worker_concurrency: int = 16) -> dict[str, str]:
        """Return the Airflow settings of this topology: metadata DB, executor, broker and result backend.

        :param worker_concurrency: task slots per Celery worker, default 16.
        """
        return {
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.postgres.url,
            "AIRFLOW__CORE__EXECUTOR": CELERY_EXECUTOR,
            "AIRFLOW__CELERY__BROKER_URL": self.redis.url,
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + self.postgres.url,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(worker_concurrency),
            # Each component keeps a pool per process; keep the total under max_connections.
            "AIRFLOW__DATABASE__SQL_ALCHEMY_POOL_SIZE": "5",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_MAX_OVERFLOW": "10",
        }


@contextlib.contextmanager
def cluster_servers(log_dir: Path, topology: str | None = None) -> Iterator[CeleryServers | None]:
    """Start what ``topology`` needs besides Airflow (see :func:`topology_from`) and yield it.

    :param log_dir: the folder of the servers' logs.
    :param topology: ``local`` (yields None: SQLite needs no server) or ``celery`` (yields the started
        :class:`CeleryServers`); default ``$SAGEMAKER_ASYNC_TOPOLOGY``, else ``local``.
    :raises TopologyError: when the Celery topology cannot run here.
    """
    if topology_from(topology) == "local":
        yield None
        return
    if (missing := missing_for_celery()) is not None:
        raise TopologyError(missing)
    with CeleryServers(log_dir) as servers:
        yield servers
