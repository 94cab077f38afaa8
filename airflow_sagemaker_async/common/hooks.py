"""
SageMakerRuntimeHook: the ``sagemaker-runtime`` client, nothing else.

The client is botocore's, configured so that a synchronous call never runs the model twice:

- ``read_timeout`` defaults to :data:`MODEL_READ_TIMEOUT_SECONDS` (70 s, the InvokeEndpoint API reference's
  advice for a model near its 60 s limit) when neither ``botocore_config`` nor the connection sets one;
- :func:`no_retry_once_sent` vetoes botocore's retry of InvokeEndpoint and InvokeEndpointWithResponseStream
  when the attempt may have reached the model (a read timeout, a connection dropped after sending, a 5xx other
  than 503). botocore's retry configuration (``mode``, ``max_attempts``) cannot say "not this error for this
  operation", so the veto is a handler on the client's own event ``needs-retry.sagemaker-runtime.<operation>``,
  which botocore asks before its retry handler (more specific events first; the first answer that is not
  ``None`` decides).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Final, cast

from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.exceptions import ConnectionError as BotocoreConnectionError

if TYPE_CHECKING:
    from mypy_boto3_sagemaker_runtime import SageMakerRuntimeClient
    from mypy_boto3_sagemaker_runtime.type_defs import (
        InvokeEndpointOutputTypeDef,
        InvokeEndpointWithResponseStreamOutputTypeDef,
    )

__all__ = [
    "MODEL_READ_TIMEOUT_SECONDS",
    "NOT_RETRIED_ONCE_SENT",
    "AsyncInferenceSubmission",
    "SageMakerRuntimeHook",
    "no_retry_once_sent",
]

#: Default ``read_timeout`` (seconds) of the client: the model has 60 s to answer, and the InvokeEndpoint API
#: reference advises an SDK socket timeout of 70 s for a model taking 50-60 s (botocore's default is 60 s).
MODEL_READ_TIMEOUT_SECONDS: Final = 70
#: Operations that run the model synchronously, with no idempotency token: a retry is a second inference.
NOT_RETRIED_ONCE_SENT: Final = ("InvokeEndpoint", "InvokeEndpointWithResponseStream")
#: The one 5xx retried: SageMaker refused the request (ServiceUnavailable) before routing it to the model.
_RETRIED_SERVER_STATUS: Final = 503


def no_retry_once_sent(
    response: Any = None, caught_exception: Exception | None = None, operation: Any = None, **_: Any
) -> None:
    """
    Answer botocore's ``needs-retry`` event for InvokeEndpoint*: never retry an attempt that may have run the model.

    When the attempt may have reached the model it is not retried: the attempt's own error is raised at once
    (``ReadTimeoutError`` ..., or ``ClientError`` for the 5xx answer); ``None`` (let botocore's retry mode
    decide) when it cannot have. Raising works in every botocore: an answer of ``False`` means "do not retry" only
    from botocore 1.43 on, while older releases retry after ``False`` (0) seconds.

    Not retried (raised): a read timeout or a connection closed or broken after the request was sent
    (``ReadTimeoutError``, ``ConnectionClosedError``, any ``HTTPClientError``), and a 5xx answer other than 503
    (``InternalFailure`` 500, 502, 504, ``InternalDependencyException`` 530), which may come after the model
    ran. Left to botocore (``None``): a connection never made (``EndpointConnectionError``,
    ``ConnectTimeoutError``, ``ProxyConnectionError``, ``SSLError``), throttling and ``ModelNotReadyException``
    (429), ``ServiceUnavailable`` (503), and every other answer (botocore retries no other 4xx).

    .. seealso::
        - https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_runtime_InvokeEndpoint.html (errors)
        - ``botocore/endpoint.py`` ``Endpoint._needs_retry`` (the event and how its answers are read)
    """
    if caught_exception is not None:
        if isinstance(caught_exception, BotocoreConnectionError):
            return None
        # Raised, not answered with False: botocore before 1.43 reads any answer but None as "retry after that
        # many seconds" (False = 0 s), so a False would re-invoke the model without end there.
        raise caught_exception
    if response is None:
        return None
    status = int(getattr(response[0], "status_code", 0) or 0)
    if status >= 500 and status != _RETRIED_SERVER_STATUS:
        raise ClientError(response[1], operation.name if operation is not None else "InvokeEndpoint")
    return None


def with_model_read_timeout(config: Config) -> Config:
    """Return ``config`` with ``read_timeout`` :data:`MODEL_READ_TIMEOUT_SECONDS` unless it sets one itself."""
    return Config(read_timeout=MODEL_READ_TIMEOUT_SECONDS).merge(config)


@dataclass(frozen=True)
class AsyncInferenceSubmission:
    """
    What InvokeEndpointAsync answered (HTTP 202): where the result will appear.

    :param inference_id: the request's InferenceId (ours when we sent one, else SageMaker's).
    :param output_location: S3 URI of the output object (header ``X-Amzn-SageMaker-OutputLocation``).
    :param failure_location: S3 URI of the failure object (header ``X-Amzn-SageMaker-FailureLocation``);
        ``None`` when the endpoint's AsyncInferenceConfig has no ``S3FailurePath``.
    """

    inference_id: str
    output_location: str
    failure_location: str | None

    def to_dict(self) -> dict[str, Any]:
        """Return the record as a JSON-serialisable dict (for XCom)."""
        return asdict(self)


class SageMakerRuntimeHook(AwsBaseHook):
    """
    Interact with the Amazon SageMaker Runtime API (``sagemaker-runtime``): asynchronous, real-time and streaming.

    A thin wrapper of :external+boto3:py:class:`SageMakerRuntime.Client`: credentials, sessions, endpoint
    URLs (connection extra ``service_config: {"sagemaker-runtime": {"endpoint_url": ...}}``) and retries
    come from the amazon provider's :class:`~airflow.providers.amazon.aws.hooks.base_aws.AwsBaseHook` and
    botocore.

    Additional arguments (such as ``aws_conn_id``) may be specified and are passed down to the
    underlying AwsBaseHook.

    .. seealso::
        - :class:`airflow.providers.amazon.aws.hooks.base_aws.AwsBaseHook`
        - https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_runtime_InvokeEndpointAsync.html
        - https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_runtime_InvokeEndpoint.html
        - https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_runtime_InvokeEndpointWithResponseStream.html
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["client_type"] = "sagemaker-runtime"
        super().__init__(*args, **kwargs)

    def get_client_type(
        self, region_name: str | None = None, config: Config | None = None, deferrable: bool = False
    ) -> Any:
        """
        Return the ``sagemaker-runtime`` client: ``read_timeout`` 70 s unless set, no retry once a call is sent.

        ``read_timeout`` (seconds) comes from ``config``, else from the hook's ``botocore_config`` / the
        connection's ``config_kwargs``, else :data:`MODEL_READ_TIMEOUT_SECONDS`. :func:`no_retry_once_sent` is
        registered for InvokeEndpoint and InvokeEndpointWithResponseStream, whatever the retry mode.
        """
        client: Any = super().get_client_type(
            region_name=region_name,
            config=with_model_read_timeout(config if config is not None else self.config),
            deferrable=deferrable,
        )
        service = client.meta.service_model.service_id.hyphenize()
        for operation in NOT_RETRIED_ONCE_SENT:
            client.meta.events.register(
                f"needs-retry.{service}.{operation}",
                no_retry_once_sent,
                unique_id=f"airflow-sagemaker-async-no-retry-once-sent-{operation}",
            )
        return client

    @property
    def read_timeout(self) -> float | None:
        """The client's ``read_timeout``, seconds (builds the client if not built yet)."""
        client: Any = self.conn
        return cast("float | None", client.meta.config.read_timeout)

    def invoke_endpoint_async(
        self,
        *,
        endpoint_name: str,
        input_location: str | None = None,
        body: bytes | None = None,
        content_type: str | None = None,
        accept: str | None = None,
        custom_attributes: str | None = None,
        inference_id: str | None = None,
        s3_output_path_extension: str | None = None,
        filename: str | None = None,
        request_ttl_seconds: int | None = None,
        invocation_timeout_seconds: int | None = None,
    ) -> AsyncInferenceSubmission:
        """
        Submit one asynchronous inference request; return where its result will appear.

        Parameters left ``None`` are not sent, so SageMaker's defaults apply. botocore validates the
        service model's constraints before sending and retries 5xx and throttling answers with the
        same request (hence the same ``inference_id``).

        :param endpoint_name: name of an endpoint created with an AsyncInferenceConfig.
        :param input_location: S3 (or https) URI of the payload. Exactly one of ``input_location`` and ``body``.
        :param body: the payload itself, at most 128,000 bytes (botocore >= 1.43.29).
        :param content_type: MIME type of the payload.
        :param accept: desired MIME type of the output.
        :param custom_attributes: opaque value forwarded verbatim to the model (sensitive).
        :param inference_id: 1-64 printable characters identifying the request; generated by
            SageMaker when ``None``. Send your own: the API has no idempotency token.
        :param s3_output_path_extension: path appended to the endpoint's S3OutputPath.
        :param filename: name of the output object, at most 32 characters.
        :param request_ttl_seconds: seconds the request may wait in the queue, 60-21600, default 21600.
        :param invocation_timeout_seconds: seconds the model may take, 1-3600, default 900.
        :return: the submission record.
        :raises botocore.exceptions.ClientError: ValidationError (not retried) or the last 5xx / throttling
            answer after botocore's retries.
        :raises botocore.exceptions.ParamValidationError: a value botocore refuses client-side.

        .. seealso::
            - :external+boto3:py:meth:`SageMakerRuntime.Client.invoke_endpoint_async`
        """
        request: dict[str, Any] = {
            "EndpointName": endpoint_name,
            "InputLocation": input_location,
            "Body": body,
            "ContentType": content_type,
            "Accept": accept,
            "CustomAttributes": custom_attributes,
            "InferenceId": inference_id,
            "S3OutputPathExtension": s3_output_path_extension,
            "Filename": filename,
            "RequestTTLSeconds": request_ttl_seconds,
            "InvocationTimeoutSeconds": invocation_timeout_seconds,
        }
        client = cast("SageMakerRuntimeClient", self.conn)
        response = client.invoke_endpoint_async(**{k: v for k, v in request.items() if v is not None})
        return AsyncInferenceSubmission(
            inference_id=response["InferenceId"],
            output_location=response["OutputLocation"],
            failure_location=response.get("FailureLocation"),
        )

    def invoke_endpoint(
        self,
        *,
        endpoint_name: str,
        body: bytes,
        content_type: str | None = None,
        accept: str | None = None,
        custom_attributes: str | None = None,
        target_model: str | None = None,
        target_variant: str | None = None,
        target_container_hostname: str | None = None,
        inference_id: str | None = None,
        enable_explanations: str | None = None,
        inference_component_name: str | None = None,
        session_id: str | None = None,
        prefix_aware_id: str | None = None,
    ) -> InvokeEndpointOutputTypeDef:
        """
        Invoke a real-time endpoint and return its answer (the response ``Body`` is a botocore ``StreamingBody``).

        Parameters left ``None`` are not sent. Not idempotent, so retried only when the attempt cannot have
        reached the model (throttling, 503, no connection; see :func:`no_retry_once_sent`).

        :param endpoint_name: name of a real-time endpoint (no AsyncInferenceConfig).
        :param body: the payload, at most 6,291,456 bytes (the service model's limit; sensitive).
        :param content_type: MIME type of the payload.
        :param accept: desired MIME type of the answer.
        :param custom_attributes: opaque value forwarded verbatim to the model (sensitive).
        :param target_model: the model of a multi-model endpoint to invoke.
        :param target_variant: the production variant to invoke.
        :param target_container_hostname: the container of a multi-container (direct invocation) endpoint.
        :param inference_id: 1-64 printable characters identifying the request (for data capture).
        :param enable_explanations: a JMESPath expression deciding whether SageMaker Clarify explains the answer.
        :param inference_component_name: the inference component to invoke.
        :param session_id: ``NEW_SESSION`` to open a stateful session, or an open session's id.
        :param prefix_aware_id: identifier for prefix-aware routing.
        :return: botocore's answer: ``Body``, ``ContentType``, ``InvokedProductionVariant``, ``CustomAttributes``,
            ``NewSessionId``, ``ClosedSessionId``.
        :raises botocore.exceptions.ClientError: ``ModelError`` (the model answered an error; the response holds
            ``OriginalStatusCode``, ``OriginalMessage``, ``LogStreamArn``), ``ValidationError``, and the others of
            the API.

        .. seealso::
            - :external+boto3:py:meth:`SageMakerRuntime.Client.invoke_endpoint`
        """
        request: dict[str, Any] = {
            "EndpointName": endpoint_name,
            "Body": body,
            "ContentType": content_type,
            "Accept": accept,
            "CustomAttributes": custom_attributes,
            "TargetModel": target_model,
            "TargetVariant": target_variant,
            "TargetContainerHostname": target_container_hostname,
            "InferenceId": inference_id,
            "EnableExplanations": enable_explanations,
            "InferenceComponentName": inference_component_name,
            "SessionId": session_id,
            "PrefixAwareId": prefix_aware_id,
        }
        client = cast("SageMakerRuntimeClient", self.conn)
        return client.invoke_endpoint(**{k: v for k, v in request.items() if v is not None})

    def invoke_endpoint_with_response_stream(
        self,
        *,
        endpoint_name: str,
        body: bytes,
        content_type: str | None = None,
        accept: str | None = None,
        custom_attributes: str | None = None,
        target_variant: str | None = None,
        target_container_hostname: str | None = None,
        inference_id: str | None = None,
        inference_component_name: str | None = None,
        session_id: str | None = None,
        prefix_aware_id: str | None = None,
    ) -> InvokeEndpointWithResponseStreamOutputTypeDef:
        """
        Invoke a real-time endpoint whose model streams its answer; return the open event stream.

        Parameters left ``None`` are not sent. The response ``Body`` is botocore's ``EventStream`` of
        ``PayloadPart`` events; iterating it raises ``botocore.exceptions.EventStreamError`` on a
        ``ModelStreamError`` or ``InternalStreamFailure`` event. Close it when done. Not idempotent, so
        retried only when the attempt cannot have reached the model (see :func:`no_retry_once_sent`).

        :param endpoint_name: name of a real-time endpoint whose container supports streaming.
        :param body: the payload, at most 6,291,456 bytes (sensitive).
        :param content_type: MIME type of the payload.
        :param accept: desired MIME type of the answer (sent as ``X-Amzn-SageMaker-Accept``).
        :param custom_attributes: opaque value forwarded verbatim to the model (sensitive).
        :param target_variant: the production variant to invoke.
        :param target_container_hostname: the container of a multi-container (direct invocation) endpoint.
        :param inference_id: 1-64 printable characters identifying the request.
        :param inference_component_name: the inference component to invoke.
        :param session_id: an open stateful session's id.
        :param prefix_aware_id: identifier for prefix-aware routing.
        :return: botocore's answer: ``Body`` (the event stream), ``ContentType``, ``InvokedProductionVariant``,
            ``CustomAttributes``.
        :raises botocore.exceptions.ClientError: ``ModelError`` before the stream starts, ``ValidationError``, ...

        .. seealso::
            - :external+boto3:py:meth:`SageMakerRuntime.Client.invoke_endpoint_with_response_stream`
        """
        request: dict[str, Any] = {
            "EndpointName": endpoint_name,
            "Body": body,
            "ContentType": content_type,
            "Accept": accept,
            "CustomAttributes": custom_attributes,
            "TargetVariant": target_variant,
            "TargetContainerHostname": target_container_hostname,
            "InferenceId": inference_id,
            "InferenceComponentName": inference_component_name,
            "SessionId": session_id,
            "PrefixAwareId": prefix_aware_id,
        }
        client = cast("SageMakerRuntimeClient", self.conn)
        return client.invoke_endpoint_with_response_stream(**{k: v for k, v in request.items() if v is not None})
