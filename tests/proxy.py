"""
A recording, fault-injecting HTTP proxy on 127.0.0.1 for tests.

It forwards every request unchanged (Host header included, so SigV4 signatures stay valid) to one
upstream server (moto, or the local SageMaker runtime), records what it saw, and answers with a
fault instead when a rule matches: an HTTP status (403, 500, 503 SlowDown, ...) or a reset connection.
This is how the tests reach the failure modes a real S3 or SageMaker shows, against real servers.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

if TYPE_CHECKING:
    from collections.abc import Callable

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "content-encoding"}


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Fault:
    """Answer ``status`` (or reset the connection when ``reset``) to matching requests, ``times`` times."""

    match: Callable[[Seen], bool]
    status: int = 503
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    reset: bool = False
    times: int | None = 1  # None: forever
    hits: int = 0


class Proxy:
    """Start with ``with Proxy(upstream_url) as proxy: proxy.url ...``.

    ``record=False`` keeps no :class:`Seen` (a long soak would hold every body); ``count`` still counts requests.
    """

    def __init__(self, upstream: str, *, record: bool = True) -> None:
        self.upstream = upstream.rstrip("/")
        self.record = record
        self.count = 0
        self.seen: list[Seen] = []
        self.faults: list[Fault] = []
        self.delay = 0.0  # seconds every forwarded request is held before it goes upstream
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="test-proxy", daemon=True)
        self.url = ""

    def __enter__(self) -> Proxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def add_fault(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()
            self.seen.clear()

    def requests(self, method: str | None = None, path_contains: str = "") -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if (method is None or s.method == method) and path_contains in s.path]

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def _stop(self) -> None:
        await self._session.close()
        await self._runner.cleanup()

    def _fault_for(self, seen: Seen) -> Fault | None:
        with self._lock:
            self.count += 1
            if self.record:
                self.seen.append(seen)
            for fault in self.faults:
                if (fault.times is None or fault.hits < fault.times) and fault.match(seen):
                    fault.hits += 1
                    return fault
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        seen = Seen(request.method, request.path, request.query_string, dict(request.headers), body)
        fault = self._fault_for(seen)
        if fault is not None:
            if fault.reset:
                if request.transport is not None:
                    request.transport.abort()
                raise asyncio.CancelledError
            return web.Response(status=fault.status, body=fault.body, headers=fault.headers)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            return await self._forward(request, headers, body)
        finally:
            self.in_flight -= 1

    async def _forward(self, request: web.Request, headers: dict[str, str], body: bytes) -> web.StreamResponse:
        async with self._session.request(
            request.method,
            self.upstream + request.path_qs,
            headers=headers,
            data=body,
            allow_redirects=False,
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        ) as upstream:
            data = await upstream.read()
            out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
        if request.method == "HEAD":
            response = web.Response(status=upstream.status, headers=out_headers)
            return response
        out_headers.pop("Content-Length", None)
        return web.Response(status=upstream.status, body=data, headers=out_headers)


def s3_error(code: str, message: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{message}</Message></Error>'
    ).encode()
