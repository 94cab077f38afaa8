"""
A batch's submissions on the worker: waves sent in the background while the task records what ended.

A *wave* is a run of consecutive items handed to ``submit_concurrency`` threads at once (InvokeEndpointAsync,
with botocore's retries). :class:`Waves` never blocks its caller: the task goes on checking S3 and writing the
ended parts and the state while a wave is sent, and hands out the next wave before the current one has been
sent completely, so the threads never wait on that bookkeeping (the count in flight stays within
``max_in_flight``: items being sent count as in flight). :meth:`Waves.harvest` moves the items sent so far
into the state's pending list.

The state's ``next_index`` stays at the lowest item not yet known as sent (one being sent, or refused by a
throttle after botocore's retries), so a try that dies mid-wave leaves a state from which the next try looks
up (LIST) and sends again only what it cannot prove ended: at-least-once, as for one inference.
Source: https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_runtime_InvokeEndpointAsync.html
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from airflow_sagemaker_async.batch.core import BatchNames, BatchState, PendingItem
from airflow_sagemaker_async.common.layout import compute_deadline, join_s3, s3_uri
from airflow_sagemaker_async.common.records import FAILED
from airflow_sagemaker_async.common.validation import MAX_INLINE_BODY_BYTES, parse_s3_uri
from airflow_sagemaker_async.common.watch import isoformat, utcnow

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from datetime import datetime

    from airflow_sagemaker_async.batch.inputs import BatchInput
    from airflow_sagemaker_async.common.hooks import SageMakerRuntimeHook
    from airflow_sagemaker_async.common.records import ManifestLine

__all__ = ["Waves", "extension", "pending_item", "retryable"]


def extension(names: BatchNames) -> str:
    """Return the default S3OutputPathExtension of a batch: ``airflow-batch/<tag>``."""
    return f"airflow-batch/{names.tag}"


def retryable(error: ClientError) -> bool:
    """Tell whether InvokeEndpointAsync's error is a throttle or a server error (a retry of the task may succeed)."""
    status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    code = str(error.response.get("Error", {}).get("Code", ""))
    return status >= 500 or status == 429 or "Throttl" in code or code == "SlowDown"


def pending_item(
    names: BatchNames, index: int, *, location: str | None, submitted: datetime, fields: dict[str, Any]
) -> PendingItem:
    """Return item ``index`` in flight since ``submitted``, its deadline from the request fields."""
    deadline = compute_deadline(
        submitted,
        request_ttl_seconds=fields.get("request_ttl_seconds"),
        invocation_timeout_seconds=fields.get("invocation_timeout_seconds"),
        max_wait_seconds=fields.get("max_wait_seconds"),
    )
    return PendingItem(
        index=index,
        inference_id=names.inference_id(index),
        input_location=location,
        output_location=names.output_location(index),
        failure_location=None,
        submitted_at=isoformat(submitted),
        deadline=isoformat(deadline),
    )


@dataclass
class _Wave:
    number: int
    items: int
    started: float
    left: int
    sent: int = 0


@dataclass
class Waves:
    """
    The waves of one task process: a thread pool that sends, the items being sent, and what came back.

    :param submitter: the runtime hook (adaptive retries, a pool as large as ``concurrency``).
    :param s3: the S3 client (uploads of large inline records).
    :param names: the batch's names.
    :param state: the batch's state; :meth:`harvest` adds what was sent to ``state.pending``.
    :param inputs: item ``i`` -> its input (``inputs(i)``).
    :param fields: the checked request fields.
    :param concurrency: threads sending at once.
    :param input_s3_prefix: where large inline records are uploaded, or ``None``.
    :param log: the task's logger (``self.log``).
    """

    submitter: SageMakerRuntimeHook
    s3: Any
    names: BatchNames
    state: BatchState
    inputs: Callable[[int], BatchInput]
    fields: dict[str, Any]
    concurrency: int
    input_s3_prefix: str | None
    log: Any
    cursor: int = 0
    error: ClientError | None = None
    _pool: ThreadPoolExecutor | None = None
    _sending: dict[Future[PendingItem], tuple[int, _Wave]] = field(default_factory=dict)
    _unsent: set[int] = field(default_factory=set)
    _waves: int = 0

    def __post_init__(self) -> None:
        self.cursor = self.state.next_index

    @property
    def in_progress(self) -> int:
        """Items handed to the threads whose InvokeEndpointAsync has not answered yet."""
        return len(self._sending)

    @property
    def busy(self) -> bool:
        """Some item is being sent."""
        return bool(self._sending)

    def start(self, indexes: Sequence[int]) -> None:
        """Hand ``indexes`` (consecutive items, none in flight) to the threads as one wave; return at once."""
        if not indexes:
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix=f"batch-{self.names.tag}")
        self._waves += 1
        wave = _Wave(self._waves, len(indexes), time.monotonic(), len(indexes))
        for index in indexes:
            self._sending[self._pool.submit(self._send, index, self.inputs(index))] = (index, wave)
        self.cursor = max(self.cursor, indexes[-1] + 1)
        self._update_next_index()

    def harvest(self) -> tuple[int, list[ManifestLine]]:
        """
        Move every item sent since the last call into ``state.pending``; return ``(how many, refused lines)``.

        A refused item (a 4xx other than a throttle) ends ``Failed`` with the refusal as its reason; a throttle
        or server error that outlived botocore's retries is kept in :attr:`error` and stops new waves.
        """
        done = [future for future in self._sending if future.done()]
        sent, refused = 0, []
        for future in done:
            index, wave = self._sending.pop(future)
            wave.left -= 1
            try:
                self.state.pending.append(future.result())
                self.state.submitted += 1
                wave.sent += 1
                sent += 1
            except ClientError as failure:
                if retryable(failure):
                    self.error = self.error or failure
                    self._unsent.add(index)
                else:
                    self.log.warning(
                        "Batch %s: InvokeEndpointAsync refused item %d: %s", self.state.tag, index, failure
                    )
                    item = pending_item(
                        self.names, index, location=self.inputs(index).location, submitted=utcnow(), fields=self.fields
                    )
                    reason = f"InvokeEndpointAsync refused it: {failure}"
                    refused.append(item.ended(FAILED, completed_at=None, failure_reason=reason))
            if wave.left == 0:
                elapsed = time.monotonic() - wave.started
                self.log.info(
                    "Batch %s: sent %d items in %.1f s (%.0f/s); %d of %d submitted, %d in flight",
                    self.state.tag,
                    wave.sent,
                    elapsed,
                    wave.sent / max(elapsed, 1e-9),
                    self.cursor,
                    self.state.total,
                    len(self.state.pending) + self.in_progress,
                )
        self._update_next_index()
        return sent, refused

    def drain(self) -> tuple[int, list[ManifestLine]]:
        """Wait until every item handed out has been answered; harvest them."""
        for future in list(self._sending):
            future.exception()  # waits; the error is read by harvest
        return self.harvest()

    def close(self) -> None:
        """Stop the threads (after :meth:`drain`: none is sending)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _update_next_index(self) -> None:
        """``state.next_index``: the lowest item not known as sent (being sent, or throttled), else the cursor."""
        lowest = min((index for index, _ in self._sending.values()), default=self.cursor)
        self.state.next_index = min(lowest, min(self._unsent, default=self.cursor))
        self.state.sent_until = max(self.state.sent_until or 0, self.cursor)

    def _send(self, index: int, item: BatchInput) -> PendingItem:
        """Send one item (uploading a large inline payload first); return it in flight."""
        names, fields = self.names, self.fields
        location = item.location
        body, content_type = item.payload()
        if body is not None and len(body) > MAX_INLINE_BODY_BYTES:
            bucket, prefix = parse_s3_uri(self.input_s3_prefix or "", "input_s3_prefix")
            key = join_s3(prefix, names.tag, f"{index:07d}.input")
            self.s3.put_object(Bucket=bucket, Key=key, Body=body)
            location, body = s3_uri(bucket, key), None
        submission = self.submitter.invoke_endpoint_async(
            endpoint_name=fields["endpoint_name"],
            input_location=location,
            body=body,
            content_type=content_type,
            accept=fields.get("accept"),
            custom_attributes=fields.get("custom_attributes"),
            inference_id=names.inference_id(index),
            s3_output_path_extension=fields.get("s3_output_path_extension") or extension(names),
            filename=names.filename(index),
            request_ttl_seconds=fields.get("request_ttl_seconds"),
            invocation_timeout_seconds=fields.get("invocation_timeout_seconds"),
        )
        pending = pending_item(names, index, location=location, submitted=utcnow(), fields=fields)
        pending.output_location = submission.output_location
        pending.failure_location = submission.failure_location
        pending.head_failure = not names.failure_follows_filename(index, submission.failure_location)
        return pending
