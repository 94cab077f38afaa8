"""
One aiobotocore S3 client per event loop and connection, shared by every trigger that watches with it.

The amazon provider's rule is one client per trigger (``S3KeyTrigger`` opens its own through
``AwsBaseHook.get_async_conn()``). Measured on 2 cores, that costs for 1,000 concurrent waits 75 s of CPU,
47 s before all are watching, 724 MB RSS and a 3.4 s worst event-loop stall, because each trigger builds
a botocore session, loads the S3 service model and opens its own connection pool.

Sharing is safe here because:

- **one loop, one thread**: every trigger of a triggerer runs on one asyncio event loop in one thread, so
  the registry below is only touched from that thread, between awaits (no lock needed);
- **clients never cross loops**: an aiobotocore client (its aiohttp connector) belongs to the loop that
  opened it, so the registry is keyed by the running loop first; a closed loop's clients are dropped
  with it and a new loop opens its own;
- **HEAD is stateless**: triggers only call ``head_object``; botocore clients are safe for concurrent
  calls. Each shared client comes with a semaphore sized like its connection pool
  (``max_pool_connections``, default 10; raise it through ``botocore_config`` for large fan-outs): a
  request is only built and signed when a connection can take it, so a thousand triggers waking together
  (start-up, triggerer restart) queue cheaply instead of all signing requests in one loop iteration and
  then re-checking before the last of them has been served;
- **credentials stay fresh**: the client is built by the provider's ``AwsBaseHook`` session factory, whose
  credentials refresh themselves (assume-role connections get ``RefreshableCredentials``), so one
  long-lived client keeps working past the expiry of the first credentials;
- **lifetime is reference-counted**: the client is closed when its last user leaves, also when that user
  is cancelled; opening happens once, in a task of its own, so a cancelled waiter does not cancel it for
  the others; a failed open is reported to every waiter and forgotten, so the next trigger tries again.

The key is the four AWS parameters as the trigger received them (``aws_conn_id``, ``region_name``,
``verify``, ``botocore_config``); the endpoint URL and credentials are resolved from that connection when
the client is opened.

The same registry, :class:`SharedRegistry`, holds any other resource the triggers of a loop share with the
same rules (one per key, reference-counted, opened once in its own task, closed with its last user even
under cancellation). :class:`SharedClients` is the registry of clients (it adds the request semaphore); the
SQS notification receivers of :mod:`airflow_sagemaker_async.push.receiver` live in another instance, keyed by
``(queue URL, client_key(...))``.
"""

from __future__ import annotations

import asyncio
import json
import weakref
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

__all__ = ["SharedClient", "SharedClients", "SharedRegistry", "client_key", "shared_s3_clients"]

ClientKey = tuple[Any, ...]
T = TypeVar("T")

#: Requests in flight per shared client when its config does not tell (botocore's default pool size).
DEFAULT_POOL_SIZE = 10


def client_key(
    aws_conn_id: str | None, region_name: str | None, verify: bool | str | None, botocore_config: dict[str, Any] | None
) -> ClientKey:
    """Return the registry key of the four AWS parameters (``botocore_config`` canonicalised as JSON)."""
    return (aws_conn_id, region_name, verify, json.dumps(botocore_config, sort_keys=True, default=str))


@dataclass(frozen=True)
class SharedClient:
    """
    A shared async client and the semaphore that bounds its requests in flight.

    Use ``async with shared.limit: await shared.client.head_object(...)``.
    """

    client: Any
    limit: asyncio.Semaphore


@dataclass
class _Entry(Generic[T]):
    opening: asyncio.Task[tuple[T, AbstractAsyncContextManager[Any]]]
    users: int = 0


@dataclass
class SharedRegistry(Generic[T]):
    """
    A per-event-loop, reference-counted registry of shared async resources (see the module doc).

    A resource is what an async context manager's ``__aenter__`` returns, passed through :meth:`wrap`.
    ``opened`` and ``closed`` count resources over the registry's life (for tests and benchmarks).
    """

    opened: int = 0
    closed: int = 0
    _loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[ClientKey, _Entry[T]]] = field(
        default_factory=weakref.WeakKeyDictionary
    )

    def active(self) -> int:
        """Return how many resources are open on the running loop (0 outside a loop)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return 0
        return len(self._loops.get(loop, {}))

    def open_resources(self) -> list[T]:
        """Return the resources open on the running loop, those still opening left out (for tests and benchmarks)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return []
        return [
            entry.opening.result()[0]
            for entry in self._loops.get(loop, {}).values()
            if entry.opening.done() and not entry.opening.cancelled() and entry.opening.exception() is None
        ]

    @asynccontextmanager
    async def acquire(
        self, key: ClientKey, open_client: Callable[[], Awaitable[AbstractAsyncContextManager[Any]]]
    ) -> AsyncIterator[T]:
        """
        Yield the loop's resource for ``key``, opening it with ``open_client`` if nobody holds one.

        :param key: from :func:`client_key` (plus whatever else tells resources apart).
        :param open_client: coroutine function returning the resource's async context manager
            (e.g. ``hook.get_async_conn``); called once per key while the resource is in use.
        :raises Exception: whatever opening the resource raised (each waiter gets it).
        """
        loop = asyncio.get_running_loop()
        entries = self._loops.setdefault(loop, {})
        entry = entries.get(key)
        if entry is None:
            entry = _Entry[T](opening=loop.create_task(self._open(open_client)))
            entries[key] = entry
        entry.users += 1
        try:
            # shield: a waiter's cancellation must not cancel the opening shared with others.
            shared, _ = await asyncio.shield(entry.opening)
            yield shared
        finally:
            entry.users -= 1
            if entry.users == 0:
                if entries.get(key) is entry:
                    del entries[key]
                # shield: the close completes even if this user is being cancelled.
                await asyncio.shield(self._close(entry))

    async def _open(
        self, open_client: Callable[[], Awaitable[AbstractAsyncContextManager[Any]]]
    ) -> tuple[T, AbstractAsyncContextManager[Any]]:
        manager = await open_client()
        entered = await manager.__aenter__()
        self.opened += 1
        return self.wrap(entered), manager

    def wrap(self, entered: Any) -> T:
        """Return the shared resource made of what the context manager entered (itself, here)."""
        return entered

    async def _close(self, entry: _Entry[T]) -> None:
        if not entry.opening.done():
            entry.opening.cancel()
        try:
            _, manager = await entry.opening
        except (asyncio.CancelledError, Exception):  # opening failed or was cancelled: nothing to close
            return
        await manager.__aexit__(None, None, None)
        self.closed += 1


class SharedClients(SharedRegistry[SharedClient]):
    """The registry of async clients: each comes with a semaphore sized like its connection pool."""

    def wrap(self, entered: Any) -> SharedClient:
        """Return the client and its request semaphore (``max_pool_connections``, default 10)."""
        pool = getattr(getattr(getattr(entered, "meta", None), "config", None), "max_pool_connections", None)
        return SharedClient(entered, asyncio.Semaphore(pool or DEFAULT_POOL_SIZE))


#: The registry the triggers of this process share.
shared_s3_clients = SharedClients()
