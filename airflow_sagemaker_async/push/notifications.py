"""
SageMaker's SNS notifications read from SQS: parsing, routing and what to do with each message; no I/O.

An asynchronous endpoint publishes every result to its ``NotificationConfig`` topics (SuccessTopic,
ErrorTopic); an SQS queue subscribed to them lets a triggerer learn within a second that a result exists.
This module holds the decisions; :mod:`airflow_sagemaker_async.push.receiver` is the thin async shell that
receives, deletes and releases messages.

**A message is a hint, S3 is the truth.** A ``Completed`` / ``Failed`` notification only wakes the waits
it names; each confirms with a HEAD (a batch: a LIST) of its own output / failure location before it ends
(a message for an object that is not there, yet or any more, changes nothing). The one exception is
``Expired``: SageMaker writes no object for a request that expired in its queue, so nothing in S3 can
confirm it, and without the message the wait would only end at its deadline (TTL + invocation timeout +
600 s, up to 7 hours). It is trusted when it names the wait's inference id, its endpoint (when both are
known) and was received by SageMaker no earlier than :data:`EXPIRY_CLOCK_SKEW_SECONDS` before the wait's
submission (so a redelivered expiry of an earlier try that reused the same inference id cannot end a
later try).

**The shapes** (AWS developer guide, "Check prediction results"): ``Completed`` carries
``responseParameters.outputLocation``; ``Failed`` carries ``failureReason``, ``requestParameters`` and
``inferenceId`` but **no** ``responseParameters`` and no failure location; ``Expired`` names no location
either. So a notification is routed by its inference id first (the single trigger subscribes its id; a
batch trigger subscribes its batch tag, which every item's inference id ends with:
``…-<tag>-<index>``, :meth:`~airflow_sagemaker_async.batch.core.BatchNames.inference_id`), then by the
locations it names, if any (``outputLocation``, and ``failureLocation`` should SageMaker ever send one).
Locations are compared in one form, ``s3://bucket/key``
(:func:`~airflow_sagemaker_async.common.layout.normalize_s3_uri`:
virtual-hosted and path-style https URLs name the same object). A wait subscribed by location only (a
sensor not told the inference id) is therefore woken by a ``Completed`` message, but never by ``Failed`` or
``Expired`` ones: it learns of those by its polling.

**Message bodies.** With raw message delivery the SQS body is SageMaker's JSON; without it, SNS's
envelope (``{"Type": "Notification", "Message": "<SageMaker's JSON as a string>", ...}``). Both are read.
``TestNotification`` (sent when an endpoint is created) is for nobody.

**What happens to each received message** (:func:`decide`); several triggerers may share one queue, and
a message's age is counted from SQS's ``SentTimestamp``:

====================================================  ==============================================
message                                               action
====================================================  ==============================================
routed to at least one wait of this receiver          delete (acted upon)
``TestNotification``                                  delete
``Completed`` / ``Failed`` older than                 delete (every wait it could concern has
:data:`STALE_AFTER_SECONDS` (300 s, the safety-poll   safety-polled since and finds the object
ceiling)                                              itself)
``Expired`` older than :data:`EXPIRED_KEEP_SECONDS`   delete (no wait it could concern is still
(4,200 s)                                             alive; see below)
for nobody here, not stale                            hand back for the other triggerers
                                                      (:func:`release_visibility`, below)
malformed (not JSON, not SageMaker's shape)           kept: back after 30 s (or to the queue's
                                                      dead-letter queue), deleted once older than
                                                      300 s; logged once
====================================================  ==============================================

**Why ``Expired`` is kept longer.** Nothing in S3 can tell a wait that its request expired, so a wait whose
trigger starts after the message arrived (a triggerer at capacity, a restart, a worker slow to defer) can
learn it only from the message. SageMaker publishes it when the request's RequestTTLSeconds has passed,
at least TTL after the submission; a wait for that request ends by its deadline, TTL +
InvocationTimeoutSeconds (at most 3,600 s) + 600 s after the submission. So 4,200 s after SQS received the
message, no wait with the default deadline can still need it (a sensor with a longer ``timeout`` or a
larger ``max_wait_seconds`` learns of an older expiry only at its own deadline). The queue's retention
period (SQS default 4 days) drops it earlier only if set below 70 minutes.

**Handing back: a bounded tail whatever the number of triggerers.** A message for nobody on this receiver
is made visible again at once (``VisibilityTimeout`` 0) while it is young (under
:data:`CLAIM_WINDOW_SECONDS`, 3 s), and the receiver then stays out of the queue for
:data:`HANDBACK_PAUSE_SECONDS` (its next ReceiveMessage waits), so another triggerer's long poll takes it
rather than the same one again. Each wrong receipt therefore costs one round trip, and the triggerers that
have just handed the message back step aside: it reaches its owner after at most about one wrong receipt
per other triggerer, with no delay growing with the receive count (the earlier design's 0, 1, 2, 4 ... 20 s
visibility, which added tens of seconds after a few unlucky receipts). A message still unclaimed after the
claim window is for nobody yet (its wait has ended, or not started): it is handed back with a visibility of
a fifth of its age, at least 1 s and at most :data:`MAX_RELEASE_VISIBILITY_SECONDS` (20 s), so it costs
about 30 receives over its 300 s (plus a few per triggerer in the claim window) until it is stale, and an
unclaimed ``Expired`` one about 3 a minute. ``ApproximateReceiveCount`` is not used: handbacks raise it
with the number of triggerers, so it says nothing about staleness (a redrive policy's ``maxReceiveCount``
counts them too; keep it at 100 or more on a queue shared by several triggerers).

Duplicates, reordering and lost messages therefore change latency, never outcomes: a duplicate wakes a
wait for one more HEAD, a lost message leaves the wait to its safety polling.
"""

from __future__ import annotations

import enum
import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Literal

from airflow_sagemaker_async.common.layout import DEADLINE_MARGIN_SECONDS, normalize_s3_uri
from airflow_sagemaker_async.common.rules import INVOKE_ENDPOINT_ASYNC, field_rule

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

__all__ = [
    "CLAIM_WINDOW_SECONDS",
    "EXPIRED_KEEP_SECONDS",
    "EXPIRY_CLOCK_SKEW_SECONDS",
    "HANDBACK_PAUSE_SECONDS",
    "MAX_RELEASE_VISIBILITY_SECONDS",
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

#: A ``Completed`` / ``Failed`` (or malformed) message older than this (seconds since SQS received it) is
#: deleted, whoever it was for: the safety-poll ceiling of a wait with a queue (300 s), so any wait it could
#: still help has checked S3 since.
STALE_AFTER_SECONDS: Final = 300.0
#: An ``Expired`` message is kept this long (seconds since SQS received it) for a wait that starts late:
#: the largest InvocationTimeoutSeconds (3,600) + the deadline margin (600), see the module doc.
EXPIRED_KEEP_SECONDS: Final = float(
    (field_rule(INVOKE_ENDPOINT_ASYNC, "invocation_timeout_seconds").maximum or 3600) + DEADLINE_MARGIN_SECONDS
)
#: A message younger than this (seconds) is handed back at once (visibility 0): its owner is probably
#: another triggerer's wait, about to take it.
CLAIM_WINDOW_SECONDS: Final = 3.0
#: After handing back a message at once, a receiver sends its next ReceiveMessage this much later
#: (seconds), so that another triggerer's long poll takes the message.
HANDBACK_PAUSE_SECONDS: Final = 0.5
#: Ceiling of the visibility timeout given back to an older unclaimed message, seconds.
MAX_RELEASE_VISIBILITY_SECONDS: Final = 20
#: An ``Expired`` message whose ``receivedTime`` is more than this before the wait's submission is not
#: this wait's (an earlier try with the same inference id), seconds. SageMaker's smallest TTL is 60 s,
#: so an earlier try's request was received at least 60 s before a retry could be submitted.
EXPIRY_CLOCK_SKEW_SECONDS: Final = 30.0

NotificationStatus = Literal["Completed", "Failed", "Expired"]
_STATUSES: Final = ("Completed", "Failed", "Expired")
#: A batch item's inference id, ``<readable>-<tag>-<index>``
#: (:meth:`~airflow_sagemaker_async.batch.core.BatchNames.inference_id`).
_BATCH_ITEM_ID: Final = re.compile(r"-(?P<tag>[^-]+)-\d+\Z")
_AWS_QUEUE_HOST: Final = re.compile(r"(?:sqs\.(?P<a>[a-z0-9-]+)|(?P<b>[a-z0-9-]+)\.queue)\.amazonaws\.com(?:\.cn)?")


@dataclass(frozen=True)
class Notification:
    """
    One SageMaker ``InferenceResult`` notification, as far as waiting is concerned.

    :param status: ``invocationStatus``: ``Completed``, ``Failed`` or ``Expired``.
    :param inference_id: ``inferenceId``.
    :param endpoint_name: ``requestParameters.endpointName``, or ``None``.
    :param locations: the S3 URIs it names, as ``s3://bucket/key``
        (:func:`~airflow_sagemaker_async.common.layout.normalize_s3_uri`): ``responseParameters.outputLocation``
        (``Completed``), and ``failureLocation`` if present (AWS documents none: a ``Failed`` message
        usually names no location).
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
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


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
        normalize_s3_uri(value)
        for value in (response.get("outputLocation"), response.get("failureLocation"))
        if isinstance(value, str) and value
    )
    if status == "Completed" and not locations:
        return Malformed("a Completed notification without responseParameters.outputLocation")
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

    A notification wakes it when its inference id is one of ``inference_ids`` or ends with
    ``-<tag>-<index>`` for a tag of ``batch_tags``, when it names one of ``locations``, or when one of the
    locations it names starts with one of ``prefixes`` (S3 URI prefixes such as
    ``s3://bucket/out/batch-7f3a-``). Locations and prefixes are compared as ``s3://`` URIs
    (:func:`~airflow_sagemaker_async.common.layout.normalize_s3_uri`), whichever form they are given in.

    :param locations: exact S3 URIs, e.g. a request's output and failure locations.
    :param prefixes: S3 URI prefixes, default none.
    :param inference_ids: inference ids, default none. ``Failed`` and ``Expired`` notifications name no
        location (AWS's documented shapes): only a waiter that subscribes the inference id learns of them.
    :param batch_tags: batch tags (:func:`~airflow_sagemaker_async.batch.core.batch_tag`), default none: every
        item of such a batch, whatever its index (a batch's kwargs stay small).
    :param tag: anything the shell wants back with the subscription (e.g. its wake-up queue).
    """

    locations: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()
    inference_ids: frozenset[str] = frozenset()
    batch_tags: frozenset[str] = frozenset()
    tag: Any = field(default=None, compare=False)

    def __post_init__(self) -> None:
        self.locations = frozenset(normalize_s3_uri(location) for location in self.locations)
        self.prefixes = tuple(normalize_s3_uri(prefix) for prefix in self.prefixes)


class Router:
    """
    The routing table of one receiver: which subscriptions a notification wakes.

    Exact locations, inference ids and batch tags are looked up in dicts (O(1) per notification, whatever
    the number of waits); prefixes are indexed by bucket and scanned (O(prefix subscriptions of that bucket)).
    """

    def __init__(self) -> None:
        self._by_location: defaultdict[str, set[Subscription]] = defaultdict(set)
        self._by_inference_id: defaultdict[str, set[Subscription]] = defaultdict(set)
        self._by_batch_tag: defaultdict[str, set[Subscription]] = defaultdict(set)
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
        for batch in subscription.batch_tags:
            yield batch, self._by_batch_tag
        for prefix in subscription.prefixes:
            yield _bucket(prefix), self._by_bucket

    def route(self, notification: Notification) -> set[Subscription]:
        """Return the subscriptions ``notification`` wakes (empty: it is for nobody here)."""
        found: set[Subscription] = set(self._by_inference_id.get(notification.inference_id, ()))
        if self._by_batch_tag and (item := _BATCH_ITEM_ID.search(notification.inference_id)) is not None:
            found.update(self._by_batch_tag.get(item["tag"], ()))
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


def release_visibility(age_seconds: float) -> int:
    """
    Return the visibility timeout (seconds) of a message handed back for the other triggerers.

    0 while the message is younger than :data:`CLAIM_WINDOW_SECONDS` (its owner takes it at once), then a
    fifth of its age, at least 1 and at most :data:`MAX_RELEASE_VISIBILITY_SECONDS` (see the module doc).

    :param age_seconds: seconds since SQS received the message (``SentTimestamp``).
    """
    if age_seconds < CLAIM_WINDOW_SECONDS:
        return 0
    return min(max(1, int(age_seconds / 5)), MAX_RELEASE_VISIBILITY_SECONDS)


def decide(parsed: Notification | Ignored | Malformed, *, routed: bool, age_seconds: float) -> Action:
    """
    Return what to do with one received message (the table in the module doc).

    :param parsed: what :func:`parse_message` made of it.
    :param routed: it woke at least one subscription of this receiver.
    :param age_seconds: seconds since SQS received it (``SentTimestamp``).
    """
    if routed or isinstance(parsed, Ignored):
        return Action.DELETE
    keep_seconds = EXPIRED_KEEP_SECONDS if isinstance(parsed, Notification) and parsed.expired else STALE_AFTER_SECONDS
    if age_seconds > keep_seconds:
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
