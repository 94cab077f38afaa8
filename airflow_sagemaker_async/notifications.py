"""
SageMaker's SNS notifications read from SQS: parsing, routing and what to do with each message; no I/O.

An asynchronous endpoint publishes every result to its ``NotificationConfig`` topics (SuccessTopic,
ErrorTopic); an SQS queue subscribed to them lets a triggerer learn within a second that a result exists.
This module holds the decisions; :mod:`airflow_sagemaker_async.receiver` is the thin async shell that
receives, deletes and releases messages.

**A message is a hint, S3 is the truth.** A ``Completed`` / ``Failed`` notification only wakes the waits
it names; each confirms with a HEAD of its own output / failure location before it ends (a message for an
object that is not there, yet or any more, changes nothing). The one exception is ``Expired``: SageMaker
writes no object for a request that expired in its queue, so nothing in S3 can confirm it, and without
the message the wait would only end at its deadline (TTL + invocation timeout + 600 s, up to 7 hours). It
is trusted when it names the wait's inference id, its endpoint (when both are known) and was received by
SageMaker no earlier than :data:`EXPIRY_CLOCK_SKEW_SECONDS` before the wait's submission (so a redelivered
expiry of an earlier try that reused the same inference id cannot end a later try).

**Message bodies.** With raw message delivery the SQS body is SageMaker's JSON; without it, SNS's
envelope (``{"Type": "Notification", "Message": "<SageMaker's JSON as a string>", ...}``). Both are read.
``TestNotification`` (sent when an endpoint is created) is for nobody.

**What happens to each received message** (:func:`decide`), several triggerers may share one queue:

====================================================  ==============================================
message                                               action
====================================================  ==============================================
routed to at least one wait of this receiver          delete (acted upon)
``TestNotification``                                  delete
stale: older than :data:`STALE_AFTER_SECONDS` (300 s,  delete (every wait has safety-polled since; a
the safety-poll ceiling) or received more than        wait still alive finds the object by its next
:data:`STALE_AFTER_RECEIVES` (30) times               safety checks, which take the locations in
                                                      turn)
for nobody here, not stale                            release: visible again for the other triggerers
                                                      after :func:`release_visibility` seconds (0 the
                                                      first time, then 1, 2, 4 ... up to 20 s, so an
                                                      unclaimed message does not spin)
malformed (not JSON, not SageMaker's shape)           left alone: back after the queue's visibility
                                                      timeout (or to its dead-letter queue), deleted
                                                      once stale; logged once
====================================================  ==============================================

Duplicates, reordering and lost messages therefore change latency, never outcomes: a duplicate wakes a
wait for one more HEAD, a lost message leaves the wait to its safety polling.
"""

from __future__ import annotations

import enum
import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Final, Literal

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

__all__ = [
    "EXPIRY_CLOCK_SKEW_SECONDS",
    "MAX_RELEASE_VISIBILITY_SECONDS",
    "STALE_AFTER_RECEIVES",
    "STALE_AFTER_SECONDS",
    "Action",
    "Malformed",
    "Notification",
    "Router",
    "Subscription",
    "decide",
    "expiry_applies",
    "parse_message",
    "queue_region",
    "release_visibility",
]

#: A message older than this (seconds since SQS received it) is deleted, whoever it was for: the
#: safety-poll ceiling of a wait with a queue (300 s), so any wait it could still help has HEADed since.
STALE_AFTER_SECONDS: Final = 300.0
#: A message received more often than this (``ApproximateReceiveCount``, all triggerers together) is deleted.
STALE_AFTER_RECEIVES: Final = 30
#: Ceiling of the visibility timeout given back to a message released for other triggerers, seconds.
MAX_RELEASE_VISIBILITY_SECONDS: Final = 20
#: An ``Expired`` message whose ``receivedTime`` is more than this before the wait's submission is not
#: this wait's (an earlier try with the same inference id), seconds. SageMaker's smallest TTL is 60 s,
#: so an earlier try's request was received at least 60 s before a retry could be submitted.
EXPIRY_CLOCK_SKEW_SECONDS: Final = 30.0

NotificationStatus = Literal["Completed", "Failed", "Expired"]
_STATUSES: Final = ("Completed", "Failed", "Expired")
_AWS_QUEUE_HOST: Final = re.compile(r"(?:sqs\.(?P<a>[a-z0-9-]+)|(?P<b>[a-z0-9-]+)\.queue)\.amazonaws\.com(?:\.cn)?")


@dataclass(frozen=True)
class Notification:
    """
    One SageMaker ``InferenceResult`` notification, as far as waiting is concerned.

    :param status: ``invocationStatus``: ``Completed``, ``Failed`` or ``Expired``.
    :param inference_id: ``inferenceId``.
    :param endpoint_name: ``requestParameters.endpointName``, or ``None``.
    :param locations: the S3 URIs it names: ``responseParameters.outputLocation`` and ``failureLocation``.
    :param input_location: ``requestParameters.inputLocation``, or ``None`` (inline body).
    :param received_time: ``receivedTime`` (when SageMaker received the request), or ``None``.
    :param failure_reason: ``failureReason``, or ``None``.
    """

    status: NotificationStatus
    inference_id: str
    endpoint_name: str | None = None
    locations: tuple[str, ...] = ()
    input_location: str | None = None
    received_time: datetime | None = None
    failure_reason: str | None = None

    @property
    def expired(self) -> bool:
        """True for ``invocationStatus: "Expired"``: the request expired in SageMaker's queue."""
        return self.status == "Expired"


@dataclass(frozen=True)
class Malformed:
    """A message that is not a SageMaker notification; ``reason`` says why (for the log)."""

    reason: str


class Ignored(enum.Enum):
    """A SageMaker message that concerns no wait (``TestNotification``)."""

    TEST_NOTIFICATION = "TestNotification"


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def parse_message(body: str) -> Notification | Ignored | Malformed:
    """
    Read one SQS message body: SageMaker's JSON (raw delivery) or SNS's envelope around it.

    :param body: the SQS ``Body``.
    :return: the :class:`Notification`, :attr:`Ignored.TEST_NOTIFICATION`, or :class:`Malformed` with the reason.
    """
    try:
        document = json.loads(body)
    except (TypeError, ValueError):
        return Malformed("the body is not JSON")
    if isinstance(document, dict) and document.get("Type") == "Notification" and "Message" in document:
        try:
            document = json.loads(document["Message"])
        except (TypeError, ValueError):
            return Malformed("an SNS envelope whose Message is not JSON")
    if not isinstance(document, dict):
        return Malformed("the JSON is not an object")
    event_name = document.get("eventName")
    if event_name == "TestNotification":
        return Ignored.TEST_NOTIFICATION
    if event_name != "InferenceResult":
        return Malformed(f"eventName is {event_name!r}, not 'InferenceResult'")
    status, inference_id = document.get("invocationStatus"), document.get("inferenceId")
    if status not in _STATUSES:
        return Malformed(f"invocationStatus is {status!r}, not one of {', '.join(_STATUSES)}")
    if not isinstance(inference_id, str) or not inference_id:
        return Malformed("inferenceId is missing")
    request, response = (
        value if isinstance(value := document.get(name), dict) else {}
        for name in ("requestParameters", "responseParameters")
    )
    locations = tuple(
        value
        for value in (response.get("outputLocation"), response.get("failureLocation"))
        if isinstance(value, str) and value
    )
    if status != "Expired" and not locations:
        return Malformed(f"a {status} notification without outputLocation or failureLocation")
    endpoint_name, input_location = request.get("endpointName"), request.get("inputLocation")
    reason = document.get("failureReason")
    return Notification(
        status=status,
        inference_id=inference_id,
        endpoint_name=endpoint_name if isinstance(endpoint_name, str) else None,
        locations=locations,
        input_location=input_location if isinstance(input_location, str) else None,
        received_time=_timestamp(document.get("receivedTime")),
        failure_reason=reason if isinstance(reason, str) else None,
    )


def expiry_applies(
    notification: Notification, *, inference_id: str, endpoint_name: str | None, submitted_at: datetime | None
) -> bool:
    """
    Tell whether an ``Expired`` notification ends the wait for ``inference_id`` (see the module doc).

    :param notification: an ``Expired`` notification.
    :param inference_id: the wait's inference id.
    :param endpoint_name: the wait's endpoint, or ``None`` (a sensor not told it).
    :param submitted_at: when the wait's request was submitted, or ``None`` (a sensor).
    """
    if not notification.expired or notification.inference_id != inference_id:
        return False
    if endpoint_name and notification.endpoint_name and endpoint_name != notification.endpoint_name:
        return False
    if submitted_at is not None and notification.received_time is not None:
        return notification.received_time >= submitted_at - timedelta(seconds=EXPIRY_CLOCK_SKEW_SECONDS)
    return True


@dataclass(eq=False)
class Subscription:
    """
    What one waiter wants to be woken for; hashable by identity.

    A notification wakes it when it names one of ``locations`` (exact S3 URIs), when its output or failure
    location starts with one of ``prefixes`` (S3 URI prefixes such as ``s3://bucket/out/batch-7f3a-``, for a
    waiter on a whole batch), or when its inference id is one of ``inference_ids``.

    :param locations: exact S3 URIs, e.g. a request's output and failure locations.
    :param prefixes: S3 URI prefixes, default none.
    :param inference_ids: inference ids, default none (an ``Expired`` notification names no location,
        so a waiter that wants expiries subscribes its inference ids).
    :param tag: anything the shell wants back with the subscription (e.g. its wake-up queue).
    """

    locations: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()
    inference_ids: frozenset[str] = frozenset()
    tag: Any = field(default=None, compare=False)


class Router:
    """
    The routing table of one receiver: which subscriptions a notification wakes.

    Exact locations and inference ids are looked up in dicts (O(1) per notification, whatever the number of
    waits); prefixes are indexed by bucket and scanned (O(prefix subscriptions of that bucket)).
    """

    def __init__(self) -> None:
        self._by_location: defaultdict[str, set[Subscription]] = defaultdict(set)
        self._by_inference_id: defaultdict[str, set[Subscription]] = defaultdict(set)
        self._by_bucket: defaultdict[str, set[Subscription]] = defaultdict(set)
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, subscription: Subscription) -> None:
        """Start routing to ``subscription``."""
        for key, index in self._keys(subscription):
            index[key].add(subscription)
        self._count += 1

    def remove(self, subscription: Subscription) -> None:
        """Stop routing to ``subscription`` (no error if it was not added)."""
        found = False
        for key, index in self._keys(subscription):
            subscribers = index.get(key)
            if subscribers is not None and subscription in subscribers:
                found = True
                subscribers.discard(subscription)
                if not subscribers:
                    del index[key]
        self._count -= found

    def _keys(self, subscription: Subscription) -> Iterator[tuple[str, defaultdict[str, set[Subscription]]]]:
        for location in subscription.locations:
            yield location, self._by_location
        for inference_id in subscription.inference_ids:
            yield inference_id, self._by_inference_id
        for prefix in subscription.prefixes:
            yield _bucket(prefix), self._by_bucket

    def route(self, notification: Notification) -> set[Subscription]:
        """Return the subscriptions ``notification`` wakes (empty: it is for nobody here)."""
        found: set[Subscription] = set(self._by_inference_id.get(notification.inference_id, ()))
        for location in notification.locations:
            found.update(self._by_location.get(location, ()))
            for subscription in self._by_bucket.get(_bucket(location), ()):
                if any(location.startswith(prefix) for prefix in subscription.prefixes):
                    found.add(subscription)
        return found


def _bucket(uri: str) -> str:
    return uri.removeprefix("s3://").split("/", 1)[0]


class Action(enum.Enum):
    """What the receiver does with a received message."""

    DELETE = "delete"
    RELEASE = "release"
    KEEP = "keep"


def release_visibility(receive_count: int) -> int:
    """Return the visibility timeout (seconds) of a released message: 0, then 1, 2, 4 ... up to 20."""
    if receive_count <= 1:
        return 0
    return min(2 ** (receive_count - 2), MAX_RELEASE_VISIBILITY_SECONDS)


def decide(
    parsed: Notification | Ignored | Malformed,
    *,
    routed: bool,
    receive_count: int,
    age_seconds: float,
) -> Action:
    """
    Return what to do with one received message (the table in the module doc).

    :param parsed: what :func:`parse_message` made of it.
    :param routed: it woke at least one subscription of this receiver.
    :param receive_count: its ``ApproximateReceiveCount``.
    :param age_seconds: seconds since SQS received it (``SentTimestamp``).
    """
    if routed or isinstance(parsed, Ignored):
        return Action.DELETE
    if age_seconds > STALE_AFTER_SECONDS or receive_count > STALE_AFTER_RECEIVES:
        return Action.DELETE
    if isinstance(parsed, Malformed):
        return Action.KEEP
    return Action.RELEASE


def queue_region(queue_url: str) -> str | None:
    """Return the region of an AWS queue URL (``https://sqs.eu-west-1.amazonaws.com/...``), else ``None``."""
    host = queue_url.split("://", 1)[-1].split("/", 1)[0]
    match = _AWS_QUEUE_HOST.fullmatch(host)
    if match is None:
        return None
    return match["a"] or match["b"]


def batch_iter(items: Iterable[Any], size: int = 10) -> Iterator[list[Any]]:
    """Yield ``items`` in lists of at most ``size`` (SQS batch calls take at most 10 entries)."""
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
