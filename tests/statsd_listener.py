"""
A real StatsD server for tests: a UDP socket on 127.0.0.1 (port 0) that keeps every metric line it receives.

Airflow's StatsD client (``[metrics] statsd_on``) sends one datagram per metric, ``name:value|type`` with
``|@rate`` and, with Datadog tags, ``|#key:value,...``; the StatsD protocol also allows several lines per
datagram, which are split here. Start it with ``with StatsdListener() as listener:``, point Airflow at it with
:meth:`StatsdListener.airflow_environment`, and read :attr:`StatsdListener.lines` or :meth:`StatsdListener.metrics`.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType


@dataclass(frozen=True)
class Metric:
    """One StatsD line: ``name:value|type`` (``c`` counter, ``g`` gauge, ``ms`` timer)."""

    name: str
    value: float
    type: str
    tags: tuple[str, ...] = ()

    @classmethod
    def parse(cls, line: str) -> Metric:
        """Parse one line (``airflow.x.y:1|c|@1|#tag:v``)."""
        name, _, rest = line.partition(":")
        value, metric_type, *extra = rest.split("|")
        tags = next((part[1:].split(",") for part in extra if part.startswith("#")), [])
        return cls(name=name, value=float(value), type=metric_type, tags=tuple(tags))


class StatsdListener:
    """A StatsD UDP server on 127.0.0.1 that records every line, in a thread of its own."""

    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.settimeout(0.2)
        self.port: int = self._socket.getsockname()[1]
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="statsd-listener", daemon=True)

    def __enter__(self) -> StatsdListener:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(5)
        self._socket.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                datagram = self._socket.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.lines.extend(line for line in datagram.decode(errors="replace").splitlines() if line)

    def airflow_environment(self, **more: str) -> dict[str, str]:
        """Airflow's ``[metrics]`` settings (environment variables) that send its StatsD metrics here."""
        return {
            "AIRFLOW__METRICS__STATSD_ON": "True",
            "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
            "AIRFLOW__METRICS__STATSD_PORT": str(self.port),
            **{f"AIRFLOW__METRICS__{key.upper()}": value for key, value in more.items()},
        }

    def metrics(self, prefix: str = "") -> list[Metric]:
        """Every metric received so far whose name starts with ``prefix``, in arrival order."""
        with self._lock:
            lines = list(self.lines)
        return [metric for metric in map(Metric.parse, lines) if metric.name.startswith(prefix)]

    def total(self, name: str) -> float:
        """The sum of the values received under exactly ``name`` (a counter's count)."""
        return sum(metric.value for metric in self.metrics(name) if metric.name == name)

    def wait_for(self, what: str, condition: Callable[[], bool], timeout: float = 30.0) -> None:
        """Wait until ``condition()`` holds; fail naming ``what`` and the lines received otherwise."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                with self._lock:
                    seen = "\n".join(self.lines[-50:])
                raise AssertionError(f"StatsD listener: no {what} within {timeout} s; last lines:\n{seen}")
            time.sleep(0.1)
