"""
SageMakerAsyncNotificationTrigger: a DAG run per SageMaker notification, through an ``AssetWatcher``.

Inferences are often submitted by other systems (a web service, a Lambda). Their endpoint publishes each
result to its ``NotificationConfig`` topics; an SQS queue subscribed to them, watched by this trigger in an
``AssetWatcher``, turns each matching notification into an asset event, and so into a run of every DAG
scheduled on the asset:

.. code-block:: python

    from airflow.sdk import DAG, Asset, AssetWatcher
    from airflow_sagemaker_async import SageMakerAsyncNotificationTrigger

    finished = Asset(
        "s3://my-bucket/async-out/",
        watchers=[
            AssetWatcher(
                name="iris_results",
                trigger=SageMakerAsyncNotificationTrigger(
                    queue_url="https://sqs.eu-west-1.amazonaws.com/123456789012/iris-results",
                    endpoint_name="iris-endpoint",
                    statuses=["Completed", "Failed"],
                ),
            )
        ],
    )
    with DAG("on_iris_result", schedule=[finished]): ...

**The event.** Its payload (:func:`notification_payload`) is stored by Airflow as the asset event's
``extra`` under ``"payload"`` (``{"from_trigger": true, "payload": {...}}``): ``inference_id``, ``status``
(``Completed`` / ``Failed`` / ``Expired``), ``endpoint_name``, ``output_location``, ``failure_location``,
``input_location``, ``failure_reason``, ``received_time`` (SageMaker's), ``message_id`` and ``sent_at``
(SQS's). A task of the DAG reads it from ``triggering_asset_events``.

**Filters** (``endpoint_name``, ``statuses``, ``output_prefix``) select the notifications; a notification
that matches none of them, a ``TestNotification`` or a message that is not SageMaker's starts nothing. Filters
that cannot match raise :class:`~airflow_sagemaker_async.common.exceptions.SageMakerAsyncParameterError` when the
DAG is parsed: an unknown status, an empty list, an ``output_prefix`` that is not an S3 URI, or an
``output_prefix`` with ``Failed`` / ``Expired`` (AWS's Failed and Expired notifications name no output
location; with ``output_prefix`` and no ``statuses``, only ``Completed`` ones are watched).

**When a message is deleted.** Only once Airflow has stored the asset event of every watcher it matched, as
far as the Airflow version lets a trigger know:

- **Airflow 3.3** (shared streams in ack mode, ``airflow.triggers.shared_stream``): every watcher of the queue
  and connection in a triggerer shares one long poll (:meth:`~SageMakerAsyncNotificationTrigger.shared_stream_key`);
  the triggerer hands each message to every watcher's filter and calls
  :meth:`SqsNotificationStream.advance` once each watcher has moved past it and the triggerer's supervisor
  has confirmed that the asset events derived from it were written to the metadata database. Only then is
  it deleted. A watcher that fails or times out on it (``[triggerer] shared_stream_ack_timeout``, 300 s) makes
  it visible again at once: redelivered, it may start the watchers that did store it a second time.
- **Airflow 3.2** (no acknowledgement from the triggerer): each watcher long-polls on its own
  (:meth:`~SageMakerAsyncNotificationTrigger.run`) and deletes a matched message
  :data:`PERSIST_GRACE_SECONDS` (5 s) after yielding its event, the message kept invisible meanwhile. The
  triggerer writes an event a sync round (about 1 s) after the trigger yields it, so a triggerer killed within
  the 5 s makes the message come back (a duplicate run, never a lost one); an event the supervisor fails to
  write for more than 5 s while the trigger lives (a metadata database outage) is lost. At least once, except
  that case.

A message no watcher matched is handled as push completion handles it
(:func:`~airflow_sagemaker_async.push.notifications.decide`): handed back for another triggerer's watchers
(visible again at once while young, then after a fifth of its age), deleted once older than 300 s
(``Expired``: 4,200 s) or if it is a ``TestNotification``; a malformed message is kept (back every 30 s,
or to the queue's dead-letter queue) and deleted once older than 300 s. So a watcher that starts within 5
minutes of a message still gets it (a restart, a new DAG).

**Duplicates.** SQS and SNS deliver at least once, and a redelivery (above) starts a second run: a DAG
started by this trigger should be idempotent per ``inference_id`` (the same inference gives the same
``inference_id`` and ``status`` in every copy; ``message_id`` differs between SNS deliveries).

**One queue per consumer kind.** Push completion (``notification_queue_url`` of the operators) deletes the
messages it routes, and watchers delete theirs, so neither sees the other's: subscribe a second queue to the
topics for the watchers. Several DAGs that want the same notifications should be scheduled on one asset
(one watcher): two watchers whose filters overlap share each message on one triggerer, but on two triggerers
the first to store its event deletes it.

**The queue never crashes the triggerer.** A missing queue, denied permission or unreachable endpoint is
logged once (WARNING, with what to check) and retried every 5 s, doubling up to 60 s; its recovery is logged.

IAM actions the triggerer's role needs on the queue: ``sqs:ReceiveMessage``, ``sqs:DeleteMessage``,
``sqs:ChangeMessageVisibility``.

.. seealso::
    - https://airflow.apache.org/docs/apache-airflow/stable/authoring-and-scheduling/event-scheduling.html
    - https://docs.aws.amazon.com/sagemaker/latest/dg/async-inference-check-predictions.html
    - :external+boto3:py:meth:`SQS.Client.receive_message`

Longer than ~400 lines because this docstring is the feature's guide (about 140 lines: setup, filters, the
deletion semantics on each Airflow version, duplicates), and the SQS stream and the trigger are two halves of
one protocol with Airflow's shared-stream acknowledgement, read best side by side.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from airflow_sagemaker_async.common.clients import client_key
from airflow_sagemaker_async.common.exceptions import SageMakerAsyncParameterError
from airflow_sagemaker_async.common.layout import normalize_s3_uri, split_s3_uri
from airflow_sagemaker_async.common.validation import check_endpoint_name, check_queue_url
from airflow_sagemaker_async.push.notifications import (
    HANDBACK_PAUSE_SECONDS,
    Action,
    Ignored,
    Malformed,
    Notification,
    batch_iter,
    decide,
    parse_message,
    release_visibility,
)

# The receive parameters, the malformed messages' visibility and the retry delays are push completion's.
from airflow_sagemaker_async.push.receiver import (
    MALFORMED_VISIBILITY_SECONDS,
    MAX_MESSAGES,
    RETRY_FIRST_SECONDS,
    RETRY_MAX_SECONDS,
    WAIT_TIME_SECONDS,
    error_code,
    sqs_client,
)

try:  # Airflow >= 3.3: shared streams, with acknowledgement (ack mode)
    from airflow.triggers.shared_stream import SharedStreamProducer
except ImportError:  # Airflow 3.2
    SharedStreamProducer = object  # type: ignore[assignment,misc]

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Hashable, Iterable, Sequence

__all__ = [
    "PERSIST_GRACE_SECONDS",
    "STATUSES",
    "NotificationFilter",
    "SageMakerAsyncNotificationTrigger",
    "SqsNotificationStream",
    "notification_payload",
]

#: The notification statuses a watcher can select (SageMaker's ``invocationStatus``).
STATUSES: Final = ("Completed", "Expired", "Failed")
#: Airflow 3.2 only: seconds between yielding an event and deleting its message (see the module doc).
PERSIST_GRACE_SECONDS: Final = 5.0
#: Added to the triggerer's ack timeout to make the visibility of a received message, seconds: the message
#: stays invisible until its fate is decided, and comes back if the triggerer dies first.
HOLD_MARGIN_SECONDS: Final = 60

_log = logging.getLogger(__name__)


def _hold_seconds() -> int:
    """Return the visibility of a received message: ``[triggerer] shared_stream_ack_timeout`` (300 s) + 60 s."""
    try:
        from airflow.configuration import conf

        ack_timeout = conf.getfloat("triggerer", "shared_stream_ack_timeout", fallback=300.0)
    except Exception:  # a configuration that cannot be read: Airflow's default
        ack_timeout = 300.0
    return int(max(ack_timeout, PERSIST_GRACE_SECONDS)) + HOLD_MARGIN_SECONDS


# -- the I/O-free part: filters and payloads --------------------------------------------------------------


@dataclass(frozen=True)
class NotificationFilter:
    """
    Which notifications start a run: all three conditions hold.

    Build it with :meth:`checked`, which validates and normalises (so that equal filters serialise equally).

    :param endpoint_name: ``requestParameters.endpointName`` must equal it; ``None``: any endpoint.
    :param statuses: ``invocationStatus`` must be one of them (sorted).
    :param output_prefix: ``responseParameters.outputLocation`` (as ``s3://bucket/key``) must start with it;
        ``None``: any location, or none.
    """

    endpoint_name: str | None
    statuses: tuple[str, ...]
    output_prefix: str | None

    @classmethod
    def checked(
        cls, *, endpoint_name: str | None, statuses: Iterable[str] | None, output_prefix: str | None
    ) -> NotificationFilter:
        """
        Return the filter, validated and normalised.

        :raises SageMakerAsyncParameterError: filters that cannot match (see the module doc).
        """
        if endpoint_name is not None:
            endpoint_name = check_endpoint_name(endpoint_name)
        if output_prefix is not None:
            try:
                bucket, _ = split_s3_uri(normalize_s3_uri(output_prefix))
            except (ValueError, TypeError):
                bucket = ""
            if not bucket:
                raise SageMakerAsyncParameterError(
                    f"output_prefix={output_prefix!r} is invalid: it must be an S3 URI such as "
                    "s3://bucket/async-out/ (the prefix of the outputLocation of the notifications to watch). "
                    "Fix the URI, or leave output_prefix out to watch every location.",
                    parameter="output_prefix",
                )
            output_prefix = normalize_s3_uri(output_prefix)
        if statuses is None:
            chosen: tuple[str, ...] = ("Completed",) if output_prefix is not None else STATUSES
        elif isinstance(statuses, str) or not all(isinstance(status, str) for status in statuses):
            raise SageMakerAsyncParameterError(
                f"statuses={statuses!r} is invalid: it must be a list of statuses among {', '.join(STATUSES)}, "
                "e.g. ['Completed', 'Failed'].",
                parameter="statuses",
            )
        else:
            chosen = tuple(sorted(set(statuses)))
            unknown = [status for status in chosen if status not in STATUSES]
            if unknown or not chosen:
                raise SageMakerAsyncParameterError(
                    f"statuses={list(statuses)!r} can never match: SageMaker's notifications have the "
                    f"invocationStatus {', '.join(STATUSES)} (case-sensitive), and at least one is needed. "
                    "Pass e.g. ['Completed', 'Failed'], or leave statuses out to watch all three.",
                    parameter="statuses",
                )
            if output_prefix is not None and (nameless := [s for s in chosen if s != "Completed"]):
                raise SageMakerAsyncParameterError(
                    f"statuses={list(statuses)!r} with output_prefix={output_prefix!r} can never match "
                    f"{' and '.join(nameless)} notifications: AWS's Failed and Expired notifications name no "
                    "output location (only Completed ones carry responseParameters.outputLocation). Watch "
                    "['Completed'] with output_prefix, and failures with another watcher filtered by "
                    "endpoint_name.",
                    parameter="statuses",
                )
        return cls(endpoint_name=endpoint_name, statuses=chosen, output_prefix=output_prefix)

    def matches(self, notification: Notification) -> bool:
        """Tell whether ``notification`` starts a run."""
        if notification.status not in self.statuses:
            return False
        if self.endpoint_name is not None and notification.endpoint_name != self.endpoint_name:
            return False
        return self.output_prefix is None or any(
            location.startswith(self.output_prefix) for location in _output_locations(notification)
        )


def _output_locations(notification: Notification) -> tuple[str, ...]:
    # parse_message puts outputLocation first; AWS documents it on Completed messages only.
    return notification.locations[:1] if notification.status == "Completed" else ()


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def notification_payload(
    notification: Notification, *, message_id: str | None, sent_at: float | None
) -> dict[str, Any]:
    """
    Return the event payload of a matching notification, JSON primitives.

    Airflow stores it in the asset event's ``extra`` under ``"payload"``.

    :param notification: the parsed notification.
    :param message_id: the SQS ``MessageId``.
    :param sent_at: SQS's ``SentTimestamp``, seconds since the epoch.
    :return: ``inference_id``, ``status``, ``endpoint_name``, ``output_location`` (``Completed``),
        ``failure_location`` (if SageMaker ever names one), ``input_location``, ``failure_reason``,
        ``received_time``, ``message_id``, ``sent_at``; missing values are ``None``.
    """
    output = _output_locations(notification)
    failures = notification.locations[len(output) :]
    return {
        "inference_id": notification.inference_id,
        "status": notification.status,
        "endpoint_name": notification.endpoint_name,
        "output_location": output[0] if output else None,
        "failure_location": failures[0] if failures else None,
        "input_location": notification.input_location,
        "failure_reason": notification.failure_reason,
        "received_time": _iso(notification.received_time),
        "message_id": message_id,
        "sent_at": _iso(datetime.fromtimestamp(sent_at, tz=UTC)) if sent_at is not None else None,
    }


@dataclass(eq=False)
class ReceivedMessage:
    """
    One received SQS message, as the watchers of a stream see it.

    The same object goes to every watcher and back to the stream, which decides its fate with ``matched``.

    :param parsed: what :func:`~airflow_sagemaker_async.push.notifications.parse_message` made of the body.
    :param message_id: the SQS ``MessageId``.
    :param receipt_handle: the handle that deletes it or changes its visibility.
    :param sent_at: SQS's ``SentTimestamp``, seconds since the epoch.
    :param matched: how many watchers yielded an event for it.
    """

    parsed: Notification | Ignored | Malformed
    message_id: str | None
    receipt_handle: str
    sent_at: float
    matched: int = 0


# -- the async shell: one long poll, and what happens to each message ---------------------------------------


class SqsNotificationStream(SharedStreamProducer):
    """
    The long poll of one queue and what happens to each received message (see the module doc).

    On Airflow 3.3 it is the shared stream's producer (ack mode): :meth:`open_stream` yields
    ``(message, message)`` pairs, :meth:`advance` deletes or hands back those the triggerer resolved. On
    Airflow 3.2 a trigger's :meth:`~SageMakerAsyncNotificationTrigger.run` drives it itself.

    :param queue_url: the SQS queue.
    :param aws_conn_id: Airflow AWS connection id.
    :param region_name: region of the client; the queue URL's own region wins when it names one.
    :param verify: whether / how to verify SSL certificates, default from the connection.
    :param botocore_config: botocore ``Config`` parameters as a dict, default from the connection.
    :param wait_time_seconds: long-poll duration, default 20.
    :param log: where problems are logged, default this module's logger.
    """

    def __init__(
        self,
        queue_url: str,
        *,
        aws_conn_id: str | None,
        region_name: str | None = None,
        verify: bool | str | None = None,
        botocore_config: dict[str, Any] | None = None,
        wait_time_seconds: int = WAIT_TIME_SECONDS,
        log: Any = None,
    ) -> None:
        self.queue_url = queue_url
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name
        self.verify = verify
        self.botocore_config = botocore_config
        self.wait_time_seconds = wait_time_seconds
        self.log = log or _log
        self.hold_seconds = _hold_seconds()
        self.healthy = True
        self.received = self.deleted = self.released = self.errors = 0
        self._client: Any = None
        self._background: set[asyncio.Task[None]] = set()
        self._reported: set[str] = set()
        self._paused_until = 0.0

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any]) -> SqsNotificationStream:
        """Return the stream of a trigger's serialised kwargs (only the queue and connection count)."""
        return cls(
            kwargs["queue_url"],
            aws_conn_id=kwargs.get("aws_conn_id"),
            region_name=kwargs.get("region_name"),
            verify=kwargs.get("verify"),
            botocore_config=kwargs.get("botocore_config"),
        )

    def _warn_once(self, kind: str, message: str, *args: Any) -> None:
        if kind in self._reported:
            self.log.debug(message, *args)
            return
        self._reported.add(kind)
        self.log.warning(message, *args)

    async def _open_client(self) -> Any:
        return await sqs_client(
            self.queue_url,
            aws_conn_id=self.aws_conn_id,
            region_name=self.region_name,
            verify=self.verify,
            botocore_config=self.botocore_config,
        )

    async def open_stream(self) -> AsyncGenerator[tuple[ReceivedMessage, ReceivedMessage], None]:
        """
        Long-poll the queue forever; yield each received message (twice: raw event and broker payload).

        Never raises for the queue: a failing receive (or client) is logged once and retried every 5 s,
        doubling up to 60 s. Only cancellation ends it.
        """
        retry = RETRY_FIRST_SECONDS
        while True:
            messages = await self._receive()
            if messages is None:
                await asyncio.sleep(retry)
                retry = min(retry * 2, RETRY_MAX_SECONDS)
                continue
            retry = RETRY_FIRST_SECONDS
            for message in messages:
                yield message, message

    async def _receive(self) -> list[ReceivedMessage] | None:
        """Receive one batch; ``None`` when the call (or opening the client) failed."""
        if (pause := self._paused_until - asyncio.get_running_loop().time()) > 0:
            await asyncio.sleep(pause)
        try:
            if self._client is None:
                manager = await self._open_client()
                self._client = (manager, await manager.__aenter__())
            answer = await self._client[1].receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=MAX_MESSAGES,
                WaitTimeSeconds=self.wait_time_seconds,
                VisibilityTimeout=self.hold_seconds,
                MessageSystemAttributeNames=["SentTimestamp"],
            )
        except asyncio.CancelledError:
            raise
        except Exception as error:
            self.errors += 1
            self.healthy = False
            self._warn_once(
                "receive",
                "Cannot receive SageMaker notifications from SQS queue %s (%s: %s); no asset event comes from it "
                "until it answers, retrying every %.0f-%.0f s. Check that the queue exists in the connection's "
                "region, that it is subscribed to the endpoint's SuccessTopic and ErrorTopic, and that the "
                "triggerer's role may sqs:ReceiveMessage, sqs:DeleteMessage and sqs:ChangeMessageVisibility on it.",
                self.queue_url,
                error_code(error),
                error,
                RETRY_FIRST_SECONDS,
                RETRY_MAX_SECONDS,
            )
            return None
        if not self.healthy:
            self.healthy = True
            self._reported.discard("receive")
            self.log.warning("SQS queue %s answers again; its notifications start DAG runs.", self.queue_url)
        now = time.time()
        received = []
        for message in answer.get("Messages") or []:
            self.received += 1
            sent = (message.get("Attributes") or {}).get("SentTimestamp")
            parsed = parse_message(message.get("Body", ""))
            if isinstance(parsed, Malformed):
                self._warn_once(
                    "malformed",
                    "SQS queue %s holds a message that is not a SageMaker notification (%s), e.g. %.200r; it starts "
                    "nothing, comes back every %d s (or goes to the queue's dead-letter queue) and is deleted once "
                    "older than 300 s. Subscribe the queue only to the endpoint's SuccessTopic and ErrorTopic.",
                    self.queue_url,
                    parsed.reason,
                    message.get("Body", ""),
                    MALFORMED_VISIBILITY_SECONDS,
                )
            received.append(
                ReceivedMessage(
                    parsed=parsed,
                    message_id=message.get("MessageId"),
                    receipt_handle=message["ReceiptHandle"],
                    sent_at=int(sent) / 1000 if sent else now,
                )
            )
        return received

    async def advance(self, batch: Sequence[Any]) -> None:
        """
        Act on messages the triggerer resolved (Airflow 3.3's ack mode); never raises.

        A message some watcher matched is deleted when every watcher resolved it cleanly (its asset events
        stored), made visible again at once otherwise; one no watcher matched is handed back, kept or deleted
        as push completion would (:func:`~airflow_sagemaker_async.push.notifications.decide`).

        :param batch: ``AdvanceItem`` s: ``broker_payload`` (the :class:`ReceivedMessage`) and ``outcome``.
        """
        await self.settle([(item.broker_payload, item.outcome.failed == 0) for item in batch])

    async def settle(self, resolved: Iterable[tuple[ReceivedMessage, bool]]) -> None:
        """
        Delete or hand back messages whose events are stored (or that started nothing); never raises.

        :param resolved: pairs ``(message, clean)``; ``clean`` is false when a watcher failed on the message.
        """
        now = time.time()
        deletes: list[str] = []
        releases: list[tuple[str, int]] = []
        for message, clean in resolved:
            age = now - message.sent_at
            if message.matched:
                if clean:
                    deletes.append(message.receipt_handle)
                else:
                    releases.append((message.receipt_handle, 0))
                continue
            action = decide(message.parsed, routed=False, age_seconds=age)
            if action is Action.DELETE:
                deletes.append(message.receipt_handle)
            elif action is Action.RELEASE:
                releases.append((message.receipt_handle, release_visibility(age)))
            else:
                releases.append((message.receipt_handle, MALFORMED_VISIBILITY_SECONDS))
        for chunk in batch_iter(deletes):
            entries = [{"Id": str(i), "ReceiptHandle": handle} for i, handle in enumerate(chunk)]
            self.deleted += await self._call("delete_message_batch", entries)
        for pairs in batch_iter(releases):
            entries = [
                {"Id": str(i), "ReceiptHandle": handle, "VisibilityTimeout": seconds}
                for i, (handle, seconds) in enumerate(pairs)
            ]
            self.released += await self._call("change_message_visibility_batch", entries)
        if any(seconds == 0 for _, seconds in releases):
            # Step aside, as push completion does: another triggerer's long poll takes what was handed back.
            self._paused_until = asyncio.get_running_loop().time() + HANDBACK_PAUSE_SECONDS

    def settle_later(self, message: ReceivedMessage, delay: float) -> None:
        """Settle a matched ``message`` (delete it) ``delay`` seconds from now, in the background (Airflow 3.2)."""

        async def later() -> None:
            await asyncio.sleep(delay)
            await self.settle([(message, True)])

        task = asyncio.get_running_loop().create_task(later())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _call(self, method: str, entries: list[dict[str, Any]]) -> int:
        """Send one SQS batch call; return how many entries succeeded (a failure is logged once)."""
        if self._client is None:
            return 0
        try:
            answer = await getattr(self._client[1], method)(QueueUrl=self.queue_url, Entries=entries)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            answer = {"Failed": [{"Code": error_code(error)}] * len(entries)}
        if failed := answer.get("Failed"):
            self._warn_once(
                method,
                "SQS %s on queue %s failed for %d message(s) (%s); they come back after their visibility timeout "
                "and may start a second run. Grant the triggerer's role sqs:DeleteMessage and "
                "sqs:ChangeMessageVisibility.",
                method,
                self.queue_url,
                len(failed),
                failed[0].get("Code"),
            )
        return len(entries) - len(failed or ())

    async def aclose(self) -> None:
        """
        Close the client; pending delayed deletes (Airflow 3.2) are dropped.

        A dropped delete leaves its message to come back after its visibility timeout: a duplicate run, never a
        lost one.
        """
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._client is not None:
            manager, self._client = self._client[0], None
            await manager.__aexit__(None, None, None)


# -- the trigger ------------------------------------------------------------------------------------------


class SageMakerAsyncNotificationTrigger(BaseEventTrigger):
    """
    Fire an event for each SageMaker notification in an SQS queue that matches the filters (an ``AssetWatcher``).

    The queue must be subscribed to the endpoint's SNS ``SuccessTopic`` and ``ErrorTopic`` (raw message delivery
    or not); use a queue of its own, not the one of push completion (see the module doc, which also states
    when a message is deleted and why a DAG may run twice for one inference).

    :param queue_url: the SQS queue URL (``https://sqs.<region>.amazonaws.com/<account>/<name>``).
    :param endpoint_name: only notifications of this endpoint, default any.
    :param statuses: only these ``invocationStatus`` values (``Completed``, ``Failed``, ``Expired``); default
        all three, or ``["Completed"]`` with ``output_prefix``.
    :param output_prefix: only ``Completed`` notifications whose output location starts with this S3 URI
        prefix (``s3://bucket/prefix``, or S3's https form), default any.
    :param aws_conn_id: Airflow AWS connection id, default ``aws_default``.
    :param region_name: AWS region; default the queue URL's, else the connection's.
    :param verify: whether / how to verify SSL certificates, default from the connection.
    :param botocore_config: botocore ``Config`` parameters as a dict, default from the connection.
    :raises SageMakerAsyncParameterError: a queue URL that is not one, or filters that cannot match.

    .. seealso::
        - :class:`SqsNotificationStream`, :func:`notification_payload`
        - https://docs.aws.amazon.com/sagemaker/latest/dg/async-inference-check-predictions.html
    """

    def __init__(
        self,
        *,
        queue_url: str,
        endpoint_name: str | None = None,
        statuses: Sequence[str] | None = None,
        output_prefix: str | None = None,
        aws_conn_id: str | None = "aws_default",
        region_name: str | None = None,
        verify: bool | str | None = None,
        botocore_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.queue_url = check_queue_url(queue_url, "queue_url")
        self.filter = NotificationFilter.checked(
            endpoint_name=endpoint_name, statuses=statuses, output_prefix=output_prefix
        )
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name
        self.verify = verify
        self.botocore_config = botocore_config

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """
        Return the classpath (derived from the class) and the kwargs, deterministic and normalised.

        Unset AWS parameters are left out. Airflow identifies an event trigger by a hash of them.
        """
        kwargs: dict[str, Any] = {
            "queue_url": self.queue_url,
            "endpoint_name": self.filter.endpoint_name,
            "statuses": list(self.filter.statuses),
            "output_prefix": self.filter.output_prefix,
            "aws_conn_id": self.aws_conn_id,
        }
        for name in ("region_name", "verify", "botocore_config"):
            if (value := getattr(self, name)) is not None:
                kwargs[name] = value
        return f"{type(self).__module__}.{type(self).__qualname__}", kwargs

    def event_for(self, message: ReceivedMessage) -> TriggerEvent | None:
        """Return the event of ``message`` if it matches the filters (and count the match on it), else ``None``."""
        parsed = message.parsed
        if not isinstance(parsed, Notification) or not self.filter.matches(parsed):
            return None
        message.matched += 1
        payload = notification_payload(parsed, message_id=message.message_id, sent_at=message.sent_at)
        self.log.info(
            "SageMaker notification %s: inference %s on %s is %s",
            message.message_id,
            parsed.inference_id,
            parsed.endpoint_name,
            parsed.status,
        )
        return TriggerEvent(payload)

    # Airflow >= 3.3: one long poll per (queue, connection) in a triggerer, deletes acknowledged.

    def shared_stream_key(self) -> Hashable:
        """Return the key of the shared poll: the queue and the connection (Airflow >= 3.3)."""
        return (
            "airflow_sagemaker_async.push.notifications",
            self.queue_url,
            client_key(self.aws_conn_id, self.region_name, self.verify, self.botocore_config),
        )

    @classmethod
    def create_shared_stream_producer(cls, kwargs: dict[str, Any]) -> SqsNotificationStream:
        """Return the queue's stream (ack mode, Airflow >= 3.3): deletes wait for the stored asset events."""
        return SqsNotificationStream.from_kwargs(kwargs)

    async def filter_shared_stream(self, shared_stream: AsyncIterator[Any]) -> AsyncIterator[TriggerEvent]:
        """Yield the event of each message of the shared stream that matches the filters (Airflow >= 3.3)."""
        async for message in shared_stream:
            if (event := self.event_for(message)) is not None:
                yield event

    # Airflow 3.2: this trigger's own long poll; delete a matched message PERSIST_GRACE_SECONDS after its event.

    async def run(self) -> AsyncGenerator[TriggerEvent, None]:
        """
        Long-poll the queue and yield an event per matching notification, forever (Airflow 3.2's path).

        A matched message is deleted :data:`PERSIST_GRACE_SECONDS` after its event was yielded; any other is
        handed back, kept or deleted at once (see the module doc).
        """
        stream = SqsNotificationStream.from_kwargs(self.serialize()[1])
        stream.log = self.log
        try:
            async for message, _ in stream.open_stream():
                event = self.event_for(message)
                if event is None:
                    await stream.settle([(message, True)])
                    continue
                yield event
                stream.settle_later(message, PERSIST_GRACE_SECONDS)
        finally:
            await stream.aclose()
