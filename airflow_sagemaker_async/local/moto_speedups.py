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

**S3 ListObjectsV2 from a sorted index.** moto 5's ``S3Backend.list_objects_v2`` walks every key of the bucket,
sorts the matches, and only then applies ``StartAfter`` / the continuation token and ``MaxKeys``: each page costs
O(bucket), so listing a 100,000-key prefix page by page costs O(N^2) (255 s measured in the batch benchmark), and
every check of a batch lists a bucket that holds its inputs and outputs. :func:`install` keeps, per bucket, a
sorted list of its key names (built at the bucket's first ListObjectsV2, then kept up to date by moto's three
key-store mutators ``__setitem__`` / ``setlist`` / ``pop``) and answers ListObjectsV2 by bisection from
``max(Prefix, StartAfter or the token's key)``, reading at most ``MaxKeys + 1`` entries (keys, or
``CommonPrefixes`` with a ``Delimiter``). The answer is moto's: the same entries in the same order (ascending
code points, which is UTF-8 byte order, as S3 documents), the same ``IsTruncated``, the same continuation
tokens (moto's MD5 of the last name, kept in its token table), a key whose latest version is a delete marker
left out but its folder kept, as moto does; an unknown continuation token goes to moto's own code.
``tests/local/test_moto_s3_index.py`` compares both on random keys.

**Service dispatch memoised.** moto's server finds the service of each request with
``DomainDispatcherApplication.get_backend_for_host``, which lists moto's package folder (``os.listdir`` and an
``os.path.isdir`` per entry, ~270) and then tries its URL patterns, under a lock, on every request: about a
tenth of the backend's CPU per asynchronous inference. Its answer depends only on the host name, so it is kept
per host.

Nothing else of moto changes (SNS keeps its own code: no concurrency failure was seen there).
:class:`~airflow_sagemaker_async.local.control_plane.MotoServer` installs them when it starts; :func:`uninstall`
restores moto's functions (``benchmarks/sqs_depth.py`` compares both).
"""

from __future__ import annotations

import bisect
import functools
import inspect
import threading
import time
from typing import TYPE_CHECKING, Any, Final

from moto.moto_server import werkzeug_app
from moto.s3 import models as s3_models
from moto.s3 import utils as s3_utils
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
    "list_objects_v2": s3_models.S3Backend.list_objects_v2,
    "store_setitem": s3_utils._VersionedKeyStore.__setitem__,
    "store_setlist": s3_utils._VersionedKeyStore.setlist,
    "store_pop": s3_utils._VersionedKeyStore.pop,
    "get_backend_for_host": werkzeug_app.DomainDispatcherApplication.get_backend_for_host,
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


# -- S3: a sorted index of each bucket's key names --------------------------------------------------------------

#: Guards every index and the key-store mutations that keep it (moto's server answers requests on many threads).
_S3_LOCK: Final = threading.RLock()
#: Attribute of a ``_VersionedKeyStore`` holding its sorted key names, once a ListObjectsV2 asked for it.
_INDEX: Final = "_sagemaker_async_sorted_names"
#: Incremented by :func:`uninstall`: an index built before (not kept up to date since) is built again.
_GENERATION: Final = [0]


def _kept_index(store: Any) -> list[str] | None:
    kept: tuple[int, list[str]] | None = store.__dict__.get(_INDEX)
    return kept[1] if kept is not None and kept[0] == _GENERATION[0] else None


def _index(store: Any) -> list[str]:
    names = _kept_index(store)
    if names is None:
        names = sorted(dict.keys(store))
        store.__dict__[_INDEX] = (_GENERATION[0], names)
    return names


def _indexed(mutator: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``__setitem__`` / ``setlist`` (``(self, key, value)``): a new key enters the index."""

    @functools.wraps(mutator)
    def wrapper(self: Any, key: str, value: Any) -> Any:
        with _S3_LOCK:
            names = _kept_index(self)
            new = names is not None and not dict.__contains__(self, key)
            answer = mutator(self, key, value)
            if new and dict.__contains__(self, key):
                bisect.insort(names, key)  # type: ignore[arg-type]
            return answer

    return wrapper


def _store_pop(self: Any, key: str) -> None:
    with _S3_LOCK:
        _ORIGINALS["store_pop"](self, key)
        names = _kept_index(self)
        if names is not None and not dict.__contains__(self, key):
            at = bisect.bisect_left(names, key)
            if at < len(names) and names[at] == key:
                del names[at]


def _list_objects_v2(  # noqa: PLR0917 - moto's signature, called positionally by moto
    self: Any,
    bucket: Any,
    prefix: str | None,
    delimiter: str | None,
    continuation_token: str | None,
    start_after: str | None,
    max_keys: int,
) -> tuple[list[Any], bool, str | None]:
    """Answer as ``S3Backend.list_objects_v2`` does (same arguments, same answer), by bisection in the index."""
    limit = self._pagination_tokens.get(continuation_token) if continuation_token else start_after
    if isinstance(bucket, s3_models.FakeTableStorageBucket) or (continuation_token and limit is None):
        return _ORIGINALS["list_objects_v2"](self, bucket, prefix, delimiter, continuation_token, start_after, max_keys)
    prefix = prefix or ""
    entries: list[Any] = []
    if max_keys > 0:
        store = bucket.keys
        with _S3_LOCK:
            names = _index(store)
            at = bisect.bisect_left(names, prefix)
            if limit:
                at = max(at, bisect.bisect_right(names, limit))
            last_folder = None
            while at < len(names) and len(entries) <= max_keys:
                name = names[at]
                at += 1
                if not name.startswith(prefix):
                    break
                rest = name[len(prefix) :]
                if delimiter and delimiter in rest:
                    folder = f"{prefix}{rest.split(delimiter)[0]}{delimiter}"
                    if folder != last_folder and (not limit or folder > limit):
                        entries.append(folder)
                    last_folder = folder
                    continue
                versions = store.getlist(name, [])
                if versions and not isinstance(versions[-1], s3_models.FakeDeleteMarker):
                    entries.append(versions[-1])
    truncated, is_truncated, token = self._truncate_result(entries, max_keys)
    return truncated, bool(is_truncated), token


def _memoised_backend_for_host(self: Any, host: str | None) -> Any:
    cache: dict[str | None, Any] = self.__dict__.setdefault("_sagemaker_async_backend_for_host", {})
    try:
        return cache[host]
    except KeyError:
        backend = cache[host] = _ORIGINALS["get_backend_for_host"](self, host)
        return backend


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
    s3_utils._VersionedKeyStore.__setitem__ = _indexed(_ORIGINALS["store_setitem"])  # type: ignore[method-assign]
    s3_utils._VersionedKeyStore.setlist = _indexed(_ORIGINALS["store_setlist"])  # type: ignore[method-assign]
    s3_utils._VersionedKeyStore.pop = _store_pop  # type: ignore[method-assign]
    s3_models.S3Backend.list_objects_v2 = _list_objects_v2  # type: ignore[method-assign,assignment]
    werkzeug_app.DomainDispatcherApplication.get_backend_for_host = _memoised_backend_for_host  # type: ignore[method-assign]


def uninstall() -> None:
    """Restore moto's own functions (idempotent); the S3 indexes built so far are dropped."""
    _GENERATION[0] += 1
    for name, method in _BACKEND_METHODS.items():
        setattr(sqs_models.SQSBackend, name, method)
    sqs_models.Queue.wait_for_messages = _ORIGINALS["wait_for_messages"]  # type: ignore[method-assign]
    sqs_models.Queue.add_message = _ORIGINALS["add_message"]  # type: ignore[method-assign]
    sqs_models.SQSBackend.is_message_valid_based_on_retention_period = (  # type: ignore[method-assign]
        _ORIGINALS["retention"]
    )
    sqs_models.unix_time = _ORIGINALS["unix_time"]
    sqs_models.unix_time_millis = _ORIGINALS["unix_time_millis"]
    s3_utils._VersionedKeyStore.__setitem__ = _ORIGINALS["store_setitem"]  # type: ignore[method-assign]
    s3_utils._VersionedKeyStore.setlist = _ORIGINALS["store_setlist"]  # type: ignore[method-assign]
    s3_utils._VersionedKeyStore.pop = _ORIGINALS["store_pop"]  # type: ignore[method-assign]
    s3_models.S3Backend.list_objects_v2 = _ORIGINALS["list_objects_v2"]  # type: ignore[method-assign]
    werkzeug_app.DomainDispatcherApplication.get_backend_for_host = _ORIGINALS["get_backend_for_host"]  # type: ignore[method-assign]


def installed() -> bool:
    """Return whether the speed-ups are in place."""
    return sqs_models.unix_time_millis is _unix_time_millis
