"""
Airflow's REST API (``/api/v2``) as the harness uses it: :class:`AirflowApi`.

Logged in as the simple auth manager's admin; runs, task states, XComs and task logs. Imports no Airflow.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

from airflow_sagemaker_async.local.processes import LOCALHOST

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path


#: What ``airflow standalone`` forces, and this harness too when it sets up a cluster.
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
#: Where the simple auth manager writes the generated password of each user, in ``AIRFLOW_HOME``.
PASSWORD_FILE = "simple_auth_manager_passwords.json.generated"  # noqa: S105 - a file name, not a password
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
