"""The Celery topology (``airflow_sagemaker_async.local.topology``): real PostgreSQL and Redis on 127.0.0.1."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

import psutil
import pytest

from airflow_sagemaker_async.local.topology import (
    CELERY_COMPONENTS,
    CELERY_EXECUTOR,
    TOPOLOGY_ENV,
    CeleryServers,
    topology_from,
)

if TYPE_CHECKING:
    from pathlib import Path


def test_topology_comes_from_the_parameter_then_the_environment_then_local(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOPOLOGY_ENV, raising=False)
    assert topology_from(None) == "local"
    monkeypatch.setenv(TOPOLOGY_ENV, "Celery")
    assert topology_from(None) == "celery"
    assert topology_from("local") == "local"


def test_an_unknown_topology_names_its_source_and_the_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOPOLOGY_ENV, "kubernetes")
    with pytest.raises(ValueError, match=r"SAGEMAKER_ASYNC_TOPOLOGY='kubernetes' is invalid: .*local, celery"):
        topology_from(None)
    with pytest.raises(ValueError, match=r"^topology='k8s' is invalid"):
        topology_from("k8s")


def test_the_celery_plan_has_two_schedulers_two_triggerers_and_two_workers_seen_as_two_hosts() -> None:
    names = [name for name, _, _ in CELERY_COMPONENTS]
    hosts = {extra["SAGEMAKER_ASYNC_WORKER_HOSTNAME"] for name, _, extra in CELERY_COMPONENTS if extra}

    assert sorted(names) == [
        "api-server",
        "dag-processor",
        "scheduler-1",
        "scheduler-2",
        "triggerer-1",
        "triggerer-2",
        "worker-1",
        "worker-2",
    ]
    assert hosts == {"worker-1", "worker-2"}
    # No log server: they would listen on every interface.
    serving = [name for name, _, _ in CELERY_COMPONENTS if name.startswith(("scheduler", "triggerer", "worker"))]
    assert all("--skip-serve-logs" in command for name, command, _ in CELERY_COMPONENTS if name in serving)
    assert all("api-server" not in command or "127.0.0.1" in command for _, command, _ in CELERY_COMPONENTS)


@pytest.fixture(scope="module")
def servers(celery_servers: CeleryServers) -> CeleryServers:
    return celery_servers


def listening(pid: int) -> set[tuple[str, int]]:
    """Every TCP address the process ``pid`` or a descendant listens on."""
    root = psutil.Process(pid)
    found = set()
    for member in [root, *root.children(recursive=True)]:
        found |= {(c.laddr.ip, c.laddr.port) for c in member.net_connections("tcp") if c.status == psutil.CONN_LISTEN}
    return found


def redis_ping(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(b"PING\r\n")
        return connection.recv(64)


@pytest.mark.slow
def test_servers_listen_on_127_0_0_1_only_and_answer(servers: CeleryServers) -> None:
    assert servers.postgres.process is not None
    assert servers.redis.process is not None

    assert listening(servers.postgres.process.pid) == {("127.0.0.1", servers.postgres.port)}
    assert listening(servers.redis.process.pid) == {("127.0.0.1", servers.redis.port)}
    assert servers.postgres.query("SELECT current_database()") == "airflow"
    assert redis_ping(servers.redis.port) == b"+PONG\r\n"


@pytest.mark.slow
def test_environment_points_airflow_at_postgres_celery_and_redis(servers: CeleryServers) -> None:
    env = servers.environment()

    assert env["AIRFLOW__CORE__EXECUTOR"] == CELERY_EXECUTOR
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == (
        f"postgresql+psycopg2://postgres@127.0.0.1:{servers.postgres.port}/airflow"
    )
    assert env["AIRFLOW__CELERY__BROKER_URL"] == f"redis://127.0.0.1:{servers.redis.port}/0"
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"] == "db+" + env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]


@pytest.mark.slow
def test_terminate_connections_ends_other_sessions(servers: CeleryServers, tmp_path: Path) -> None:
    import psycopg2

    connection = psycopg2.connect(host="127.0.0.1", port=servers.postgres.port, user="postgres", dbname="airflow")
    try:
        assert servers.postgres.terminate_connections() >= 1
        with pytest.raises(psycopg2.OperationalError), connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        connection.close()


@pytest.mark.slow
def test_restarts_keep_ports_and_postgres_keeps_its_data(servers: CeleryServers) -> None:
    servers.postgres.query("CREATE TABLE IF NOT EXISTS kept (n int); INSERT INTO kept VALUES (7)")
    ports = servers.postgres.port, servers.redis.port

    servers.postgres.restart()
    servers.redis.restart()

    assert (servers.postgres.port, servers.redis.port) == ports
    assert servers.postgres.query("SELECT sum(n) FROM kept") == "7"
    assert redis_ping(servers.redis.port) == b"+PONG\r\n"
