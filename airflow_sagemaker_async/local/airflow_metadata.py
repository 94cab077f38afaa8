"""Airflow's state read through its Python API, in a child process: :class:`MetadataReader`.

What the REST API needs a running api-server for (a ``dags test`` run, a trigger row) is read by a child
process (``python -m airflow_sagemaker_async.local.airflow_metadata read-metadata``) that imports Airflow and
answers JSON questions on its stdin; the parent never imports Airflow and never reads the database with SQL.
This child is the one place under ``local`` that imports Airflow (an import-linter contract names it).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from types import TracebackType
    from typing import Self


from airflow_sagemaker_async.local.processes import HarnessError, stop_tree

# -- the parent's side ----------------------------------------------------------------------


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

    The child (``python -m airflow_sagemaker_async.local.airflow_metadata read-metadata``) imports Airflow once (a few
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


def _main(argv: Sequence[str]) -> int:
    if list(argv) != ["read-metadata"]:
        print("usage: python -m airflow_sagemaker_async.local.airflow_metadata read-metadata", file=sys.stderr)
        return 2
    out = sys.stdout.buffer

    def answer(line: bytes) -> None:
        out.write(line)
        out.flush()

    _serve_metadata(sys.stdin, answer)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
