"""What the local backend remembers about each accepted InvokeEndpointAsync request.

SageMaker has no API to ask for the status of an async request; the local backend keeps one
:class:`InvocationRecord` per accepted request so that tests can prove, for instance, that an
operator enqueued exactly one inference, or that a request expired without writing an object.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datetime import datetime


class InvocationStatus(enum.StrEnum):
    """Life cycle of one async request, in the words of the SNS ``invocationStatus`` where one exists.

    ``Queued`` and ``InProgress`` are ours (SageMaker does not expose them); ``Completed``, ``Failed`` and
    ``Expired`` are the values SageMaker publishes in its notifications.
    """

    QUEUED = "Queued"
    IN_PROGRESS = "InProgress"
    COMPLETED = "Completed"
    FAILED = "Failed"
    EXPIRED = "Expired"

    @property
    def is_final(self) -> bool:
        """True for ``Completed``, ``Failed`` and ``Expired``."""
        return self in (InvocationStatus.COMPLETED, InvocationStatus.FAILED, InvocationStatus.EXPIRED)


@dataclass(frozen=True)
class InvocationRecord:
    """An immutable snapshot of one accepted request, as returned by ``backend.invocations()``.

    :param endpoint_name: the endpoint the request was sent to.
    :param inference_id: the ``InferenceId`` answered in the 202 (the caller's, or a generated uuid).
    :param status: where the request is in its life cycle.
    :param output_location: the ``OutputLocation`` answered in the 202; an object exists there only when
        ``status`` is ``Completed``.
    :param failure_location: the ``FailureLocation`` answered in the 202, ``None`` when the endpoint has no
        ``S3FailurePath``; an object exists there only when ``status`` is ``Failed`` (never for ``Expired``).
    :param input_location: the request's ``InputLocation``, ``None`` for an inline ``Body``.
    :param custom_attributes: the request's ``CustomAttributes``, forwarded verbatim to the model.
    :param request_ttl_seconds: the request's ``RequestTTLSeconds`` (default 21600), before ``time_scale``.
    :param invocation_timeout_seconds: the request's ``InvocationTimeoutSeconds`` (default 900), before
        ``time_scale``.
    :param received_time: when the request was accepted (UTC).
    :param started_time: when a worker sent it to the model container (UTC), ``None`` if it never started.
    :param finished_time: when its outcome was written to S3 (UTC), ``None`` while not final.
    :param failure_reason: the ``failureReason`` of the notification, for ``Failed`` and ``Expired``.
    :param notified: True once the notification (if the endpoint has a topic for this outcome) was published,
        or once there was nothing to publish.
    """

    endpoint_name: str
    inference_id: str
    status: InvocationStatus
    output_location: str
    failure_location: str | None
    input_location: str | None
    custom_attributes: str | None
    request_ttl_seconds: int
    invocation_timeout_seconds: int
    received_time: datetime
    started_time: datetime | None
    finished_time: datetime | None
    failure_reason: str | None
    notified: bool
