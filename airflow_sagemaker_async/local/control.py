"""The local backend's control surface, for tests and tools in another process (any language).

The runtime serves it on its own address (``runtime_url``, 127.0.0.1 only), under ``/_local/``, as JSON and
without SigV4 (it is not a SageMaker API; anything that can reach the loopback port can use it):

=====================================  =========================================================================
``GET /_local/invocations``            every accepted async request (``?endpoint=NAME`` for one endpoint), in
                                       order of acceptance: ``{"invocations": [record, ...]}``, each record the
                                       fields of :class:`~airflow_sagemaker_async.local.records.InvocationRecord`
                                       (times ISO-8601 UTC)
``GET /_local/counts``                 ``{"counts": {endpoint: {status: n}}, "total": n}``
``GET /_local/time-scale``             ``{"time_scale": f}``
``PUT /_local/time-scale``             body ``{"time_scale": f}`` (> 0): applies to requests accepted from now;
                                       answers the new value (400 with ``{"message": ...}`` if not positive)
=====================================  =========================================================================

:func:`request` is the client the ``sagemaker-async-local`` subcommands use.
"""

from __future__ import annotations

import dataclasses
import json
import urllib.request
from collections import Counter
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, Protocol

from aiohttp import web

if TYPE_CHECKING:
    from airflow_sagemaker_async.local.records import InvocationRecord

__all__ = ["CONTROL_PREFIX", "ControlTarget", "control_routes", "record_document", "request"]

#: Paths under this prefix are the control surface (no signature checked).
CONTROL_PREFIX: Final = "/_local/"


class ControlTarget(Protocol):
    """What the control surface reads and changes: the runtime server."""

    async def snapshot_records(self, endpoint_name: str | None) -> list[InvocationRecord]:
        """Return snapshots of every accepted request (of one endpoint, or of all)."""

    def get_time_scale(self) -> float:
        """Return the current time scale."""

    def set_time_scale(self, value: float) -> None:
        """Set the time scale (raises ``ValueError`` when not positive)."""


def record_document(record: InvocationRecord) -> dict[str, Any]:
    """Return one invocation record as JSON-ready values (status as text, times ISO-8601)."""
    document = dataclasses.asdict(record)
    document["status"] = record.status.value
    for key, value in document.items():
        if isinstance(value, datetime):
            document[key] = value.isoformat()
    return document


def control_routes(target: ControlTarget) -> list[web.RouteDef]:
    """Return the control surface's routes, served by the runtime's aiohttp application."""

    async def invocations(request: web.Request) -> web.Response:
        records = await target.snapshot_records(request.query.get("endpoint"))
        return web.json_response({"invocations": [record_document(r) for r in records]})

    async def counts(request: web.Request) -> web.Response:
        records = await target.snapshot_records(None)
        by_endpoint: dict[str, Counter[str]] = {}
        for record in records:
            by_endpoint.setdefault(record.endpoint_name, Counter())[record.status.value] += 1
        return web.json_response({"counts": {name: dict(c) for name, c in by_endpoint.items()}, "total": len(records)})

    async def get_time_scale(request: web.Request) -> web.Response:
        return web.json_response({"time_scale": target.get_time_scale()})

    async def put_time_scale(request: web.Request) -> web.Response:
        try:
            value = float((await request.json())["time_scale"])
            target.set_time_scale(value)
        except (ValueError, KeyError, TypeError) as error:
            return web.json_response({"message": f'Send {{"time_scale": <a positive number>}}: {error}'}, status=400)
        return web.json_response({"time_scale": target.get_time_scale()})

    prefix = CONTROL_PREFIX.rstrip("/")
    return [
        web.get(f"{prefix}/invocations", invocations),
        web.get(f"{prefix}/counts", counts),
        web.get(f"{prefix}/time-scale", get_time_scale),
        web.put(f"{prefix}/time-scale", put_time_scale),
    ]


def request(runtime_url: str, path: str, body: dict[str, Any] | None = None, timeout: float = 30.0) -> Any:
    """
    Call the control surface of the backend whose runtime is at ``runtime_url``; return the decoded JSON.

    :param path: e.g. ``"invocations?endpoint=iris-endpoint"`` (relative to ``/_local/``).
    :param body: sent with ``PUT`` when given, else ``GET``.
    :raises urllib.error.URLError: the backend does not answer (or answered an error status).
    :raises ValueError: ``runtime_url`` is not an http URL.
    """
    if not runtime_url.startswith(("http://", "https://")):
        raise ValueError(f"runtime_url must be the backend's http://127.0.0.1:PORT, got {runtime_url!r}.")
    data = None if body is None else json.dumps(body).encode()
    call = urllib.request.Request(  # noqa: S310 - an http(s) URL, checked above
        f"{runtime_url.rstrip('/')}{CONTROL_PREFIX}{path}",
        data=data,
        method="GET" if body is None else "PUT",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(call, timeout=timeout) as answer:  # noqa: S310 - checked above
        return json.loads(answer.read())
