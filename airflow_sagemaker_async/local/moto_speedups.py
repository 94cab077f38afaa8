"""
Two speed-ups of moto's SQS for queues that hold thousands of messages: the same answers, less CPU.

moto 5's SQS reads the clock through ``datetime`` once per message for each visibility check, and
ReceiveMessage checks every message it returns against the queue's retention period through
``get_queue_attributes``, which computes *all* the queue's attributes, among them three counts over every
message held. A receive therefore costs (messages returned) x (queue depth) clock reads. A queue shared by
triggerers holds thousands of unclaimed notifications during a large batch (see
:mod:`airflow_sagemaker_async.notifications`: released, not deleted, until stale), and in the 10,000-item
soak moto's SQS took over a third of the backend's CPU.

:func:`install` replaces, process-wide and idempotently:

- ``SQSBackend.is_message_valid_based_on_retention_period``: reads the queue's retention period directly
  (same comparison, O(1)); it falls back to moto's own method for a queue without that attribute;
- ``unix_time`` / ``unix_time_millis`` as seen by ``moto.sqs.models``: ``time.time()`` when called without
  an argument (the same value moto computes from ``utcnow()``), moto's own function otherwise.

Nothing else of moto changes. :class:`~airflow_sagemaker_async.local.control_plane.MotoServer` installs them
when it starts; :func:`uninstall` restores moto's functions (``benchmarks/sqs_depth.py`` compares both).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Final

from moto.sqs import models as sqs_models

if TYPE_CHECKING:
    import datetime

__all__ = ["install", "installed", "uninstall"]

_ORIGINALS: Final[dict[str, Any]] = {
    "retention": sqs_models.SQSBackend.is_message_valid_based_on_retention_period,
    "unix_time": sqs_models.unix_time,
    "unix_time_millis": sqs_models.unix_time_millis,
}


def _unix_time(dt: datetime.datetime | None = None) -> float:
    if dt is None:
        return time.time()
    return float(_ORIGINALS["unix_time"](dt))


def _unix_time_millis(dt: datetime.datetime | None = None) -> float:
    if dt is None:
        return time.time() * 1000.0
    return float(_ORIGINALS["unix_time_millis"](dt))


def _is_message_valid_based_on_retention_period(self: Any, queue_name: str, message: Any) -> bool:
    queue = self.get_queue(queue_name)
    retention_period = getattr(queue, "message_retention_period", None)
    if retention_period is None:
        return bool(_ORIGINALS["retention"](self, queue_name, message))
    return int(retention_period) + message.sent_timestamp / 1000 > time.time()


def install() -> None:
    """Install the speed-ups in this process (idempotent)."""
    sqs_models.SQSBackend.is_message_valid_based_on_retention_period = (  # type: ignore[method-assign]
        _is_message_valid_based_on_retention_period
    )
    sqs_models.unix_time = _unix_time
    sqs_models.unix_time_millis = _unix_time_millis


def uninstall() -> None:
    """Restore moto's own functions (idempotent)."""
    sqs_models.SQSBackend.is_message_valid_based_on_retention_period = (  # type: ignore[method-assign]
        _ORIGINALS["retention"]
    )
    sqs_models.unix_time = _ORIGINALS["unix_time"]
    sqs_models.unix_time_millis = _ORIGINALS["unix_time_millis"]


def installed() -> bool:
    """Return whether the speed-ups are in place."""
    return sqs_models.unix_time_millis is _unix_time_millis
