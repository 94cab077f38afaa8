"""
A WSGI application (moto's) served with HTTP/1.1 keep-alive, as real S3, SNS and SQS serve their clients.

werkzeug's development server, which ``moto_server`` uses, answers every request with ``Connection: close``:
its request handler cannot drain an unread request body without reading into the next request, so it closes
the connection instead (werkzeug 3.1 ``serving.py``, ``run_wsgi``). Every client request then pays a TCP
connect, which a client of AWS does not (botocore and aiohttp keep their pooled connections alive), so the
CPU a triggerer spends per S3 HEAD against the local backend was above what it spends against AWS.

:class:`KeepAliveWSGIServer` serves the application through uvicorn (HTTP/1.1 parsing by httptools, idle
connections kept :data:`KEEP_ALIVE_SECONDS`) and a2wsgi's WSGI adapter -- both are what Airflow's own API
server runs on. The HTTP parser reads every request body off the connection whether the application reads
it or not, so an unread body never shows up as the next request (``tests/local/test_wsgi_server.py``).

Differences from a plain a2wsgi mount, for moto:

- Each request runs in a thread of :class:`_DaemonThreadPool`: it grows with the requests in flight (an
  SQS long poll holds a thread up to 20 s; werkzeug's threaded server had a thread per connection) and its
  threads are daemons, so a long poll still waiting never holds up the process's exit.
- ``RAW_URI`` / ``REQUEST_URI`` carry the path as it arrived (still percent-encoded): moto matches S3 keys
  against it (``moto.core.request``, ``raw_path``); a2wsgi sets neither.
- ``wsgi.input_terminated`` is set for a body without ``Content-Length`` (chunked): uvicorn has de-chunked
  it and the adapter's stream ends with it, so werkzeug reads it instead of taking it as empty.

Binds ``127.0.0.1`` only, on a port chosen by the OS.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import queue
import socket
import threading
import time
from typing import TYPE_CHECKING, Any, Final

import uvicorn
from a2wsgi import WSGIMiddleware

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

__all__ = ["KEEP_ALIVE_SECONDS", "KeepAliveWSGIServer"]

#: Seconds an idle client connection is kept open: longer than the idle time after which botocore's urllib3
#: and aiobotocore's aiohttp pools stop reusing a connection, so a client never picks a connection the server
#: is just closing. (AWS documents no idle timeout for S3; load balancers default to 60 s.)
KEEP_ALIVE_SECONDS: Final = 60
#: Seconds the server waits, when stopped, for requests in flight (a long poll may otherwise hold it 20 s).
_SHUTDOWN_GRACE: Final = 2


class _StoppingFilter(logging.Filter):
    """While our server stops, drop uvicorn's errors about the requests it cancels after the grace.

    ("Cancel N running task(s), timeout graceful shutdown exceeded" and each task's ``CancelledError``): they
    are SQS long polls still waiting (up to 20 s) when the backend stops, expected, not errors.
    """

    def __init__(self, server: KeepAliveWSGIServer) -> None:
        super().__init__()
        self._server = server

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._server.stopping:
            return True
        cancelled = record.exc_info is not None and record.exc_info[0] is asyncio.CancelledError
        return not (cancelled or "timeout graceful shutdown exceeded" in record.getMessage())


class _DaemonThreadPool(concurrent.futures.Executor):
    """Run each call in an idle daemon thread, starting a new one when none is idle (no upper bound)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._work: queue.SimpleQueue[tuple[concurrent.futures.Future[Any], Callable[[], Any]]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._started = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._lock:
            if self._idle == 0:
                self._started += 1
                name = f"{self._name}-{self._started}"
                threading.Thread(target=self._serve, name=name, daemon=True).start()
            else:
                self._idle -= 1
        self._work.put((future, functools.partial(fn, *args, **kwargs)))
        return future

    def _serve(self) -> None:
        while True:
            future, call = self._work.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(call())
                except BaseException as error:  # handed to the awaiting coroutine
                    future.set_exception(error)
            del future, call
            with self._lock:
                self._idle += 1

    @property
    def threads(self) -> int:
        """Threads started so far (the peak number of calls in flight)."""
        return self._started


def _moto_environ(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """Wrap ``app`` to complete a2wsgi's environ with what moto and werkzeug read (see the module docstring)."""

    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        scope = environ.get("asgi.scope") or {}
        raw_path = scope.get("raw_path")
        if raw_path:
            raw_uri = raw_path.decode("latin1")
            if environ.get("QUERY_STRING"):
                raw_uri += "?" + environ["QUERY_STRING"]
            environ["RAW_URI"] = environ["REQUEST_URI"] = raw_uri
        if "CONTENT_LENGTH" not in environ:
            environ["wsgi.input_terminated"] = True
        return app(environ, start_response)

    return wsgi


class KeepAliveWSGIServer:
    """Serve a WSGI application on ``127.0.0.1`` with keep-alive, from a daemon thread running its own loop.

    :param app: the WSGI application.
    :param name: the name of the server's thread (and prefix of its workers' names).
    """

    def __init__(self, app: Callable[..., Iterable[bytes]], name: str) -> None:
        self._name = name
        self._pool = _DaemonThreadPool(f"{name}-request")
        adapter = WSGIMiddleware(_moto_environ(app))
        adapter.executor.shutdown(wait=False)
        adapter.executor = self._pool  # type: ignore[assignment]
        self.stopping = False
        self._config = uvicorn.Config(
            adapter,
            interface="asgi3",
            http="httptools",
            loop="asyncio",
            lifespan="off",
            ws="none",  # S3, SNS and SQS speak no WebSocket; "auto" would import websockets (deprecated parts)
            access_log=False,
            proxy_headers=False,  # no proxy in front: X-Forwarded-* are not read
            log_level="warning",
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
            timeout_graceful_shutdown=_SHUTDOWN_GRACE,
        )
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self.port = 0

    @property
    def threads(self) -> int:
        """Request threads started so far."""
        return self._pool.threads

    def start(self, timeout: float = 30) -> None:
        """Bind ``127.0.0.1`` (port chosen by the OS) and serve; return once the server accepts connections.

        :raises RuntimeError: when the server did not start within ``timeout`` seconds.
        """
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._socket = sock
        self.port = sock.getsockname()[1]
        server = uvicorn.Server(self._config)
        self._server = server
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=self._name, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)  # uvicorn has no start callback: poll its flag
        if not server.started:
            self.stop()
            raise RuntimeError(f"The {self._name} server did not start within {timeout} s.")

    def stop(self) -> None:
        """Stop accepting, close the connections (requests in flight get a short grace), join the thread."""
        self.stopping = True
        stopping_filter = _StoppingFilter(self)
        logging.getLogger("uvicorn.error").addFilter(stopping_filter)
        try:
            if self._server is not None:
                self._server.should_exit = True
            if self._thread is not None:
                self._thread.join(timeout=_SHUTDOWN_GRACE + 10)
        finally:
            logging.getLogger("uvicorn.error").removeFilter(stopping_filter)
        if self._socket is not None:
            self._socket.close()
        self._server = None
        self._thread = None
        self._socket = None
