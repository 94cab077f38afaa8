"""Processes of a local test or demo: start, wait for, stop (whole trees); the local backend's process.

- :func:`stop_trees`: every process started here leads a session of its own; Airflow's supervisors put task
  runners in process groups of their own, so a stop signals each process's whole tree (listed before the
  signal: orphans cannot be found), then its process group.
- :func:`wait_for`: wait for a condition, failing early when a watched process exits.
- :class:`BackendProcess`: ``sagemaker-async-local up --ready-file`` in a process of its own, and its ready
  document (URLs, credentials, the demo endpoint's names).

Imports no Airflow. :mod:`airflow_sagemaker_async.local.harness` is the entry point that gathers these.
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
from typing import TYPE_CHECKING, Any, Protocol

import psutil

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from types import TracebackType
    from typing import Self


LOCALHOST = "127.0.0.1"


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
