"""SageMakerAsyncInferenceTrigger: watches a request's output and failure locations in the triggerer.

Longer than ~400 lines because it holds the two triggers' shared base (``S3ResultTrigger``: parameters,
serialisation, the shared client) beside the single wait's loop, whose push and polling branches read best
together; the decisions are in :mod:`~airflow_sagemaker_async.common.watch`.
"""

from __future__ import annotations

import asyncio
import weakref
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.providers.common.compat.sdk import conf
from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_sagemaker_async.common import metrics
from airflow_sagemaker_async.common.clients import SharedClient, client_key, shared_s3_clients
from airflow_sagemaker_async.common.layout import normalize_s3_uri
from airflow_sagemaker_async.common.validation import check_poll_schedule, check_queue_url
from airflow_sagemaker_async.common.watch import (
    DEFAULT_MAX_POLL_INTERVAL,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_PUSH_MAX_POLL_INTERVAL,
    DEFAULT_SAFETY_CHECKS_PER_SECOND,
    ProbeResult,
    SafetyBudget,
    Watch,
    isoformat,
    read_head_error,
    read_head_response,
    utcnow,
)
from airflow_sagemaker_async.push.notifications import expiry_applies
from airflow_sagemaker_async.push.receiver import subscribe_notifications

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from airflow_sagemaker_async.common.records import WatchEvent
    from airflow_sagemaker_async.push.notifications import Notification
    from airflow_sagemaker_async.push.receiver import Inbox

__all__ = ["S3ResultTrigger", "SageMakerAsyncInferenceTrigger", "safety_budget"]

#: A check this close to the deadline, seconds, is the wait's last: it looks at both locations, never one.
FINAL_CHECK_MARGIN_SECONDS = 1.0

#: ``airflow_sagemaker_async.inference.waiting.CONFIG_SECTION`` (that module imports this one).
_CONFIG_SECTION = "sagemaker_async"
_budgets: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, SafetyBudget] = weakref.WeakKeyDictionary()


def safety_budget() -> SafetyBudget:
    """
    Return the running event loop's budget of safety checks, shared by its push waits (see :class:`SafetyBudget`).

    Created at the loop's first push wait with the cap ``[sagemaker_async] safety_checks_per_second`` from the
    triggerer's Airflow config (default :data:`~airflow_sagemaker_async.common.watch.DEFAULT_SAFETY_CHECKS_PER_SECOND`,
    20 HEADs per second); read once per loop.

    :raises ValueError: when the setting is not a number > 0 (every push wait of the loop fails with it).
    """
    loop = asyncio.get_running_loop()
    budget = _budgets.get(loop)
    if budget is None:
        checks_per_second = conf.getfloat(
            _CONFIG_SECTION, "safety_checks_per_second", fallback=DEFAULT_SAFETY_CHECKS_PER_SECOND
        )
        budget = _budgets[loop] = SafetyBudget(checks_per_second)
    return budget


class S3ResultTrigger(BaseTrigger):
    """
    What the triggers of this package share: the wait's common parameters and the event loop's S3 client.

    Keeps the four AWS parameters as received (passed unchanged to :class:`S3Hook`), the fast-event guard
    (``not_before``), the notification queue and the poll schedule (ceiling 300 s by default with a queue,
    30 s without); builds the serialised kwargs (classpath derived from the class, unset optional values
    left out so defaults apply, as the amazon provider does); opens the shared aiobotocore S3 client
    (:mod:`airflow_sagemaker_async.common.clients`) and HEADs through it.
    """

    #: the ``kind`` tag of the S3 request metrics (:mod:`airflow_sagemaker_async.common.metrics`).
    metrics_kind: ClassVar[Literal["inference", "batch"]] = "inference"

    def __init__(
        self,
        *,
        not_before: str | None,
        poll_interval: float,
        max_poll_interval: float | None,
        notification_queue_url: str | None,
        aws_conn_id: str | None,
        region_name: str | None,
        verify: bool | str | None,
        botocore_config: dict[str, Any] | None,
    ) -> None:
        super().__init__()
        self.not_before = datetime.fromisoformat(not_before).isoformat() if not_before else None
        self.notification_queue_url = check_queue_url(notification_queue_url) if notification_queue_url else None
        if max_poll_interval is None:
            max_poll_interval = (
                DEFAULT_PUSH_MAX_POLL_INTERVAL if self.notification_queue_url else DEFAULT_MAX_POLL_INTERVAL
            )
        self.poll_interval, self.max_poll_interval = check_poll_schedule(poll_interval, max_poll_interval)
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name
        self.verify = verify
        self.botocore_config = botocore_config

    def _serialized(self, own: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """Return the classpath and ``own`` kwargs plus the shared ones (unset optional values left out)."""
        kwargs = {
            **own,
            "poll_interval": self.poll_interval,
            "max_poll_interval": self.max_poll_interval,
            "aws_conn_id": self.aws_conn_id,
        }
        for name in ("not_before", "notification_queue_url", "region_name", "verify", "botocore_config"):
            if (value := getattr(self, name)) is not None:
                kwargs[name] = value
        return f"{type(self).__module__}.{type(self).__qualname__}", kwargs

    def hook(self) -> S3Hook:
        """Return the S3 hook built from the four AWS parameters, unchanged."""
        return S3Hook(
            aws_conn_id=self.aws_conn_id,
            region_name=self.region_name,
            verify=self.verify,
            config=self.botocore_config,
        )

    @asynccontextmanager
    async def _s3_client(self) -> AsyncIterator[SharedClient]:
        # One client per event loop and connection, shared with the other triggers (see clients.py).
        # get_async_conn resolves the connection in a thread (sync_to_async): nothing blocks the loop.
        key = client_key(self.aws_conn_id, self.region_name, self.verify, self.botocore_config)
        async with shared_s3_clients.acquire(key, self.hook().get_async_conn) as shared:
            yield shared

    async def _head(self, shared: SharedClient, bucket: str, key: str) -> ProbeResult:
        try:
            async with shared.limit:  # build and sign the request only when a pooled connection can take it
                metrics.s3_request("head", kind=self.metrics_kind)
                response = await shared.client.head_object(Bucket=bucket, Key=key)
            return read_head_response(response)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            return read_head_error(error)


class SageMakerAsyncInferenceTrigger(S3ResultTrigger):
    """
    Wait for an asynchronous inference's result object without holding a worker slot.

    Each check HEADs the output key, then (if not found) the failure key, through an aiobotocore client
    shared by the triggers of the event loop that use the same connection
    (:mod:`airflow_sagemaker_async.common.clients`); 404 means
    "not yet", 403 is explained once in the log and the wait goes on (see
    :mod:`airflow_sagemaker_async.common.watch`), 5xx / throttling / connection errors never end the wait.
    The interval starts at ``poll_interval``, grows by 1.5x per check up to ``max_poll_interval`` and
    is jittered, so triggers started together do not poll in lockstep. Never downloads a payload.

    **Push completion** (``notification_queue_url``): an SQS queue subscribed to the endpoint's SNS
    SuccessTopic and ErrorTopic wakes the wait within about a second of the result
    (:mod:`airflow_sagemaker_async.push.receiver`, one long-polling receiver per event loop, queue and connection,
    shared by every wait on it). The wait subscribes its inference id and its two locations: a ``Completed``
    message names the output location, AWS's ``Failed`` message names none (only ``failureReason``), so it
    is routed by inference id and the failure location is HEADed first. A notification is only a hint: the
    trigger HEADs its own locations before it yields (without a ``failure_location``, a ``Failed`` message
    cannot be confirmed and the wait goes on to its deadline, with a warning). The polling above goes on as
    a safety net with a ceiling of 300 s by default, stretched when the triggerer's event loop holds so many
    push waits that their safety checks would pass ``[sagemaker_async] safety_checks_per_second`` (20 HEADs
    per second by default: beyond 5,400 waits, :class:`~airflow_sagemaker_async.common.watch.SafetyBudget`),
    each safety check HEADing one location in turn
    (:meth:`~airflow_sagemaker_async.common.watch.Watch.safety_targets`; a lost notification costs latency,
    never the outcome: at most twice the ceiling, see :mod:`airflow_sagemaker_async.common.watch`), back to at
    most 30 s and both locations while the queue fails. An ``Expired``
    notification for this inference ends the wait at once with ``TimedOut`` and ``expired`` set (SageMaker
    writes no object for an expired request; see :mod:`airflow_sagemaker_async.push.notifications` for why this
    one message is trusted).

    Yields exactly one event, then returns: a :class:`~airflow_sagemaker_async.common.records.WatchEvent`.
    Never before ``not_before`` (the fast-event guard, see :mod:`airflow_sagemaker_async.inference.waiting`): a result
    found earlier is held until then.

    :param inference_id: the request's InferenceId (for messages and jitter seed).
    :param output_location: S3 URI returned by InvokeEndpointAsync as ``OutputLocation``.
    :param failure_location: S3 URI returned as ``FailureLocation``; ``None`` when the endpoint has
        no ``S3FailurePath`` (then a model error shows only as a timeout).
    :param deadline: absolute ISO-8601 time (with offset) after which the wait ends with a ``timeout``
        event; fixed at submission, so a triggerer restart does not extend it.
    :param endpoint_name: the endpoint, echoed in the event so the resumed task needs nothing else,
        default ``None``.
    :param submitted_at: ISO-8601 time InvokeEndpointAsync answered, echoed in the event, default ``None``.
    :param not_before: absolute ISO-8601 time before which no event is yielded, default ``None`` (no hold).
    :param endpoint_instances_at_submit: the endpoint's instance count at submission, echoed in the event,
        default ``None`` (unknown; then left out of the serialized kwargs).
    :param poll_interval: seconds before the first re-check, default 2.
    :param max_poll_interval: ceiling of the interval, seconds, default 30; 300 with ``notification_queue_url``.
    :param notification_queue_url: URL of an SQS queue subscribed to the endpoint's success and error topics
        (raw message delivery or not), default ``None`` (poll only). Needs ``sqs:ReceiveMessage``,
        ``sqs:DeleteMessage`` and ``sqs:ChangeMessageVisibility``; read with the same connection.
    :param aws_conn_id: Airflow AWS connection id, default ``aws_default``.
    :param region_name: AWS region of the buckets; default from the connection.
    :param verify: whether / how to verify SSL certificates, default from the connection.
    :param botocore_config: botocore ``Config`` parameters as a dict, default from the connection.

    .. seealso::
        - https://docs.aws.amazon.com/sagemaker/latest/dg/async-inference-check-predictions.html
        - :external+boto3:py:meth:`S3.Client.head_object`
        - https://docs.aws.amazon.com/sagemaker/latest/dg/async-inference-check-predictions.html#async-inference-check-predictions-sns
    """

    def __init__(
        self,
        *,
        inference_id: str,
        output_location: str,
        failure_location: str | None,
        deadline: str,
        endpoint_name: str | None = None,
        submitted_at: str | None = None,
        not_before: str | None = None,
        endpoint_instances_at_submit: int | None = None,
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
        self.inference_id = inference_id
        self.output_location = output_location
        self.failure_location = failure_location
        self.deadline = datetime.fromisoformat(deadline).isoformat()
        self.endpoint_name = endpoint_name
        self.submitted_at = submitted_at
        self.endpoint_instances_at_submit = endpoint_instances_at_submit

    @classmethod
    def continuing(
        cls,
        watch: Watch,
        *,
        not_before: str | None = None,
        notification_queue_url: str | None = None,
        aws_conn_id: str | None,
        region_name: str | None,
        verify: bool | str | None,
        botocore_config: dict[str, Any] | None,
    ) -> SageMakerAsyncInferenceTrigger:
        """Return the trigger that carries on ``watch`` (built on the worker) in the triggerer."""
        return cls(
            inference_id=watch.inference_id,
            output_location=watch.output_location,
            failure_location=watch.failure_location,
            deadline=isoformat(watch.deadline),
            endpoint_name=watch.endpoint_name,
            submitted_at=watch.submitted_at,
            not_before=not_before,
            endpoint_instances_at_submit=watch.endpoint_instances_at_submit,
            poll_interval=watch.poll_interval,
            max_poll_interval=watch.max_poll_interval,
            notification_queue_url=notification_queue_url,
            aws_conn_id=aws_conn_id,
            region_name=region_name,
            verify=verify,
            botocore_config=botocore_config,
        )

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Return the classpath (derived from the class) and the JSON-primitive kwargs."""
        return self._serialized(
            {
                "inference_id": self.inference_id,
                "output_location": self.output_location,
                "failure_location": self.failure_location,
                "deadline": self.deadline,
                "endpoint_name": self.endpoint_name,
                "submitted_at": self.submitted_at,
            }
            | (
                {"endpoint_instances_at_submit": self.endpoint_instances_at_submit}
                if self.endpoint_instances_at_submit is not None
                else {}
            )
        )

    @asynccontextmanager
    async def _inbox(self) -> AsyncIterator[Inbox | None]:
        if not self.notification_queue_url:
            yield None
            return
        locations = {self.output_location} | ({self.failure_location} if self.failure_location else set())
        async with subscribe_notifications(
            self.notification_queue_url,
            aws_conn_id=self.aws_conn_id,
            region_name=self.region_name,
            verify=self.verify,
            botocore_config=self.botocore_config,
            locations=locations,
            inference_ids={self.inference_id},
            log=self.log,
        ) as inbox:
            yield inbox

    async def _check(
        self, watch: Watch, shared: SharedClient, named: set[str] | None = None, *, one: bool = False
    ) -> WatchEvent | None:
        if named:
            # The locations a notification named first: a Failed one is confirmed with one HEAD, not two.
            targets = tuple(sorted(watch.targets, key=lambda t: normalize_s3_uri(t.uri) not in named))
        elif one:
            targets = watch.safety_targets()
        else:
            targets = watch.targets
        for target in targets:
            event = watch.observe(target, await self._head(shared, target.bucket, target.key))
            if event is not None:
                return event
        return None

    def _log_unconfirmed(self, hints: list[Notification]) -> None:
        failed = next((hint for hint in hints if hint.status == "Failed"), None)
        if failed is not None and not self.failure_location:
            self.log.warning(
                "Inference %s: SageMaker's notification says it failed (%s), but the endpoint has no S3FailurePath, "
                "so S3 cannot confirm it; the wait goes on until its deadline %s. Give the endpoint's "
                "AsyncInferenceConfig an S3FailurePath to end failed inferences at once.",
                self.inference_id,
                failed.failure_reason or "no failureReason",
                self.deadline,
            )
            return
        self.log.info(
            "Inference %s: a notification named it but S3 has no object at its locations (duplicate or stale "
            "message); the wait goes on",
            self.inference_id,
        )

    def _fit_ceiling(self, watch: Watch, inbox: Inbox | None, budget: SafetyBudget | None = None) -> None:
        # Safety polling at the slow ceiling (stretched by the loop's budget) while notifications can arrive, the
        # polling ceiling otherwise.
        if inbox is None:
            watch.set_ceiling(self.max_poll_interval)
        elif inbox.healthy:
            watch.set_ceiling(budget.ceiling(self.max_poll_interval) if budget else self.max_poll_interval)
        else:
            watch.set_ceiling(min(self.max_poll_interval, DEFAULT_MAX_POLL_INTERVAL))

    async def _wait(
        self, watch: Watch, shared: SharedClient, inbox: Inbox | None, budget: SafetyBudget | None = None
    ) -> WatchEvent:
        """Check at the poll schedule, and whenever a notification names this inference; return the final event."""
        loop = asyncio.get_running_loop()
        submitted_at = datetime.fromisoformat(self.submitted_at) if self.submitted_at else None
        while True:
            # After the first check, and while notifications arrive, a safety check HEADs one location; the last
            # check, at the deadline, looks at both (a result at either location before the deadline is no timeout).
            final = (watch.deadline - utcnow()).total_seconds() <= FINAL_CHECK_MARGIN_SECONDS
            safety = watch.checks > 0 and inbox is not None and inbox.healthy and not final
            if (event := await self._check(watch, shared, one=safety)) is not None:
                return event
            self._fit_ceiling(watch, inbox, budget)
            delay = watch.next_delay()
            if delay is None:
                return watch.timeout_event()
            poll_at = loop.time() + delay
            while (remaining := poll_at - loop.time()) > 0:
                if inbox is None:
                    await asyncio.sleep(remaining)
                    break
                was_healthy = inbox.healthy
                hints = await inbox.wait(remaining)
                for hint in hints:
                    if hint.expired and expiry_applies(
                        hint,
                        inference_id=self.inference_id,
                        endpoint_name=self.endpoint_name,
                        submitted_at=submitted_at,
                    ):
                        self.log.info(
                            "Inference %s: SageMaker's notification says it expired in the endpoint's queue (%s); "
                            "ending the wait now instead of at the deadline %s",
                            self.inference_id,
                            hint.failure_reason or "RequestTTLSeconds passed",
                            self.deadline,
                        )
                        return watch.expired_event()
                if any(not hint.expired for hint in hints):
                    # A hint, not the truth: S3 decides. AWS's Failed message names no location: the failure
                    # location is HEADed first.
                    named = {location for hint in hints for location in hint.locations}
                    if self.failure_location and any(hint.status == "Failed" for hint in hints):
                        named.add(normalize_s3_uri(self.failure_location))
                    if (event := await self._check(watch, shared, named)) is not None:
                        self.log.info("Inference %s: woken by a notification, confirmed in S3", self.inference_id)
                        return event
                    self._log_unconfirmed(hints)
                if inbox.healthy != was_healthy:
                    self._fit_ceiling(watch, inbox, budget)
                    if not inbox.healthy:
                        poll_at = min(poll_at, loop.time() + (watch.next_delay() or 0.0))

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Check until an object appears or the deadline passes; yield one event and return."""
        watch = Watch(
            inference_id=self.inference_id,
            output_location=self.output_location,
            failure_location=self.failure_location,
            deadline=datetime.fromisoformat(self.deadline),
            poll_interval=self.poll_interval,
            max_poll_interval=self.max_poll_interval,
            log=self.log,
            endpoint_name=self.endpoint_name,
            submitted_at=self.submitted_at,
            not_before=datetime.fromisoformat(self.not_before) if self.not_before else None,
            endpoint_instances_at_submit=self.endpoint_instances_at_submit,
        )
        self.log.info(
            "Watching inference %s: output %s, failure %s, deadline %s, notifications %s",
            self.inference_id,
            self.output_location,
            self.failure_location,
            self.deadline,
            self.notification_queue_url or "(none: polling only)",
        )
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(metrics.holding_wait())
            shared = await stack.enter_async_context(self._s3_client())
            # Subscribed before the first HEAD: a result written in between is seen by one or the other.
            inbox = await stack.enter_async_context(self._inbox())
            budget = None
            if inbox is not None:  # a push wait: its safety checks count in the loop's budget
                budget = safety_budget()
                budget.join()
                stack.callback(budget.leave)
            event = await self._wait(watch, shared, inbox, budget)
        if (hold := watch.hold()) > 0:
            self.log.info(
                "Inference %s: %s; holding the event %.1f s, until %s (fast-event guard: the deferral is too young)",
                self.inference_id,
                event["status"],
                hold,
                self.not_before,
            )
            await asyncio.sleep(hold)
        self.log.info("Inference %s: %s after %d checks", self.inference_id, event["status"], event["checks"])
        yield TriggerEvent(event)
