"""One async endpoint at run time: its queue, its workers, its containers, and what each request becomes.

A request is accepted into the endpoint's queue (``Queued``), taken by a worker when one of the
``MaxConcurrentInvocationsPerInstance x instance count`` slots is free (``InProgress``), sent to its
instance's container, and finished: the output or failure object is written to S3 first, then the
notification is published to SNS. A request still queued after ``RequestTTLSeconds`` expires: no object,
an ``Expired`` notification on the ErrorTopic.

Longer than ~400 lines because :class:`EndpointRuntime` is one state machine (queue, workers, expiry, results,
notifications) whose transitions read best together.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import aiohttp
from botocore.exceptions import BotoCoreError, ClientError

from airflow_sagemaker_async.common.layout import result_locations, split_s3_uri
from airflow_sagemaker_async.local.containers import ContainerProcess
from airflow_sagemaker_async.local.notifications import inference_result
from airflow_sagemaker_async.local.records import InvocationRecord, InvocationStatus
from airflow_sagemaker_async.local.request_model import RequestValidationError

if TYPE_CHECKING:
    from collections.abc import Coroutine, Sequence

    from airflow_sagemaker_async.local.request_model import AsyncInvocationRequest

log = logging.getLogger("airflow_sagemaker_async.local")

#: Used when an endpoint config has no ``ClientConfig.MaxConcurrentInvocationsPerInstance`` (our choice;
#: AWS says it "chooses an optimal value").
DEFAULT_MAX_CONCURRENT_INVOCATIONS_PER_INSTANCE = 4
CUSTOM_ATTRIBUTES_HEADER = "X-Amzn-SageMaker-Custom-Attributes"


def parse_s3_url(url: str) -> tuple[str, str]:
    """Split ``s3://bucket/key`` (or an https S3 URL, virtual-host or path style) into bucket and key.

    :raises ValueError: when ``url`` names no bucket and key.
    """
    bucket, key = split_s3_uri(url, allow_https=True)
    if not key:
        raise ValueError(f"'{url}' is not an S3 object URL (s3://bucket/key or https://bucket.s3.amazonaws.com/key).")
    return bucket, key


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class EndpointSpec:
    """What the control plane (describe_endpoint / _endpoint_config / _model) says about an endpoint."""

    endpoint_name: str
    endpoint_arn: str
    endpoint_config_name: str
    model_name: str
    image: str
    environment: dict[str, str]
    instance_count: int
    is_async: bool
    max_concurrent_invocations_per_instance: int
    s3_output_path: str
    s3_failure_path: str | None
    success_topic: str | None
    error_topic: str | None
    include_inference_response_in: tuple[str, ...]
    #: the first production variant's VariantName (InvokeEndpoint's ``x-Amzn-Invoked-Production-Variant``).
    variant_name: str = "AllTraffic"

    @classmethod
    def from_descriptions(cls, endpoint: dict[str, Any], config: dict[str, Any], model: dict[str, Any]) -> EndpointSpec:
        """Build the spec from the three describe answers (the first production variant only)."""
        variant = config["ProductionVariants"][0]
        async_config = config.get("AsyncInferenceConfig") or {}
        output = async_config.get("OutputConfig") or {}
        notification = output.get("NotificationConfig") or {}
        container = model.get("PrimaryContainer") or (model.get("Containers") or [{}])[0]
        return cls(
            endpoint_name=endpoint["EndpointName"],
            endpoint_arn=endpoint["EndpointArn"],
            endpoint_config_name=config["EndpointConfigName"],
            model_name=variant["ModelName"],
            image=container.get("Image", ""),
            environment=dict(container.get("Environment") or {}),
            instance_count=int(variant.get("InitialInstanceCount") or 1),
            is_async=bool(async_config),
            max_concurrent_invocations_per_instance=int(
                (async_config.get("ClientConfig") or {}).get("MaxConcurrentInvocationsPerInstance")
                or DEFAULT_MAX_CONCURRENT_INVOCATIONS_PER_INSTANCE
            ),
            s3_output_path=output.get("S3OutputPath", ""),
            s3_failure_path=output.get("S3FailurePath") or None,
            success_topic=notification.get("SuccessTopic") or None,
            error_topic=notification.get("ErrorTopic") or None,
            include_inference_response_in=tuple(notification.get("IncludeInferenceResponseIn") or ()),
            variant_name=variant.get("VariantName") or "AllTraffic",
        )


@dataclass
class RuntimeContext:
    """What every endpoint shares: AWS clients to moto, the HTTP session to containers, settings."""

    region_name: str
    s3: Any
    sns: Any
    http: aiohttp.ClientSession
    container_startup_timeout: float


@dataclass
class Invocation:
    """One accepted request; lives on the runtime's event loop, read elsewhere through snapshots."""

    endpoint_name: str
    inference_id: str
    request: AsyncInvocationRequest
    output_location: str
    failure_location: str | None
    time_scale: float
    received_time: datetime = field(default_factory=_now)
    status: InvocationStatus = InvocationStatus.QUEUED
    started_time: datetime | None = None
    finished_time: datetime | None = None
    failure_reason: str | None = None
    notified: bool = False
    ttl_handle: asyncio.TimerHandle | None = None

    def snapshot(self) -> InvocationRecord:
        """Return an immutable copy, for callers in other threads."""
        return InvocationRecord(
            endpoint_name=self.endpoint_name,
            inference_id=self.inference_id,
            status=self.status,
            output_location=self.output_location,
            failure_location=self.failure_location,
            input_location=self.request.input_location,
            custom_attributes=self.request.custom_attributes,
            request_ttl_seconds=self.request.request_ttl_seconds,
            invocation_timeout_seconds=self.request.invocation_timeout_seconds,
            received_time=self.received_time,
            started_time=self.started_time,
            finished_time=self.finished_time,
            failure_reason=self.failure_reason,
            notified=self.notified,
        )


@dataclass(frozen=True)
class _Outcome:
    status: InvocationStatus
    failure_reason: str | None = None
    content_type: str | None = None
    body: bytes | None = None


def _failed(reason: str, content_type: str | None = None, body: bytes | None = None) -> _Outcome:
    return _Outcome(InvocationStatus.FAILED, reason, content_type, body)


class EndpointRuntime:
    """The running side of one endpoint: containers, queue, workers.

    :param spec: the endpoint as the control plane describes it.
    :param command: argv of the model container.
    :param environment: environment of the model container (the model's ``Environment`` over ours).
    :param context: the shared clients and settings.
    """

    def __init__(
        self, spec: EndpointSpec, command: Sequence[str], environment: dict[str, str], context: RuntimeContext
    ) -> None:
        self.spec = spec
        self.state = "Creating"
        self._context = context
        self.containers = [
            ContainerProcess(f"{spec.endpoint_name}/{index}", command, environment)
            for index in range(spec.instance_count)
        ]
        self.invocations: list[Invocation] = []
        self._queue: asyncio.Queue[Invocation] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        #: set by the scale-to-zero emulation (:mod:`~airflow_sagemaker_async.local.capacity`): the workers take
        #: no request while it is clear (0 instances); ``None``: always serving.
        self.capacity_gate: asyncio.Event | None = None

    @property
    def capacity(self) -> int:
        """How many requests run at once: MaxConcurrentInvocationsPerInstance x instance count."""
        return self.spec.max_concurrent_invocations_per_instance * self.spec.instance_count

    async def start(self) -> None:
        """Start every container, wait for ``/ping``, then start the workers.

        :raises ContainerStartError: when a container exits or does not answer ``/ping`` in time (the
            containers already started are stopped again).
        """
        try:
            await asyncio.gather(*(container.start() for container in self.containers))
            await asyncio.gather(
                *(
                    container.wait_ready(self._context.http, self._context.container_startup_timeout)
                    for container in self.containers
                )
            )
        except BaseException:
            await self._stop_containers()
            raise
        for container in self.containers:
            for slot in range(self.spec.max_concurrent_invocations_per_instance):
                self._workers.append(asyncio.create_task(self._work(container), name=f"worker-{container.name}-{slot}"))
        self.state = "InService"

    def accept(self, request: AsyncInvocationRequest, time_scale: float) -> Invocation:
        """Queue a validated request; answers at once with its locations.

        :param time_scale: multiplies ``RequestTTLSeconds`` and ``InvocationTimeoutSeconds``.
        :raises RequestValidationError: when the endpoint is not ``InService``.
        """
        if self.state != "InService":
            raise RequestValidationError(
                f"Endpoint {self.spec.endpoint_name} is in {self.state} status; "
                "wait until it is InService (describe_endpoint) before invoking it."
            )
        object_id = str(uuid.uuid4())
        output_location, failure_location = result_locations(
            self.spec.s3_output_path,
            self.spec.s3_failure_path,
            name=object_id,
            s3_output_path_extension=request.s3_output_path_extension,
            filename=request.filename,
        )
        invocation = Invocation(
            endpoint_name=self.spec.endpoint_name,
            inference_id=request.inference_id or str(uuid.uuid4()),
            request=request,
            output_location=output_location,
            failure_location=failure_location,
            time_scale=time_scale,
        )
        loop = asyncio.get_running_loop()
        invocation.ttl_handle = loop.call_later(request.request_ttl_seconds * time_scale, self._expire, invocation)
        self.invocations.append(invocation)
        self._queue.put_nowait(invocation)
        log.info(
            "%s %s queued (queue depth %d, ttl %gs)",
            self.spec.endpoint_name,
            invocation.inference_id,
            self._queue.qsize(),
            request.request_ttl_seconds * time_scale,
        )
        return invocation

    def busy(self) -> bool:
        """Tell whether a request is queued, running, being written, or its notification not yet sent."""
        return bool(self._tasks) or any(not i.status.is_final or not i.notified for i in self.invocations)

    async def stop(self) -> None:
        """Stop the workers, give pending S3 writes / notifications 2 s, stop the containers.

        Requests not finished by then are marked ``Failed`` (no object, no notification).
        """
        self.state = "Deleted"
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        for invocation in self.invocations:
            if invocation.ttl_handle is not None:
                invocation.ttl_handle.cancel()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=2.0)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self._stop_containers()
        for invocation in self.invocations:
            if not invocation.status.is_final:
                invocation.status = InvocationStatus.FAILED
                invocation.finished_time = _now()
                invocation.failure_reason = (
                    "InternalFailure: the endpoint was deleted (or the local backend stopped) before the request "
                    "finished; no object was written and no notification sent."
                )
            invocation.notified = True

    async def _stop_containers(self) -> None:
        await asyncio.gather(*(container.stop() for container in self.containers), return_exceptions=True)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _expire(self, invocation: Invocation) -> None:
        if invocation.status is not InvocationStatus.QUEUED:
            return
        ttl = invocation.request.request_ttl_seconds
        scaled = ttl * invocation.time_scale
        invocation.status = InvocationStatus.EXPIRED
        invocation.finished_time = _now()
        invocation.failure_reason = (
            f"Request expired: it waited in the queue longer than its RequestTTLSeconds ({ttl} s"
            + (f", {scaled:g} s with time_scale {invocation.time_scale:g}" if invocation.time_scale != 1 else "")
            + ")."
        )
        log.info("%s %s expired after %gs in the queue", self.spec.endpoint_name, invocation.inference_id, scaled)
        self._spawn(self._notify(invocation, _Outcome(InvocationStatus.EXPIRED, invocation.failure_reason)))

    async def _work(self, container: ContainerProcess) -> None:
        while True:
            invocation = await self._queue.get()
            if self.capacity_gate is not None:
                await self.capacity_gate.wait()  # 0 instances: the request stays queued (and may expire)
            if invocation.status is not InvocationStatus.QUEUED:
                continue  # expired while waiting
            if invocation.ttl_handle is not None:
                invocation.ttl_handle.cancel()
            invocation.status = InvocationStatus.IN_PROGRESS
            invocation.started_time = _now()
            log.info("%s %s started on %s", self.spec.endpoint_name, invocation.inference_id, container.name)
            outcome = await self._invoke(container, invocation)
            self._spawn(self._finish(invocation, outcome))

    async def _read_input(self, location: str) -> bytes:
        bucket, key = parse_s3_url(location)
        response = await self._context.s3.get_object(Bucket=bucket, Key=key)
        async with response["Body"] as stream:
            data: bytes = await stream.read()
        return data

    async def _invoke(self, container: ContainerProcess, invocation: Invocation) -> _Outcome:
        request = invocation.request
        if request.body is not None:
            payload = request.body
        else:
            assert request.input_location is not None
            try:
                payload = await self._read_input(request.input_location)
            except (ValueError, ClientError, BotoCoreError) as error:
                return _failed(f"ClientError: Could not read the input at {request.input_location}: {error}")
        if not container.alive:
            return _failed(
                f"ModelError: The model container of instance {container.name} exited with code "
                f"{container.returncode}; the local backend does not replace dead instances."
            )
        headers = {"Content-Type": request.content_type or "application/octet-stream"}
        if request.accept is not None:
            headers["Accept"] = request.accept
        if request.custom_attributes is not None:
            headers[CUSTOM_ATTRIBUTES_HEADER] = request.custom_attributes
        timeout = request.invocation_timeout_seconds * invocation.time_scale
        try:
            async with self._context.http.post(
                f"{container.url}/invocations",
                data=payload,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as response:
                body = await response.read()
                content_type = response.headers.get("Content-Type", "application/octet-stream")
                status = response.status
        except TimeoutError:
            return _failed(
                "ModelError: The model did not answer within InvocationTimeoutSeconds "
                f"({request.invocation_timeout_seconds} s"
                + (f", {timeout:g} s with time_scale {invocation.time_scale:g}" if invocation.time_scale != 1 else "")
                + ")."
            )
        except aiohttp.ClientError as error:
            return _failed(
                f"ModelError: Could not get an answer from the model container of instance {container.name} "
                f"({type(error).__name__}: {error})."
            )
        if 200 <= status < 300:
            return _Outcome(InvocationStatus.COMPLETED, content_type=content_type, body=body)
        kind = "client" if 400 <= status < 500 else "server"
        return _failed(
            f"ClientError: Received {kind} error ({status}) from model. "
            "See the SageMaker Endpoint logs in your account for more information.",
            content_type,
            body,
        )

    async def _put(self, location: str, body: bytes, content_type: str) -> None:
        bucket, key = parse_s3_url(location)
        await self._context.s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)

    async def _finish(self, invocation: Invocation, outcome: _Outcome) -> None:
        if outcome.status is InvocationStatus.COMPLETED:
            try:
                await self._put(
                    invocation.output_location, outcome.body or b"", outcome.content_type or "application/json"
                )
            except (ValueError, ClientError, BotoCoreError) as error:
                outcome = _failed(
                    f"InternalFailure: Could not write the output to {invocation.output_location}: {error}"
                )
        failure_written = False
        if outcome.status is InvocationStatus.FAILED and invocation.failure_location is not None:
            body, content_type = outcome.body, outcome.content_type
            if body is None:  # no answer from the model: write the reason (our choice)
                body = json.dumps({"message": outcome.failure_reason, "status": "error"}).encode()
                content_type = "application/json"
            try:
                await self._put(invocation.failure_location, body, content_type or "application/octet-stream")
                failure_written = True
            except (ValueError, ClientError, BotoCoreError) as error:
                log.error(
                    "%s %s: could not write the failure object to %s: %s",
                    self.spec.endpoint_name,
                    invocation.inference_id,
                    invocation.failure_location,
                    error,
                )
        invocation.status = outcome.status
        invocation.failure_reason = outcome.failure_reason
        invocation.finished_time = _now()
        elapsed = (invocation.finished_time - (invocation.started_time or invocation.received_time)).total_seconds()
        if outcome.status is InvocationStatus.COMPLETED:
            log.info(
                "%s %s completed in %.3fs -> %s",
                self.spec.endpoint_name,
                invocation.inference_id,
                elapsed,
                invocation.output_location,
            )
        else:
            log.info(
                "%s %s failed after %.3fs: %s%s",
                self.spec.endpoint_name,
                invocation.inference_id,
                elapsed,
                outcome.failure_reason,
                f" -> {invocation.failure_location}" if failure_written else "",
            )
        await self._notify(invocation, outcome)

    async def _notify(self, invocation: Invocation, outcome: _Outcome) -> None:
        completed = outcome.status is InvocationStatus.COMPLETED
        topic = self.spec.success_topic if completed else self.spec.error_topic
        if topic is None:
            invocation.notified = True
            return
        include = (
            "SUCCESS_NOTIFICATION_TOPIC" if completed else "ERROR_NOTIFICATION_TOPIC"
        ) in self.spec.include_inference_response_in
        request = invocation.request
        message = inference_result(
            region_name=self._context.region_name,
            endpoint_name=self.spec.endpoint_name,
            inference_id=invocation.inference_id,
            status=outcome.status.value,
            received_time=invocation.received_time,
            event_time=invocation.finished_time or _now(),
            content_type=request.content_type,
            accept=request.accept,
            custom_attributes=request.custom_attributes,
            input_location=request.input_location,
            response_content_type=outcome.content_type if completed else None,
            output_location=invocation.output_location if completed else None,
            failure_reason=outcome.failure_reason,
            body=outcome.body if include and outcome.body is not None else None,
        )
        try:
            await self._context.sns.publish(TopicArn=topic, Message=json.dumps(message))
        except (ClientError, BotoCoreError) as error:
            log.error(
                "%s %s: could not publish the %s notification to %s: %s",
                self.spec.endpoint_name,
                invocation.inference_id,
                outcome.status.value,
                topic,
                error,
            )
        invocation.notified = True
