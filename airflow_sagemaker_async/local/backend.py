"""The local SageMaker async backend: moto (S3, SNS, SQS, SageMaker control plane) plus our runtime.

.. code-block:: python

    from airflow_sagemaker_async.local import LocalSageMakerAsyncBackend

    with LocalSageMakerAsyncBackend(time_scale=0.01) as backend:
        endpoint = backend.create_endpoint("iris-endpoint")
        runtime = backend.client("sagemaker-runtime")
        answer = runtime.invoke_endpoint_async(
            EndpointName="iris-endpoint", Body=b"5.1,3.5,1.4,0.2", ContentType="text/csv"
        )

Longer than ~400 lines because :class:`LocalSageMakerAsyncBackend` is the backend's whole public API for
users' tests (start, endpoints, clients, controls, stop) and reads best as one class; the parts it drives live
in their own modules (control_plane, server, endpoints, realtime, containers).
"""

from __future__ import annotations

import enum
import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import boto3
from botocore.config import Config

from airflow_sagemaker_async.local import control_plane
from airflow_sagemaker_async.local.containers import IRIS_COMMAND, IRIS_IMAGE, TEXT_COMMAND, TEXT_IMAGE
from airflow_sagemaker_async.local.server import RuntimeServer

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from types import TracebackType

    from airflow_sagemaker_async.local.capacity import ScaleToZero
    from airflow_sagemaker_async.local.records import InvocationRecord

log = logging.getLogger("airflow_sagemaker_async.local")

#: moto's default account id, the account of every resource the backend creates.
ACCOUNT_ID = "123456789012"
#: moto's conventional fake credentials, so that clients configured for moto work unchanged.
DEFAULT_ACCESS_KEY_ID = "testing"
DEFAULT_SECRET_ACCESS_KEY = "testing"  # noqa: S105 - a fixed, public, local-only secret
#: Bundled models, by the short name ``create_endpoint(model=...)`` accepts.
BUNDLED_MODELS = {"iris": IRIS_IMAGE, "text": TEXT_IMAGE}


class DefaultPath(enum.Enum):
    """Marker for "use the default S3 path" (distinct from ``None``, which means "no path")."""

    DEFAULT = "default"


#: Pass as ``s3_failure_path`` (the default) to get ``s3://<default_bucket>/<endpoint>/failure``.
DEFAULT_PATH = DefaultPath.DEFAULT


class LocalBackendError(RuntimeError):
    """The local backend could not do what was asked; the message says what to change."""


@dataclass(frozen=True)
class LocalEndpoint:
    """An async endpoint created through the local backend, as the control plane describes it.

    :param endpoint_name: the endpoint's name.
    :param endpoint_arn: its ARN in moto's account ``123456789012``.
    :param endpoint_config_name: the endpoint config created for it (``<name>-config``).
    :param model_name: the model created for it (``<name>-model``).
    :param image: the model's image (``sagemaker-async-local/iris:latest`` for the bundled iris model).
    :param s3_output_path: the config's ``S3OutputPath``.
    :param s3_failure_path: the config's ``S3FailurePath``, ``None`` when the endpoint has none.
    :param success_topic_arn: ``NotificationConfig.SuccessTopic``, if any.
    :param error_topic_arn: ``NotificationConfig.ErrorTopic``, if any.
    :param max_concurrent_invocations_per_instance: ``ClientConfig.MaxConcurrentInvocationsPerInstance``.
    :param initial_instance_count: the variant's ``InitialInstanceCount`` (one container process each).
    """

    endpoint_name: str
    endpoint_arn: str
    endpoint_config_name: str
    model_name: str
    image: str
    s3_output_path: str
    s3_failure_path: str | None
    success_topic_arn: str | None
    error_topic_arn: str | None
    max_concurrent_invocations_per_instance: int
    initial_instance_count: int


class LocalSageMakerAsyncBackend:
    """Start moto and our sagemaker-runtime on 127.0.0.1, and create async endpoints served by local containers.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`. moto keeps its state in this
    process: one backend per region may run at a time in a process, and ``moto.mock_aws`` must not be used
    alongside it. On :meth:`stop`, moto's SageMaker, SNS and SQS state of the region (and S3's when no other
    backend runs) is forgotten.

    :param time_scale: multiplies ``RequestTTLSeconds`` and ``InvocationTimeoutSeconds`` of each request
        (read when the request is accepted), default 1.0. ``0.01`` makes the minimum TTL of 60 s last 0.6 s,
        so expiry is testable in seconds. Can be changed later through :attr:`time_scale`.
    :param region_name: the region of every client and resource, default ``us-east-1``.
    :param aws_access_key_id: the only access key the runtime accepts in signatures, default ``testing``
        (moto's convention).
    :param aws_secret_access_key: its secret, default ``testing``.
    :param default_bucket: a bucket created at start, holding the default output and failure paths,
        default ``sagemaker-async-local``.
    :param container_startup_timeout: seconds a model container gets to answer ``GET /ping``, default 120
        (AWS allows 4 minutes); not scaled.
    :param scale_to_zero: emulate scale-to-zero (instance count, idle scale-in with ``MinCapacity`` 0, backlog,
        cold start, scale-up only with a step-scaling policy) for async endpoints created while it is set, default
        ``None`` (off: endpoints keep their instances). Also an attribute, read at each endpoint's creation. See
        :mod:`~airflow_sagemaker_async.local.capacity`.
    :raises ValueError: for a ``time_scale`` that is not positive.
    """

    def __init__(
        self,
        *,
        time_scale: float = 1.0,
        region_name: str = "us-east-1",
        aws_access_key_id: str = DEFAULT_ACCESS_KEY_ID,
        aws_secret_access_key: str = DEFAULT_SECRET_ACCESS_KEY,
        default_bucket: str = "sagemaker-async-local",
        container_startup_timeout: float = 120.0,
        scale_to_zero: ScaleToZero | None = None,
    ) -> None:
        self.time_scale = time_scale
        self.scale_to_zero = scale_to_zero
        self.region_name = region_name
        self.aws_access_key_id = aws_access_key_id
        self.aws_secret_access_key = aws_secret_access_key
        self.default_bucket = default_bucket
        self.account_id = ACCOUNT_ID
        self.container_startup_timeout = container_startup_timeout
        self._images: dict[str, tuple[list[str], dict[str, str]]] = {
            IRIS_IMAGE: (list(IRIS_COMMAND), {}),
            TEXT_IMAGE: (list(TEXT_COMMAND), {}),
        }
        self._moto: control_plane.MotoServer | None = None
        self._runtime: RuntimeServer | None = None
        self._registered = False
        self._clients: dict[str, Any] = {}

    @property
    def time_scale(self) -> float:
        """Factor applied to ``RequestTTLSeconds`` and ``InvocationTimeoutSeconds`` of requests accepted from now."""
        return self._time_scale

    @time_scale.setter
    def time_scale(self, value: float) -> None:
        if not value > 0:
            raise ValueError(f"time_scale must be a positive number of seconds per second, got {value!r}.")
        self._time_scale = float(value)

    # -- life cycle ---------------------------------------------------------------------------------------

    def start(self) -> LocalSageMakerAsyncBackend:
        """Start the moto server and the runtime, and create :attr:`default_bucket` (about 1 s).

        :return: the backend itself.
        :raises control_plane.BackendAlreadyRunningError: when another backend serves this region in this
            process.
        :raises LocalBackendError: when already started.
        """
        if self._moto is not None:
            raise LocalBackendError("The backend is already started; call stop() before starting it again.")
        started = time.perf_counter()
        control_plane.register_listener(self.account_id, self.region_name, _Deferred(self))
        self._registered = True
        try:
            self._moto = control_plane.MotoServer()
            self._moto.start()
            self._runtime = RuntimeServer(
                moto_url=self._moto.url,
                region_name=self.region_name,
                account_id=self.account_id,
                access_key=self.aws_access_key_id,
                secret_key=self.aws_secret_access_key,
                images=self._images,
                time_scale=lambda: self._time_scale,
                container_startup_timeout=self.container_startup_timeout,
                set_time_scale=lambda value: setattr(self, "time_scale", value),
                scale_to_zero=lambda: self.scale_to_zero,
                direct_s3=True,
            )
            self._runtime.start()
            self._ensure_bucket(self.default_bucket)
        except BaseException:
            self.stop()
            raise
        log.info(
            "local SageMaker async backend ready in %.2fs: moto %s, runtime %s",
            time.perf_counter() - started,
            self.endpoint_url,
            self.runtime_url,
        )
        return self

    def stop(self) -> None:
        """Stop the runtime (and every container), the moto server, and forget moto's state (idempotent)."""
        if self._registered:
            control_plane.unregister_listener(self.account_id, self.region_name)
            self._registered = False
        if self._runtime is not None:
            self._runtime.stop()
            self._runtime = None
        if self._moto is not None:
            self._moto.stop()
            self._moto = None
            others = control_plane.running_regions()
            control_plane.reset_region(self.account_id, self.region_name, include_s3=not others)
        self._clients.clear()

    def __enter__(self) -> LocalSageMakerAsyncBackend:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- where and how to connect -------------------------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        """The moto server, ``http://127.0.0.1:PORT``: S3, SNS, SQS and the SageMaker control plane.

        :raises LocalBackendError: when the backend is not started.
        """
        if self._moto is None:
            raise LocalBackendError("The backend is not started; use it as a context manager or call start().")
        return self._moto.url

    @property
    def runtime_url(self) -> str:
        """Our sagemaker-runtime, ``http://127.0.0.1:PORT``.

        :raises LocalBackendError: when the backend is not started.
        """
        return self._running_runtime().url

    def _running_runtime(self) -> RuntimeServer:
        if self._runtime is None:
            raise LocalBackendError("The backend is not started; use it as a context manager or call start().")
        return self._runtime

    def client_kwargs(self, service_name: str) -> dict[str, Any]:
        """Return the keyword arguments for ``boto3.client`` / aiobotocore ``create_client`` of a service.

        :param service_name: e.g. ``s3``, ``sns``, ``sqs``, ``sagemaker``, ``sagemaker-runtime``.
        :return: ``endpoint_url`` (the runtime for ``sagemaker-runtime``, moto otherwise), ``region_name``
            and the credentials.
        """
        return {
            "endpoint_url": self.runtime_url if service_name == "sagemaker-runtime" else self.endpoint_url,
            "region_name": self.region_name,
            "aws_access_key_id": self.aws_access_key_id,
            "aws_secret_access_key": self.aws_secret_access_key,
        }

    def client(self, service_name: str, *, config: Config | None = None) -> Any:
        """Return a boto3 client of the backend (cached per service when ``config`` is ``None``).

        :param service_name: e.g. ``s3``, ``sns``, ``sqs``, ``sagemaker``, ``sagemaker-runtime``.
        :param config: a botocore ``Config``; default path-style S3 addressing and no retries, so that
            tests see each answer as it is.
        """
        if config is None and service_name in self._clients:
            return self._clients[service_name]
        chosen = config or Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1, "mode": "standard"})
        client = boto3.session.Session().client(  # type: ignore[call-overload]
            service_name, config=chosen, **self.client_kwargs(service_name)
        )
        if config is None:
            self._clients[service_name] = client
        return client

    def airflow_connection(self) -> dict[str, Any]:
        """Return an Airflow AWS connection pointing at the backend.

        :return: ``{"conn_type": "aws", "login": key, "password": secret, "extra": {"region_name": ...,
            "endpoint_url": <moto>, "service_config": {"sagemaker-runtime": {"endpoint_url": <runtime>}}}}``.
        """
        return {
            "conn_type": "aws",
            "login": self.aws_access_key_id,
            "password": self.aws_secret_access_key,
            "extra": {
                "region_name": self.region_name,
                "endpoint_url": self.endpoint_url,
                "service_config": {"sagemaker-runtime": {"endpoint_url": self.runtime_url}},
            },
        }

    def airflow_connection_env(self) -> str:
        """:meth:`airflow_connection` as JSON: a ready value for ``AIRFLOW_CONN_AWS_DEFAULT``."""
        return json.dumps(self.airflow_connection())

    # -- endpoints ----------------------------------------------------------------------------------------

    def register_container(
        self, image: str, command: Sequence[str], environment: Mapping[str, str] | None = None
    ) -> None:
        """Serve models whose ``PrimaryContainer.Image`` is ``image`` with a local command.

        The command must follow the SageMaker container contract: serve ``GET /ping`` and
        ``POST /invocations`` on ``127.0.0.1:$SAGEMAKER_BIND_TO_PORT``. Takes effect for endpoints created
        afterwards, through :meth:`create_endpoint` or boto3.

        :param image: the image name, as given to ``create_model``.
        :param command: argv of the process (one process per instance).
        :param environment: extra environment variables; the model's ``Environment`` overrides them.
        :raises ValueError: for an empty command.
        """
        if not command:
            raise ValueError(f"The command for image '{image}' is empty; give the argv of a container process.")
        self._images[image] = (list(command), dict(environment or {}))

    def create_endpoint(
        self,
        endpoint_name: str,
        *,
        model: str = "iris",
        container_command: Sequence[str] | None = None,
        environment: Mapping[str, str] | None = None,
        s3_output_path: str | None = None,
        s3_failure_path: str | Literal[DefaultPath.DEFAULT] | None = DEFAULT_PATH,
        success_topic_arn: str | None = None,
        error_topic_arn: str | None = None,
        include_inference_response_in: Sequence[str] | None = None,
        max_concurrent_invocations_per_instance: int = 4,
        initial_instance_count: int = 1,
        timeout: float | None = None,
        async_inference: bool = True,
    ) -> LocalEndpoint:
        """Create model, endpoint config (with AsyncInferenceConfig) and endpoint through boto3, as against AWS.

        Returns once the endpoint is ``InService``, i.e. once every container answered ``/ping``. The
        buckets of the output and failure paths are created if missing (a convenience AWS does not offer).

        :param endpoint_name: the endpoint's name; the model is ``<name>-model``, the config ``<name>-config``.
        :param model: a bundled model (``iris``, or ``text``: the streaming text model) or an image registered
            with :meth:`register_container`.
        :param container_command: serve this command instead (registered as image
            ``sagemaker-async-local/<endpoint_name>:latest``).
        :param environment: the model's ``Environment`` (passed to the container process).
        :param s3_output_path: default ``s3://<default_bucket>/<endpoint_name>/output``.
        :param s3_failure_path: default ``s3://<default_bucket>/<endpoint_name>/failure``; ``None`` creates an
            endpoint without failure path.
        :param success_topic_arn: ``NotificationConfig.SuccessTopic``, default none.
        :param error_topic_arn: ``NotificationConfig.ErrorTopic``, default none.
        :param include_inference_response_in: ``SUCCESS_NOTIFICATION_TOPIC`` and/or ``ERROR_NOTIFICATION_TOPIC``.
        :param max_concurrent_invocations_per_instance: 1 to 1000, default 4.
        :param initial_instance_count: container processes to run, default 1.
        :param timeout: seconds to wait for ``InService``, default ``container_startup_timeout`` + 30.
        :param async_inference: ``False`` creates a real-time endpoint (no AsyncInferenceConfig: invoked with
            InvokeEndpoint / InvokeEndpointWithResponseStream); the S3 paths, topics and concurrency are then
            ignored and ``s3_output_path`` / ``s3_failure_path`` of the result are empty / ``None``.
        :raises LocalBackendError: when the model is unknown or the endpoint ends ``Failed`` (the message
            holds the endpoint's ``FailureReason``).
        :raises botocore.exceptions.ClientError: when the control plane refuses a call (e.g. the name exists).
        """
        if container_command is not None:
            image = f"sagemaker-async-local/{endpoint_name}:latest"
            self.register_container(image, container_command)
        else:
            image = BUNDLED_MODELS.get(model, model)
            if image not in self._images:
                raise LocalBackendError(
                    f"Unknown model '{model}': use one of {sorted(BUNDLED_MODELS)}, an image registered with "
                    "register_container(), or container_command=[...]."
                )
        output_path = s3_output_path or f"s3://{self.default_bucket}/{endpoint_name}/output"
        failure_path = (
            f"s3://{self.default_bucket}/{endpoint_name}/failure"
            if s3_failure_path is DEFAULT_PATH
            else s3_failure_path
        )
        if not async_inference:
            output_path, failure_path = "", None
        for path in (output_path, failure_path):
            if path:
                self._ensure_bucket(path.removeprefix("s3://").split("/", 1)[0])
        output_config: dict[str, Any] = {"S3OutputPath": output_path}
        if failure_path:
            output_config["S3FailurePath"] = failure_path
        notification: dict[str, Any] = {}
        if success_topic_arn:
            notification["SuccessTopic"] = success_topic_arn
        if error_topic_arn:
            notification["ErrorTopic"] = error_topic_arn
        if include_inference_response_in:
            notification["IncludeInferenceResponseIn"] = list(include_inference_response_in)
        if notification:
            output_config["NotificationConfig"] = notification
        sagemaker = self.client("sagemaker")
        model_name, config_name = f"{endpoint_name}-model", f"{endpoint_name}-config"
        container: dict[str, Any] = {"Image": image}
        if environment:
            container["Environment"] = dict(environment)
        sagemaker.create_model(
            ModelName=model_name,
            ExecutionRoleArn=f"arn:aws:iam::{self.account_id}:role/sagemaker-async-local",
            PrimaryContainer=container,
        )
        endpoint_config: dict[str, Any] = {
            "EndpointConfigName": config_name,
            "ProductionVariants": [
                {
                    "VariantName": "AllTraffic",
                    "ModelName": model_name,
                    "InstanceType": "ml.m5.large",
                    "InitialInstanceCount": initial_instance_count,
                }
            ],
        }
        if async_inference:
            endpoint_config["AsyncInferenceConfig"] = {
                "ClientConfig": {"MaxConcurrentInvocationsPerInstance": max_concurrent_invocations_per_instance},
                "OutputConfig": output_config,
            }
        sagemaker.create_endpoint_config(**endpoint_config)
        arn = sagemaker.create_endpoint(EndpointName=endpoint_name, EndpointConfigName=config_name)["EndpointArn"]
        self.wait_endpoint_in_service(endpoint_name, timeout=timeout)
        return LocalEndpoint(
            endpoint_name=endpoint_name,
            endpoint_arn=arn,
            endpoint_config_name=config_name,
            model_name=model_name,
            image=image,
            s3_output_path=output_path,
            s3_failure_path=failure_path,
            success_topic_arn=success_topic_arn,
            error_topic_arn=error_topic_arn,
            max_concurrent_invocations_per_instance=max_concurrent_invocations_per_instance,
            initial_instance_count=initial_instance_count,
        )

    def wait_endpoint_in_service(self, endpoint_name: str, timeout: float | None = None) -> None:
        """Wait until an endpoint created while the backend runs (by any client) is ``InService``.

        :param timeout: seconds, default ``container_startup_timeout`` + 30.
        :raises LocalBackendError: when the endpoint ends ``Failed``, or was not created through this backend.
        :raises TimeoutError: when it is still ``Creating`` after ``timeout`` seconds.
        """
        runtime = self._running_runtime()
        try:
            runtime.wait_endpoint(endpoint_name, self.container_startup_timeout + 30 if timeout is None else timeout)
        except KeyError:
            raise LocalBackendError(
                f"No endpoint {endpoint_name} was created in moto while this backend ran."
            ) from None
        except TimeoutError:
            raise
        except Exception as error:
            raise LocalBackendError(f"Endpoint {endpoint_name} failed to start: {error}") from error

    def delete_endpoint(self, endpoint_name: str) -> None:
        """Delete the endpoint through boto3; its containers are stopped and queued requests dropped."""
        self.client("sagemaker").delete_endpoint(EndpointName=endpoint_name)

    def container_pids(self, endpoint_name: str) -> list[int]:
        """Process ids of the endpoint's container processes, one per instance (e.g. to kill one in a test).

        :raises KeyError: for an endpoint the backend does not run.
        """
        return self._running_runtime().container_pids(endpoint_name)

    # -- what happened ------------------------------------------------------------------------------------

    def invocations(self, endpoint_name: str | None = None) -> list[InvocationRecord]:
        """Every request accepted so far, in order of acceptance (of one endpoint, or of all).

        :return: immutable snapshots; call again to see later states.
        """
        return self._running_runtime().records(endpoint_name)

    def wait_idle(self, timeout: float = 30.0, poll_interval: float = 0.05) -> None:
        """Wait until no request is queued or running and every outcome is written and notified.

        :param timeout: seconds, default 30.
        :param poll_interval: seconds between checks, default 0.05.
        :raises TimeoutError: when requests are still pending after ``timeout`` seconds.
        """
        runtime = self._running_runtime()
        deadline = time.monotonic() + timeout
        while runtime.busy():
            if time.monotonic() > deadline:
                pending = [r for r in runtime.records(None) if not r.status.is_final or not r.notified]
                raise TimeoutError(
                    f"{len(pending)} request(s) still pending after {timeout} s, e.g. "
                    + ", ".join(f"{r.endpoint_name}/{r.inference_id} ({r.status.value})" for r in pending[:3])
                )
            time.sleep(poll_interval)

    # -- notifications ------------------------------------------------------------------------------------

    def subscribe_queue(self, queue_name: str, topic_arns: Sequence[str]) -> str:
        """Create an SQS queue (if needed) and subscribe it to SNS topics, as one would on AWS.

        :param queue_name: the queue's name.
        :param topic_arns: the topics whose messages the queue should receive.
        :return: the queue URL.
        """
        sqs, sns = self.client("sqs"), self.client("sns")
        queue_url: str = sqs.create_queue(QueueName=queue_name)["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        for topic_arn in topic_arns:
            sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
        return queue_url

    def receive_notifications(
        self, queue_url: str, *, count: int = 1, timeout: float = 10.0, event_name: str | None = "InferenceResult"
    ) -> list[dict[str, Any]]:
        """Read SageMaker notifications from a queue subscribed to the topics (and delete them).

        :param queue_url: a queue made with :meth:`subscribe_queue`.
        :param count: return once this many matching messages arrived, default 1.
        :param timeout: seconds to wait for them, default 10; returns what arrived by then.
        :param event_name: keep only messages with this ``eventName`` (default ``InferenceResult``, which
            skips the ``TestNotification`` sent at endpoint creation); ``None`` keeps all.
        :return: the SageMaker messages (the SNS envelope's ``Message``, parsed).
        """
        sqs = self.client("sqs")
        found: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while len(found) < count and time.monotonic() < deadline:
            answer = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
            messages = answer.get("Messages", [])
            for message in messages:
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
                document = json.loads(json.loads(message["Body"])["Message"])
                if event_name is None or document.get("eventName") == event_name:
                    found.append(document)
            if not messages:
                time.sleep(0.05)
        return found

    def _ensure_bucket(self, bucket: str) -> None:
        s3 = self.client("s3")
        try:
            s3.head_bucket(Bucket=bucket)
        except s3.exceptions.ClientError:
            kwargs: dict[str, Any] = {"Bucket": bucket}
            if self.region_name != "us-east-1":
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region_name}
            s3.create_bucket(**kwargs)


class _Deferred:
    """The listener registered at start, forwarding to the runtime once it exists."""

    def __init__(self, backend: LocalSageMakerAsyncBackend) -> None:
        self._backend = backend

    def endpoint_created(self, endpoint: Any) -> None:
        runtime = self._backend._runtime
        if runtime is not None:
            runtime.endpoint_created(endpoint)

    def endpoint_deleted(self, endpoint_name: str) -> None:
        runtime = self._backend._runtime
        if runtime is not None:
            runtime.endpoint_deleted(endpoint_name)
