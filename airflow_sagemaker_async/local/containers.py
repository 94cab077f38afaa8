"""Model container processes that follow the SageMaker container contract.

A container is a local process given a free port in ``SAGEMAKER_BIND_TO_PORT``; it must serve
``GET /ping`` and ``POST /invocations`` on ``127.0.0.1`` at that port. The bundled iris image runs
:mod:`airflow_sagemaker_async.local.iris_container` with the current interpreter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from typing import TYPE_CHECKING

import aiohttp

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

log = logging.getLogger("airflow_sagemaker_async.local.container")

#: Image name of the bundled iris classifier.
IRIS_IMAGE = "sagemaker-async-local/iris:latest"
#: Command of the bundled iris classifier.
IRIS_COMMAND: tuple[str, ...] = (sys.executable, "-m", "airflow_sagemaker_async.local.iris_container")
#: Image name of the bundled streaming text model.
TEXT_IMAGE = "sagemaker-async-local/text:latest"
#: Command of the bundled streaming text model (:mod:`airflow_sagemaker_async.local.text_container`).
TEXT_COMMAND: tuple[str, ...] = (sys.executable, "-m", "airflow_sagemaker_async.local.text_container")
#: SageMaker waits 2 seconds for an answer to a health check.
PING_TIMEOUT_SECONDS = 2.0


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """On Linux, have the kernel SIGTERM the container when the backend dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class ContainerStartError(RuntimeError):
    """A model container exited or did not answer ``/ping`` in time."""


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free on ``host`` a moment ago (chosen by the OS with port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class ContainerProcess:
    """One model container (one "instance" of an endpoint variant).

    :param name: used in log lines, e.g. ``iris-endpoint/0``.
    :param command: argv of the process.
    :param environment: extra environment variables (the model's ``Environment``); ``SAGEMAKER_BIND_TO_PORT``
        is set by us.
    """

    def __init__(self, name: str, command: Sequence[str], environment: Mapping[str, str]) -> None:
        self.name = name
        self.command = list(command)
        self.environment = dict(environment)
        self.port = 0
        self._process: asyncio.subprocess.Process | None = None
        self._log_task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` of the container."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The process id, ``None`` before start."""
        return None if self._process is None else self._process.pid

    @property
    def returncode(self) -> int | None:
        """The exit code once the process has exited, else ``None``."""
        return None if self._process is None else self._process.returncode

    @property
    def alive(self) -> bool:
        """True while the process runs."""
        return self._process is not None and self._process.returncode is None

    async def start(self) -> None:
        """Start the process with ``SAGEMAKER_BIND_TO_PORT`` set to a free port."""
        self.port = free_port()
        env = {**os.environ, **self.environment, "SAGEMAKER_BIND_TO_PORT": str(self.port)}
        self._process = await asyncio.create_subprocess_exec(
            *self.command,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self._log_task = asyncio.create_task(self._forward_output(), name=f"container-log-{self.name}")
        log.debug("container %s: started pid %s on port %s: %s", self.name, self.pid, self.port, self.command)

    async def _forward_output(self) -> None:
        assert self._process is not None
        assert self._process.stdout is not None
        async for line in self._process.stdout:
            log.debug("container %s: %s", self.name, line.decode(errors="replace").rstrip())
        returncode = await self._process.wait()
        if not self._stopping:
            log.warning("container %s (pid %s) exited with code %s", self.name, self.pid, returncode)

    async def wait_ready(self, session: aiohttp.ClientSession, timeout: float) -> None:  # noqa: ASYNC109 - a deadline for its own poll loop
        """Poll ``GET /ping`` every 0.1 s until it answers 200.

        :param session: the HTTP session to use.
        :param timeout: seconds to wait in total.
        :raises ContainerStartError: when the process exits first or ``timeout`` passes.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if not self.alive:
                raise ContainerStartError(
                    f"The model container {self.name} ({' '.join(self.command)}) exited with code "
                    f"{self.returncode} before answering /ping; run the command by hand to see why."
                )
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with session.get(
                    f"{self.url}/ping", timeout=aiohttp.ClientTimeout(total=PING_TIMEOUT_SECONDS)
                ) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)
        raise ContainerStartError(
            f"The model container {self.name} ({' '.join(self.command)}) did not answer GET /ping with 200 "
            f"on port {self.port} within {timeout:g} s; it must serve on 127.0.0.1:$SAGEMAKER_BIND_TO_PORT."
        )

    async def stop(self, grace: float = 5.0) -> None:
        """Terminate the process (SIGTERM, then SIGKILL after ``grace`` seconds) and reap it."""
        self._stopping = True
        process = self._process
        if process is not None and process.returncode is None:
            # The container runs in its own session: signal its whole process group, so that a
            # command that forks (a shell wrapper, a server with workers) leaves nothing behind.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGTERM)
                os.killpg(process.pid, signal.SIGCONT)  # a stopped process handles SIGTERM only once continued
            try:
                await asyncio.wait_for(process.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
        if self._log_task is not None:
            try:
                await asyncio.wait_for(self._log_task, 1.0)
            except (TimeoutError, asyncio.CancelledError):
                self._log_task.cancel()
