"""SageMakerAsyncBatchInferenceTrigger: watches a batch's results by LIST in the triggerer."""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from airflow.triggers.base import TriggerEvent

from airflow_sagemaker_async.batch.core import (
    BatchNames,
    BatchState,
    BlockListing,
    Found,
    head_requests,
    list_requests,
    merge_found,
    read_listing,
    reconcile,
)
from airflow_sagemaker_async.common import metrics
from airflow_sagemaker_async.common.layout import join_s3, s3_uri, split_s3_uri
from airflow_sagemaker_async.common.records import FAILED
from airflow_sagemaker_async.common.watch import (
    DEFAULT_MAX_POLL_INTERVAL,
    DEFAULT_POLL_INTERVAL,
    PollSchedule,
    Probe,
    isoformat,
    read_head_error,
    utcnow,
)
from airflow_sagemaker_async.inference.triggers import S3ResultTrigger
from airflow_sagemaker_async.push.receiver import subscribe_notifications

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from airflow_sagemaker_async.batch.core import PendingItem
    from airflow_sagemaker_async.common.clients import SharedClient
    from airflow_sagemaker_async.common.records import BatchEvent
    from airflow_sagemaker_async.push.receiver import Inbox

__all__ = ["SageMakerAsyncBatchInferenceTrigger"]

#: At most one progress line per this many seconds.
PROGRESS_LOG_SECONDS: Final = 30.0
#: With push, notifications arriving within this many seconds are confirmed by one check (LISTs), not one each.
PUSH_SETTLE_SECONDS: Final = 1.0


class SageMakerAsyncBatchInferenceTrigger(S3ResultTrigger):
    """
    Wait until few enough items of a batch are in flight, watching their results by LIST, not by HEAD.

    Reads the batch's ``state.json`` (written by the worker before it deferred) for the items in flight,
    then lists the output and failure prefixes of each block of 1,000 items that still has one pending
    (:mod:`airflow_sagemaker_async.batch.core`): about ``2 x ceil(pending / 1,000)`` requests per check, through
    the event loop's shared S3 client. Items whose returned failure key lies elsewhere are checked by HEAD.
    Same poll schedule as the single trigger (backoff with seeded jitter). Logs progress (ended, pending,
    rate, ETA) at most every 30 s. Never submits anything and never downloads a payload.

    With ``notification_queue_url`` (an SQS queue subscribed to the endpoint's SNS topics), the trigger also
    wakes when a notification names one of the batch's items (:mod:`airflow_sagemaker_async.push.receiver`): by
    inference id, every item's ending with ``-<batch_tag>-<index>`` (AWS's ``Failed`` message names no
    location), or by a result under the batch's prefixes; notifications arriving within a second are confirmed by one
    check (S3 is the truth), and safety polling goes on at the push ceiling (300 s by default). An
    ``Expired`` notification does not end a batch item early: it ends as ``TimedOut`` at its deadline.

    Yields one :class:`~airflow_sagemaker_async.common.records.BatchEvent` and returns: ``LowWater`` once at most
    ``low_water`` items are in flight, ``Deadline`` once an item's deadline has passed. Never before
    ``not_before`` (the fast-event guard, :mod:`airflow_sagemaker_async.inference.waiting`). Rebuilt from its kwargs,
    it reads the same state and reaches the same answer.

    :param batch_tag: the batch's tag.
    :param state_location: S3 URI of the batch's ``state.json``.
    :param output_dir: S3 URI of the directory holding the batch's outputs.
    :param failure_dir: S3 URI of the directory holding its failure objects, or ``None``.
    :param low_water: fire once at most this many items are in flight (0: when every item has ended).
    :param not_before: absolute ISO-8601 time before which no event is yielded, default ``None``.
    :param poll_interval: seconds before the first re-check, default 2; grows 1.5x per check.
    :param max_poll_interval: ceiling of the interval, seconds, default 30; 300 with ``notification_queue_url``.
    :param notification_queue_url: URL of an SQS queue subscribed to the endpoint's success and error topics,
        default ``None`` (polling only).
    :param aws_conn_id: Airflow AWS connection id, default ``aws_default``.
    :param region_name: AWS region of the buckets; default from the connection.
    :param verify: whether / how to verify SSL certificates, default from the connection.
    :param botocore_config: botocore ``Config`` parameters as a dict, default from the connection.

    .. seealso::
        - :external+boto3:py:meth:`S3.Client.list_objects_v2`
    """

    metrics_kind = "batch"

    def __init__(
        self,
        *,
        batch_tag: str,
        state_location: str,
        output_dir: str,
        failure_dir: str | None,
        low_water: int,
        not_before: str | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        max_poll_interval: float | None = None,
        notification_queue_url: str | None = None,
        aws_conn_id: str | None = "aws_default",
        region_name: str | None = None,
        verify: bool | str | None = None,
        botocore_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            not_before=not_before,
            poll_interval=poll_interval,
            max_poll_interval=max_poll_interval,
            notification_queue_url=notification_queue_url,
            aws_conn_id=aws_conn_id,
            region_name=region_name,
            verify=verify,
            botocore_config=botocore_config,
        )
        self.batch_tag = batch_tag
        self.state_location = state_location
        self.output_dir = output_dir
        self.failure_dir = failure_dir
        self.low_water = int(low_water)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Return the classpath (derived from the class) and the JSON-primitive kwargs (never a list of items)."""
        return self._serialized(
            {
                "batch_tag": self.batch_tag,
                "state_location": self.state_location,
                "output_dir": self.output_dir,
                "failure_dir": self.failure_dir,
                "low_water": self.low_water,
            }
        )

    async def _read_state(self, shared: SharedClient) -> BatchState:
        """
        Read the state, parsed in a thread: its size grows with the items in flight.

        At 100,000 in flight (34 MB) a parse on the loop stalled it about 0.46 s, in a thread at most 0.12 s at a
        time (``benchmarks/batch_state.py``).
        """
        bucket, key = split_s3_uri(self.state_location)
        async with shared.limit:
            response = await shared.client.get_object(Bucket=bucket, Key=key)
            async with response["Body"] as body:
                text = await body.read()
        return await asyncio.to_thread(BatchState.from_json, text)

    async def _list(self, shared: SharedClient, names: BatchNames, listing: BlockListing) -> list[tuple[str, Any]]:
        """Return ``(s3 uri, LastModified)`` of a block's wanted span (StartAfter, paginated); on 5xx, what was read."""
        bucket, prefix = split_s3_uri(listing.prefix)
        _, start_after = split_s3_uri(listing.start_after)
        found: list[tuple[str, Any]] = []
        request: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "StartAfter": start_after}
        while True:
            try:
                async with shared.limit:
                    metrics.s3_request("list", kind="batch")
                    page = await shared.client.list_objects_v2(**request, MaxKeys=listing.max_keys)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                result = read_head_error(error)  # same reading as a HEAD: 403 / 5xx / resets wait, others raise
                self.log.warning(
                    "Batch %s: LIST %s answered %s; the wait goes on", self.batch_tag, listing.prefix, result
                )
                return found
            found += [(s3_uri(bucket, item["Key"]), item.get("LastModified")) for item in page.get("Contents", [])]
            token = page.get("NextContinuationToken")
            if not (page.get("IsTruncated") and token and listing.read_on(names, found[-1][0] if found else None)):
                return found
            request = {"Bucket": bucket, "Prefix": prefix, "ContinuationToken": token}

    async def _find(self, shared: SharedClient, names: BatchNames, pending: list[PendingItem]) -> dict[int, Found]:
        found: dict[int, Found] = {}
        for listing in list_requests(names, (item.index for item in pending)):
            read_listing(names, found, listing.status, await self._list(shared, names, listing))
        for item in head_requests(pending, found):
            assert item.failure_location is not None  # head_requests keeps only those with one
            if (await self._head(shared, *split_s3_uri(item.failure_location))).probe is Probe.FOUND:
                merge_found(found, item.index, Found(FAILED, item.failure_location, None))
        return found

    @asynccontextmanager
    async def _inbox(self) -> AsyncIterator[Inbox | None]:
        if not self.notification_queue_url:
            yield None
            return
        prefixes = [join_s3(self.output_dir, f"{self.batch_tag}-")]
        if self.failure_dir:
            prefixes.append(join_s3(self.failure_dir, f"{self.batch_tag}-"))
        async with subscribe_notifications(
            self.notification_queue_url,
            aws_conn_id=self.aws_conn_id,
            region_name=self.region_name,
            verify=self.verify,
            botocore_config=self.botocore_config,
            prefixes=prefixes,
            batch_tags={self.batch_tag},  # AWS's Failed message names no location, only the inference id
            log=self.log,
        ) as inbox:
            yield inbox

    async def _sleep(self, delay: float, inbox: Inbox | None, schedule: PollSchedule) -> None:
        """Sleep ``delay`` seconds, or less: until notifications (settled for a second) name a result."""
        if inbox is None:
            await asyncio.sleep(delay)
            return
        schedule.set_ceiling(self.max_poll_interval if inbox.healthy else DEFAULT_MAX_POLL_INTERVAL)
        if await inbox.wait(delay):
            await asyncio.sleep(min(PUSH_SETTLE_SECONDS, delay))
            await inbox.wait(0)  # those that arrived meanwhile are confirmed by the same check

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Check until few enough items are in flight or a deadline passes; yield one event and return."""
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(metrics.holding_wait())
            shared = await stack.enter_async_context(self._s3_client())
            # Subscribed before the first check: a result written in between is seen by one or the other.
            inbox = await stack.enter_async_context(self._inbox())
            state = await self._read_state(shared)
            names = BatchNames(self.batch_tag, "", self.output_dir, self.failure_dir)
            pending = list(state.pending)
            start, started, logged = len(pending), time.monotonic(), time.monotonic()
            earliest = state.earliest_deadline()
            schedule = PollSchedule(
                f"{self.state_location}\n{state.deferrals}",
                datetime.fromisoformat(earliest) if earliest else utcnow(),
                self.poll_interval,
                self.max_poll_interval,
            )
            self.log.info(
                "Watching batch %s: %d in flight, low-water mark %d, %d of %d submitted, notifications %s",
                self.batch_tag,
                len(pending),
                self.low_water,
                state.next_index,
                state.total,
                self.notification_queue_url or "(none: polling only)",
            )
            checks, status = 0, "LowWater"
            while True:
                ended, pending = reconcile(pending, await self._find(shared, names, pending), utcnow())
                checks += 1
                if any(found is None for _, found in ended):
                    status = "Deadline"
                    break
                if len(pending) <= self.low_water:
                    break
                if time.monotonic() - logged >= PROGRESS_LOG_SECONDS:
                    logged = time.monotonic()
                    done = start - len(pending)
                    rate = done / max(logged - started, 1e-9)
                    eta = f"{len(pending) / rate:.0f} s" if rate > 0 else "unknown"
                    self.log.info(
                        "Batch %s: %d ended this wave, %d in flight, %.1f/s, ETA %s",
                        self.batch_tag,
                        done,
                        len(pending),
                        rate,
                        eta,
                    )
                delay = schedule.next_delay()
                if delay is None:
                    continue  # the earliest deadline has passed: the next check ends those items
                await self._sleep(delay, inbox, schedule)
        if self.not_before and (hold := (datetime.fromisoformat(self.not_before) - utcnow()).total_seconds()) > 0:
            self.log.info("Batch %s: holding the event %.1f s (fast-event guard)", self.batch_tag, hold)
            await asyncio.sleep(hold)
        event: BatchEvent = {
            "status": "LowWater" if status == "LowWater" else "Deadline",
            "batch_tag": self.batch_tag,
            "state_location": self.state_location,
            "ended": start - len(pending),
            "pending": len(pending),
            "checks": checks,
            "detected_at": isoformat(utcnow()),
        }
        self.log.info("Batch %s: %s after %d checks, %d in flight", self.batch_tag, status, checks, len(pending))
        yield TriggerEvent(event)
