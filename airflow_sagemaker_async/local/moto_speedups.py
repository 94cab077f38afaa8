"""
moto's SQS made safe under concurrent requests, and two speed-ups for queues that hold thousands of messages.

**Serialised.** moto 5.2.5's SQS protects nothing but the wait of a long poll: two ReceiveMessage requests at
once iterate and change the same sets (``deepcopy(queue.pending_message_groups)`` raises ``RuntimeError: Set
changed size during iteration``, answered as a 500), which real SQS never does. :func:`install` runs every
public method of ``SQSBackend`` (the calls of SQS requests, and of SNS deliveries to SQS) under one
process-wide re-entrant lock, and replaces ``Queue.wait_for_messages`` (a long poll's wait, inside
ReceiveMessage) by a wait on a condition of that lock, which releases it while waiting, so a long poll does not
hold back SendMessage (``Queue.add_message`` notifies it). SQS calls run one at a time, as moto's own
computation already did under the GIL.

moto 5's SQS reads the clock through ``datetime`` once per message for each visibility check, and
ReceiveMessage checks every message it returns against the queue's retention period through
``get_queue_attributes``, which computes *all* the queue's attributes, among them three counts over every
message held. A receive therefore costs (messages returned) x (queue depth) clock reads. A queue shared by
triggerers holds thousands of unclaimed notifications during a large batch (see
:mod:`airflow_sagemaker_async.push.notifications`: released, not deleted, until stale), and in the 10,000-item
soak moto's SQS took over a third of the backend's CPU.

:func:`install` replaces, process-wide and idempotently:

- ``SQSBackend.is_message_valid_based_on_retention_period``: reads the queue's retention period directly
  (same comparison, O(1)); it falls back to moto's own method for a queue without that attribute;
- ``unix_time`` / ``unix_time_millis`` as seen by ``moto.sqs.models``: ``time.time()`` when called without
  an argument (the same value moto computes from ``utcnow()``), moto's own function otherwise.

Nothing else of moto changes (SNS and S3 keep their own code: no concurrency failure was seen there).
:class:`~airflow_sagemaker_async.local.control_plane.MotoServer` installs them when it starts; :func:`uninstall`
restores moto's functions (``benchmarks/sqs_depth.py`` compares both).
"""

from __future__ import annotations

import functools
import inspect
import threading
import time
from typing import TYPE_CHECKING, Any, Final

from moto.sqs import models as sqs_models

if TYPE_CHECKING:
    import datetime
    from collections.abc import Callable

__all__ = ["install", "installed", "uninstall"]

_ORIGINALS: Final[dict[str, Any]] = {
    "retention": sqs_models.SQSBackend.is_message_valid_based_on_retention_period,
    "unix_time": sqs_models.unix_time,
    "unix_time_millis": sqs_models.unix_time_millis,
    "wait_for_messages": sqs_models.Queue.wait_for_messages,
    "add_message": sqs_models.Queue.add_message,
}
#: The public methods of moto's SQSBackend, run under :data:`_LOCK` once installed.
_BACKEND_METHODS: Final[dict[str, Callable[..., Any]]] = {
    name: method
    for name, method in vars(sqs_models.SQSBackend).items()
    if inspect.isfunction(method) and not name.startswith("_")
}
#: One lock for all of moto's SQS in this process (re-entrant: backend methods call each other).
_LOCK: Final = threading.RLock()
#: Signalled when a message is added to any queue; waiting on it releases :data:`_LOCK`.
_MESSAGE_ADDED: Final = threading.Condition(_LOCK)


#: Backend methods that can make a message visible at once (a hand-back sets its visibility to 0): a waiting long
#: poll is woken after them, as after a new message, instead of at the end of its wait.
_NOTIFYING: Final = frozenset({"change_message_visibility", "change_message_visibility_batch"})


def _serialised(method: Callable[..., Any], notify: bool = False) -> Callable[..., Any]:
    @functools.wraps(method)
    def serialised(*args: Any, **kwargs: Any) -> Any:
        with _MESSAGE_ADDED:
            answer = method(*args, **kwargs)
            if notify:
                _MESSAGE_ADDED.notify_all()
            return answer

    return serialised


def _wait_for_messages(self: Any, timeout: int) -> None:
    with _MESSAGE_ADDED:  # re-entered from receive_message: wait_for releases the lock fully while waiting
        _MESSAGE_ADDED.wait_for(lambda: self.messages, timeout=timeout)


def _add_message(self: Any, message: Any) -> None:
    with _MESSAGE_ADDED:
        _ORIGINALS["add_message"](self, message)
        _MESSAGE_ADDED.notify_all()


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
    """Install the lock and the speed-ups in this process (idempotent)."""
    for name, method in _BACKEND_METHODS.items():
        setattr(sqs_models.SQSBackend, name, _serialised(method, notify=name in _NOTIFYING))
    sqs_models.Queue.wait_for_messages = _wait_for_messages  # type: ignore[method-assign]
    sqs_models.Queue.add_message = _add_message  # type: ignore[method-assign]
    sqs_models.SQSBackend.is_message_valid_based_on_retention_period = (  # type: ignore[method-assign]
        _is_message_valid_based_on_retention_period
    )
    sqs_models.unix_time = _unix_time
    sqs_models.unix_time_millis = _unix_time_millis


def uninstall() -> None:
    """Restore moto's own functions (idempotent)."""
    for name, method in _BACKEND_METHODS.items():
        setattr(sqs_models.SQSBackend, name, method)
    sqs_models.Queue.wait_for_messages = _ORIGINALS["wait_for_messages"]  # type: ignore[method-assign]
    sqs_models.Queue.add_message = _ORIGINALS["add_message"]  # type: ignore[method-assign]
    sqs_models.SQSBackend.is_message_valid_based_on_retention_period = (  # type: ignore[method-assign]
        _ORIGINALS["retention"]
    )
    sqs_models.unix_time = _ORIGINALS["unix_time"]
    sqs_models.unix_time_millis = _ORIGINALS["unix_time_millis"]


def installed() -> bool:
    """Return whether the speed-ups are in place."""
    return sqs_models.unix_time_millis is _unix_time_millis
