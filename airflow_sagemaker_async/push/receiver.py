"""
One SQS receiver per (event loop, queue, connection), shared by every wait on that queue: the async shell.

The decisions (parse a message, whom it wakes, delete / release / keep) are in
:mod:`airflow_sagemaker_async.push.notifications`; this module only receives and acts. The receivers live in a
:class:`~airflow_sagemaker_async.common.clients.SharedRegistry`, like the S3 clients: opened by the first wait on a
queue, in a task of its own (a cancelled wait does not cancel it for the others), closed with its last
wait, also under cancellation. A receiver runs one long poll at a time (``WaitTimeSeconds`` 20,
``MaxNumberOfMessages`` 10) in a task on the loop, so it never blocks the loop and costs one request per
20 s when the queue is quiet, whatever the number of waits. While a backlog shows (a receive returns a full
batch of 10) up to 4 more long polls run beside it, each ending on a partial batch; deletes and visibility
changes are sent in the background, off the receive path, so a wait is woken as soon as its message arrives.
After handing a message back at once (one for another triggerer's wait), the receiver's next
ReceiveMessage waits :data:`~airflow_sagemaker_async.push.notifications.HANDBACK_PAUSE_SECONDS` (0.5 s), so the
other triggerers' long polls take it (see :mod:`airflow_sagemaker_async.push.notifications` for why this bounds
the latency tail whatever the number of triggerers).

**The API for waiters** (the single trigger, a batch trigger):

.. code-block:: python

    async with subscribe_notifications(
        queue_url,
        aws_conn_id=..., region_name=..., verify=..., botocore_config=...,
        locations={output_location, failure_location},  # exact S3 URIs, and/or
        prefixes=["s3://bucket/out/batch-7f3a-"],          # any result under these, and/or
        inference_ids={inference_id},                      # Failed and Expired name no location, and/or
        batch_tags=["7f3a..."],                            # every item ...-<tag>-<index> of a batch
        log=self.log,
    ) as inbox:
        hints = await inbox.wait(timeout=seconds)  # [Notification, ...]; [] on timeout or health change
        inbox.healthy                               # False: the queue is unusable, poll as without it

A hint is never the truth: confirm with a HEAD (see :mod:`airflow_sagemaker_async.push.notifications`).

**The queue never fails a wait.** An unreachable queue, denied permission or a deleted queue is logged once
(WARNING, with what to check), the receiver marks itself unhealthy, wakes every waiter (they fall back to
polling at the schedule they would have without a queue) and retries every 5 s, doubling up to 60 s; its
recovery is logged once too. A malformed message is logged once per receiver. Failing deletes or visibility
changes are logged once and otherwise ignored: the message comes back, a duplicate costs one HEAD.

IAM actions the triggerer's role needs on the queue: ``sqs:ReceiveMessage``, ``sqs:DeleteMessage``,
``sqs:ChangeMessageVisibility`` (the batch calls use the same actions).

.. seealso::
    - :external+boto3:py:meth:`SQS.Client.receive_message`
    - https://docs.aws.amazon.com/sagemaker/latest/dg/async-inference-check-predictions.html

Longer than ~400 lines because :class:`NotificationReceiver`'s life cycle (receive, route, delete, hand back,
close under cancellation) is one piece of concurrency, kept in one class so its invariants can be read at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from typing import TYPE_CHECKING, Any, Final

from airflow_sagemaker_async.common import metrics
from airflow_sagemaker_async.common.clients import SharedRegistry, client_key
from airflow_sagemaker_async.push.notifications import (
    HANDBACK_PAUSE_SECONDS,
    STALE_AFTER_SECONDS,
    Action,
    Malformed,
    Notification,
    Router,
    Subscription,
    batch_iter,
    decide,
    parse_message,
    queue_region,
    release_visibility,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Coroutine, Iterable

__all__ = [
    "Inbox",
    "NotificationReceiver",
    "error_code",
    "shared_receivers",
    "sqs_client",
    "subscribe_notifications",
    "wall_clock",
]

#: Long-poll duration of one ReceiveMessage, seconds (SQS's maximum).
WAIT_TIME_SECONDS: Final = 20
#: Messages per ReceiveMessage (SQS's maximum).
MAX_MESSAGES: Final = 10
#: Long polls added while the queue has a backlog (each receive returns a full batch): at most 1 + 4 in flight.
MAX_EXTRA_POLLERS: Final = 4
#: Visibility timeout of a received message until it is deleted or handed back, seconds. Short, because SQS
#: still delivers to a long poll its client abandoned (a receiver closing with its last wait; see
#: aws/aws-sdk-java-v2#1395, aws/aws-sdk-go-v2#2068): such a message comes back after this, not after the
#: queue's own visibility timeout (30 s by default, up to 12 hours). Deleting or handing back takes
#: milliseconds; should it take longer, the message is received again (a duplicate costs one HEAD).
RECEIVE_VISIBILITY_SECONDS: Final = 1
#: Visibility timeout of a malformed message (not SageMaker's): it comes back this much later, seconds.
MALFORMED_VISIBILITY_SECONDS: Final = 30
#: How long closing a receiver waits for its pending deletes and handbacks, seconds.
STOP_GRACE_SECONDS: Final = 5.0
#: First and last delay between attempts while the queue fails, seconds (doubling in between).
RETRY_FIRST_SECONDS: Final = 5.0
RETRY_MAX_SECONDS: Final = 60.0

_log = logging.getLogger(__name__)
#: Problems already logged at WARNING in this process, so that N waits on one broken queue log it once.
_reported: set[tuple[str, str]] = set()


def wall_clock() -> float:
    """Return the time messages' ages are counted from (seconds since the epoch, as SQS's ``SentTimestamp``)."""
    return time.time()


def _report_once(log: Any, queue_url: str, kind: str, message: str, *args: Any) -> None:
    if (queue_url, kind) in _reported:
        log.debug(message, *args)
        return
    _reported.add((queue_url, kind))
    log.warning(message, *args)


def error_code(error: BaseException) -> str:
    """Return the AWS error code of ``error`` (``ClientError``), else its type's name."""
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code") or type(error).__name__)
    return type(error).__name__


class Inbox:
    """
    A waiter's end of a subscription: the notifications routed to it, and whether the queue works.

    Made by :func:`subscribe_notifications`; not thread-safe (one event loop).
    """

    def __init__(self, subscription: Subscription) -> None:
        self.subscription = subscription
        self._receiver: NotificationReceiver | None = None
        self._hints: list[Notification] = []
        self._event = asyncio.Event()

    @property
    def healthy(self) -> bool:
        """True while notifications can arrive (the receiver is open and its last receive worked)."""
        return self._receiver is not None and self._receiver.healthy

    def deliver(self, notification: Notification) -> None:
        """Hand a notification to the waiter (called by the receiver)."""
        self._hints.append(notification)
        self._event.set()

    def nudge(self) -> None:
        """Wake the waiter without a notification: the receiver's health changed."""
        self._event.set()

    async def wait(self, timeout: float) -> list[Notification]:  # noqa: ASYNC109 - returns [] at the timeout
        """
        Return the notifications routed here, waiting up to ``timeout`` seconds for the first.

        Returns ``[]`` at the timeout, or early when the receiver's health changed (check :attr:`healthy`).
        """
        if not self._hints and timeout > 0 and not self._event.is_set():
            with suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), timeout)
        hints, self._hints = self._hints, []
        self._event.clear()
        return hints


class NotificationReceiver:
    """
    The long-polling loop of one queue on one event loop, routing each message to the inboxes it names.

    :param client: an aiobotocore SQS client.
    :param queue_url: the queue.
    :param wait_time_seconds: long-poll duration, default :data:`WAIT_TIME_SECONDS` (20).
    :param log: where problems are logged, default this module's logger.
    """

    def __init__(self, client: Any, queue_url: str, *, wait_time_seconds: int | None = None, log: Any = None):
        self.client = client
        self.queue_url = queue_url
        self.wait_time_seconds = WAIT_TIME_SECONDS if wait_time_seconds is None else wait_time_seconds
        self.log = log or _log
        self.router = Router()
        self.healthy = True
        self.received = self.routed = self.deleted = self.released = self.malformed = self.errors = 0
        self._inboxes: set[Inbox] = set()
        self._task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()  # deletes and visibility changes
        self._pollers: set[asyncio.Task[None]] = set()  # the extra long polls of a backlog
        self._extra_pollers = 0
        self._paused_until = 0.0

    def add(self, inbox: Inbox) -> None:
        """Route to ``inbox`` from now on."""
        inbox._receiver = self
        self._inboxes.add(inbox)
        self.router.add(inbox.subscription)

    def remove(self, inbox: Inbox) -> None:
        """Stop routing to ``inbox``."""
        self.router.remove(inbox.subscription)
        self._inboxes.discard(inbox)
        inbox._receiver = None

    def start(self) -> None:
        """Start the receive loop as a task of the running loop."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"sqs-receiver {self.queue_url}")

    async def stop(self) -> None:
        """Cancel the receive loop and the extra pollers; let pending deletes and handbacks finish (up to 5 s)."""
        pollers = [*self._pollers, *([self._task] if self._task is not None else [])]
        for task in pollers:
            task.cancel()
        await asyncio.gather(*pollers, return_exceptions=True)
        if calls := list(self._background):
            # A handback cancelled here would leave another triggerer's message invisible for a while.
            _, late = await asyncio.wait(calls, timeout=STOP_GRACE_SECONDS)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        self._task = None

    def _set_health(self, healthy: bool) -> None:
        if healthy != self.healthy:
            self.healthy = healthy
            for inbox in list(self._inboxes):
                inbox.nudge()

    async def _run(self) -> None:
        retry = RETRY_FIRST_SECONDS
        while True:
            received = await self._receive_once()
            if received is None:
                await asyncio.sleep(retry)
                retry = min(retry * 2, RETRY_MAX_SECONDS)
                continue
            retry = RETRY_FIRST_SECONDS
            if received == MAX_MESSAGES and self._extra_pollers < MAX_EXTRA_POLLERS:
                poller = asyncio.get_running_loop().create_task(self._burst())
                self._pollers.add(poller)
                poller.add_done_callback(self._pollers.discard)

    async def _burst(self) -> None:
        """Long-poll beside the main loop while the queue has a backlog (full batches); end on a partial batch."""
        self._extra_pollers += 1
        try:
            while await self._receive_once() == MAX_MESSAGES:
                pass
        finally:
            self._extra_pollers -= 1

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _receive_once(self) -> int | None:
        """Receive one batch and act on it; return how many messages came, ``None`` when the call failed."""
        if (pause := self._paused_until - asyncio.get_running_loop().time()) > 0:
            await asyncio.sleep(pause)
        try:
            answer = await self.client.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=MAX_MESSAGES,
                WaitTimeSeconds=self.wait_time_seconds,
                VisibilityTimeout=RECEIVE_VISIBILITY_SECONDS,
                MessageSystemAttributeNames=["SentTimestamp"],
            )
        except asyncio.CancelledError:
            raise
        except Exception as error:
            self.errors += 1
            _report_once(
                self.log,
                self.queue_url,
                "receive",
                "Cannot receive SageMaker notifications from SQS queue %s (%s: %s); the waits on it fall back to "
                "polling S3, retrying the queue every %.0f-%.0f s. Check that the queue exists in the "
                "connection's region and that the triggerer's role may sqs:ReceiveMessage, sqs:DeleteMessage "
                "and sqs:ChangeMessageVisibility on it.",
                self.queue_url,
                error_code(error),
                error,
                RETRY_FIRST_SECONDS,
                RETRY_MAX_SECONDS,
            )
            self._set_health(False)
            return None
        if not self.healthy:
            self.log.warning("SQS queue %s answers again; notifications wake the waits on it.", self.queue_url)
            _reported.discard((self.queue_url, "receive"))
        self._set_health(True)
        messages = answer.get("Messages") or []
        self._handle(messages)
        return len(messages)

    def _handle(self, messages: list[dict[str, Any]]) -> None:
        """Wake the waits each message names at once; delete and hand back in the background."""
        now = wall_clock()
        deletes: list[str] = []
        releases: list[tuple[str, int]] = []
        for message in messages:
            self.received += 1
            parsed = parse_message(message.get("Body", ""))
            woken: set[Subscription] = set()
            if isinstance(parsed, Notification):
                woken = self.router.route(parsed)
                for subscription in woken:
                    subscription.tag.deliver(parsed)
                self.routed += bool(woken)
            elif isinstance(parsed, Malformed):
                self.malformed += 1
                _report_once(
                    self.log,
                    self.queue_url,
                    "malformed",
                    "SQS queue %s holds a message that is not a SageMaker notification (%s), e.g. %.200r; it comes "
                    "back every %d s (or goes to the queue's dead-letter queue) and is deleted once older than "
                    "%.0f s. Subscribe the queue only to the endpoint's SuccessTopic and ErrorTopic.",
                    self.queue_url,
                    parsed.reason,
                    message.get("Body", ""),
                    MALFORMED_VISIBILITY_SECONDS,
                    STALE_AFTER_SECONDS,
                )
            attributes = message.get("Attributes") or {}
            age = now - int(attributes.get("SentTimestamp") or now * 1000) / 1000
            action = decide(parsed, routed=bool(woken), age_seconds=age)
            metrics.notification(metrics.notification_fate(parsed, routed=bool(woken), deleted=action is Action.DELETE))
            if action is Action.DELETE:
                deletes.append(message["ReceiptHandle"])
            elif action is Action.RELEASE:
                releases.append((message["ReceiptHandle"], release_visibility(age)))
            else:  # KEEP: not ours to judge, and not worth receiving every RECEIVE_VISIBILITY_SECONDS
                releases.append((message["ReceiptHandle"], MALFORMED_VISIBILITY_SECONDS))
        for chunk in batch_iter(deletes):
            entries = [{"Id": str(i), "ReceiptHandle": handle} for i, handle in enumerate(chunk)]
            self._spawn(self._call("delete", "delete_message_batch", entries))
            self.deleted += len(chunk)
        for chunk in batch_iter(releases):
            entries = [
                {"Id": str(i), "ReceiptHandle": handle, "VisibilityTimeout": seconds}
                for i, (handle, seconds) in enumerate(chunk)
            ]
            self._spawn(self._call("release", "change_message_visibility_batch", entries))
            self.released += len(chunk)
        if any(seconds == 0 for _, seconds in releases):
            # Step aside: another triggerer's long poll takes what was handed back at once, not this one again.
            self._paused_until = asyncio.get_running_loop().time() + HANDBACK_PAUSE_SECONDS

    async def _call(self, kind: str, method: str, entries: list[dict[str, Any]]) -> None:
        try:
            answer = await getattr(self.client, method)(QueueUrl=self.queue_url, Entries=entries)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            answer = {"Failed": [{"Code": error_code(error), "Message": str(error)}]}
        if failed := answer.get("Failed"):
            _report_once(
                self.log,
                self.queue_url,
                kind,
                "SQS %s on queue %s failed for %d message(s) (%s); they come back after the visibility timeout and "
                "cost a duplicate HEAD. Grant the triggerer's role sqs:DeleteMessage and sqs:ChangeMessageVisibility.",
                method,
                self.queue_url,
                len(failed),
                failed[0].get("Code"),
            )


#: The receivers of this process, one per (event loop, queue URL, connection).
shared_receivers: SharedRegistry[NotificationReceiver] = SharedRegistry()


async def sqs_client(
    queue_url: str,
    *,
    aws_conn_id: str | None,
    region_name: str | None,
    verify: bool | str | None,
    botocore_config: dict[str, Any] | None,
) -> Any:
    """
    Return the async context manager of an aiobotocore SQS client for ``queue_url`` (the amazon provider's SqsHook).

    The region is the queue URL's own when it names one, else ``region_name``. The connection is resolved in a
    thread (``SqsHook.get_async_conn``), so the event loop is not blocked.
    """
    from airflow.providers.amazon.aws.hooks.sqs import SqsHook

    hook = SqsHook(
        aws_conn_id=aws_conn_id,
        region_name=queue_region(queue_url) or region_name,
        verify=verify,
        config=botocore_config,
    )
    return await hook.get_async_conn()


def _opener(
    queue_url: str,
    *,
    aws_conn_id: str | None,
    region_name: str | None,
    verify: bool | str | None,
    botocore_config: dict[str, Any] | None,
) -> Any:
    async def open_receiver() -> Any:
        client_manager = await sqs_client(
            queue_url, aws_conn_id=aws_conn_id, region_name=region_name, verify=verify, botocore_config=botocore_config
        )

        @asynccontextmanager
        async def running() -> AsyncIterator[NotificationReceiver]:
            async with client_manager as client:
                receiver = NotificationReceiver(client, queue_url)
                receiver.start()
                try:
                    yield receiver
                finally:
                    await receiver.stop()

        return running()

    return open_receiver


@asynccontextmanager
async def subscribe_notifications(
    queue_url: str,
    *,
    aws_conn_id: str | None,
    region_name: str | None = None,
    verify: bool | str | None = None,
    botocore_config: dict[str, Any] | None = None,
    locations: Iterable[str] = (),
    prefixes: Iterable[str] = (),
    inference_ids: Iterable[str] = (),
    batch_tags: Iterable[str] = (),
    log: Any = None,
) -> AsyncIterator[Inbox]:
    """
    Subscribe to the notifications of ``queue_url`` on this event loop; yield the :class:`Inbox`.

    Shares the loop's receiver for ``(queue_url, connection)``, opening it if this is its first waiter.
    Never raises for the queue: if the receiver cannot be opened, the problem is logged once and the
    inbox is unhealthy (poll without it).

    :param queue_url: the SQS queue subscribed to the endpoint's SuccessTopic and ErrorTopic.
    :param aws_conn_id: Airflow AWS connection id.
    :param region_name: region of the client; the queue URL's own region wins when it names one.
    :param verify: whether / how to verify SSL certificates, default from the connection.
    :param botocore_config: botocore ``Config`` parameters as a dict, default from the connection.
    :param locations: exact S3 URIs to be woken for.
    :param prefixes: S3 URI prefixes: be woken for any output / failure location under them.
    :param inference_ids: inference ids to be woken for (``Failed`` and ``Expired`` notifications name no
        location).
    :param batch_tags: batch tags to be woken for: any inference id ``…-<tag>-<index>`` (a batch's items).
    :param log: where to log an opening failure, default this module's logger.
    """
    inbox = Inbox(
        Subscription(
            locations=frozenset(locations),
            prefixes=tuple(prefixes),
            inference_ids=frozenset(inference_ids),
            batch_tags=frozenset(batch_tags),
        )
    )
    inbox.subscription.tag = inbox
    key = (queue_url, client_key(aws_conn_id, region_name, verify, botocore_config))
    opener = _opener(
        queue_url, aws_conn_id=aws_conn_id, region_name=region_name, verify=verify, botocore_config=botocore_config
    )
    async with AsyncExitStack() as stack:
        receiver: NotificationReceiver | None = None
        try:
            receiver = await stack.enter_async_context(shared_receivers.acquire(key, opener))
        except asyncio.CancelledError:
            raise
        except Exception as error:
            _report_once(
                log or _log,
                queue_url,
                "open",
                "Cannot open an SQS client for notification queue %s (%s: %s); waiting by polling S3 only.",
                queue_url,
                error_code(error),
                error,
            )
        if receiver is not None:
            receiver.add(inbox)
            stack.callback(receiver.remove, inbox)
        yield inbox
