"""
SageMakerInvokeEndpointOperator: one real-time inference (InvokeEndpoint) on the worker.

Also the request side shared with the streaming operator (:mod:`airflow_sagemaker_async.realtime.streaming`): every
request field of the operation's service model as a snake_case parameter, checked before any AWS call from
:mod:`airflow_sagemaker_async.common.rules`; the payload inline (``input_data``) or read from S3 (``input_location``,
size checked by HEAD before the download); a ``ModelError`` turned into
:class:`~airflow_sagemaker_async.common.exceptions.SageMakerModelError`.

Real-time calls run on the worker only, never in a trigger: neither InvokeEndpoint nor its streaming variant
is idempotent, and a trigger may run twice.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, ClassVar, Final

from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from airflow.sdk.log import mask_secret
from botocore.exceptions import ClientError, ReadTimeoutError

from airflow_sagemaker_async.common import metrics
from airflow_sagemaker_async.common.exceptions import (
    SageMakerAsyncOutputTooLarge,
    SageMakerAsyncParameterError,
    SageMakerEndpointReadTimeout,
    SageMakerModelError,
)
from airflow_sagemaker_async.common.hooks import SageMakerRuntimeHook
from airflow_sagemaker_async.common.lineage import LineageRecord, operator_lineage
from airflow_sagemaker_async.common.links import SageMakerEndpointLink, cloudwatch_logs_url
from airflow_sagemaker_async.common.outcome import DEFAULT_MAX_OUTPUT_BYTES, decode_output
from airflow_sagemaker_async.common.rules import INVOKE_ENDPOINT, field_rules
from airflow_sagemaker_async.common.submission import default_inference_id, serialize_input_data
from airflow_sagemaker_async.common.validation import (
    MAX_REALTIME_BODY_BYTES,
    OUTPUT_FORMATS,
    check_positive,
    check_realtime_fields,
    is_rendered,
    parse_s3_uri,
)
from airflow_sagemaker_async.common.watch import isoformat, utcnow

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Context

    from airflow_sagemaker_async.common.records import RealtimeOutcome

__all__ = ["SageMakerInvokeEndpointOperator"]

#: S3's default Content-Type for an object uploaded without one: not a statement about the payload.
_S3_DEFAULT_CONTENT_TYPE: Final = "binary/octet-stream"
#: At most this much of the model's error body is quoted in an exception message (characters).
_MAX_MESSAGE_CHARS: Final = 1000


def model_error(error: ClientError, endpoint_name: str, operation: str) -> SageMakerModelError:
    """
    Turn botocore's ``ModelError`` into :class:`SageMakerModelError`.

    The message quotes the model's own body (``OriginalMessage``) and SageMaker's (``Message``, which carries
    AWS's console link), each cut at 1,000 characters, and the CloudWatch link built from ``LogStreamArn`` (the
    endpoint's log group, or a stream). ``ErrorCode`` (e.g. ``CLIENT_ERROR_FROM_MODEL``) is kept on the error.
    """
    response: dict[str, Any] = dict(error.response)
    status = response.get("OriginalStatusCode")
    original = response.get("OriginalMessage")
    sagemaker_message = response.get("Error", {}).get("Message") or response.get("Message")
    arn = response.get("LogStreamArn")
    url = cloudwatch_logs_url(arn) if arn else None
    quoted = _cut(str(original)) if original else "(no message)"
    said = f" SageMaker said: {_cut(str(sagemaker_message))}" if sagemaker_message else ""
    where = f" Its logs: {url}" if url else (f" Its logs: {arn}." if arn else "")
    code = response.get("ErrorCode")
    detail = ", ".join(part for part in (f"HTTP {status}" if status is not None else "", code or "") if part)
    return SageMakerModelError(
        f"{operation} on endpoint {endpoint_name}: the model answered an error{f' ({detail})' if detail else ''}: "
        f"{quoted}.{said}{where} Fix the payload (4xx) or the model (5xx); nothing was retried.",
        endpoint_name=endpoint_name,
        original_status_code=int(status) if status is not None else None,
        original_message=original,
        log_stream_arn=arn,
        log_url=url,
        sagemaker_message=sagemaker_message,
        error_code=code,
    )


def _cut(text: str) -> str:
    if len(text) <= _MAX_MESSAGE_CHARS:
        return text
    return f"{text[:_MAX_MESSAGE_CHARS]}... [{len(text) - _MAX_MESSAGE_CHARS} more characters]"


def read_timeout_error(endpoint_name: str, operation: str, read_timeout: float | None) -> SageMakerEndpointReadTimeout:
    """Turn botocore's ``ReadTimeoutError`` into :class:`SageMakerEndpointReadTimeout`: the timeout and what to set."""
    timeout = f"{read_timeout:g} s" if read_timeout is not None else "its read_timeout"
    return SageMakerEndpointReadTimeout(
        f"{operation} on endpoint {endpoint_name}: no answer within the client's read_timeout of {timeout}. "
        f"The request was sent once and not retried ({operation} has no idempotency token), so the model may "
        "have run. A model has up to 60 s to answer: leave read_timeout unset (70 s, AWS's advice) or set "
        "botocore_config={'read_timeout': 70} or more on the operator (or config_kwargs in the connection's "
        "extra); or make the model answer sooner.",
        endpoint_name=endpoint_name,
        read_timeout=read_timeout,
    )


def call_endpoint(call: Callable[..., Any], *, operation: str, read_timeout: float | None, **request: Any) -> Any:
    """
    Call ``call(**request)`` once (InvokeEndpoint or its streaming variant) and type its errors.

    :raises SageMakerModelError: the model answered an error (``ModelError``).
    :raises SageMakerEndpointReadTimeout: no answer within ``read_timeout`` seconds (not retried).
    :raises botocore.exceptions.ClientError: any other refusal, unchanged.
    """
    endpoint_name = request["endpoint_name"]
    try:
        return call(**request)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "ModelError":
            raise model_error(error, endpoint_name, operation) from error
        raise
    except ReadTimeoutError as error:
        raise read_timeout_error(endpoint_name, operation, read_timeout) from error


class RealtimeRequestMixin:
    """
    The request side of the real-time and streaming operators: fields, checks, payload, model errors.

    The fields are the service model's, by snake_case name, for :attr:`operation`; subclasses set them as
    attributes of the same name.
    """

    operation: ClassVar[str] = INVOKE_ENDPOINT
    endpoint_name: str
    input_data: Any
    input_location: str | None
    custom_attributes: str | None
    inference_id: str | None
    log: Any
    _hook_parameters: dict[str, Any]

    def _invoke_fields(self) -> dict[str, Any]:
        """Every request field of :attr:`operation` but the payload, read from the attribute of the same name."""
        return {name: getattr(self, name) for name in field_rules(self.operation) if name != "body"}

    def _check_request(self, *, only_rendered: bool) -> dict[str, Any]:
        """Check every request parameter that is final (all of them when ``only_rendered`` is False)."""
        fields = check_realtime_fields(self._invoke_fields(), operation=self.operation, only_rendered=only_rendered)
        if (self.input_location is None) == (self.input_data is None):
            raise SageMakerAsyncParameterError(
                "Exactly one of input_location and input_data must be given, "
                f"got {'both' if self.input_location is not None else 'neither'}. Pass input_data to send the "
                "payload from the task, or input_location='s3://bucket/key' to send an object already in S3.",
                parameter="input_data",
            )
        if self.input_location is not None and (not only_rendered or is_rendered(self.input_location)):
            _, key = parse_s3_uri(self.input_location, "input_location")
            if not key:
                raise SageMakerAsyncParameterError(
                    f"input_location={self.input_location!r} is invalid: it names a bucket, not an object. "
                    "Give s3://bucket/key of the payload.",
                    parameter="input_location",
                )
        if self.input_data is not None and (not only_rendered or is_rendered(self.input_data)):
            payload, _ = serialize_input_data(self.input_data, None)
            _check_size(len(payload), "input_data", "once serialised")
        return fields

    def _check_parameters(self, *, only_rendered: bool) -> dict[str, Any]:
        """Check the request and, in subclasses, the operator's own parameters."""
        return self._check_request(only_rendered=only_rendered)

    def _s3_hook(self) -> S3Hook:
        return S3Hook(**self._hook_parameters)

    def _payload(self, content_type: str | None) -> tuple[bytes, str | None]:
        """
        Return ``(payload, content_type)``: ``input_data`` serialised, or the ``input_location`` object read.

        The object's size is checked with a HEAD before it is downloaded; without ``content_type`` its
        Content-Type is sent (unless S3's default ``binary/octet-stream``).

        :raises SageMakerAsyncParameterError: the payload is larger than the real-time limit.
        """
        if self.input_data is not None:
            return serialize_input_data(self.input_data, content_type)
        assert self.input_location is not None
        bucket, key = parse_s3_uri(self.input_location, "input_location")
        client: Any = self._s3_hook().conn
        head = client.head_object(Bucket=bucket, Key=key)
        _check_size(int(head["ContentLength"]), "input_location", f"(the object at {self.input_location})")
        with client.get_object(Bucket=bucket, Key=key)["Body"] as body:
            payload: bytes = body.read(MAX_REALTIME_BODY_BYTES + 1)
        _check_size(len(payload), "input_location", f"(the object at {self.input_location}, grown since HEAD)")
        if content_type is None and head.get("ContentType") not in (None, _S3_DEFAULT_CONTENT_TYPE):
            content_type = head["ContentType"]
        return payload, content_type

    def _request(self, context: Context) -> tuple[dict[str, Any], bytes]:
        """Check every parameter, read the payload; return ``(hook keyword arguments, payload)``."""
        fields = self._check_parameters(only_rendered=False)
        if "inference_id" not in fields:
            ti = context["ti"]
            fields["inference_id"] = default_inference_id(
                ti.dag_id, ti.task_id, ti.run_id, ti.map_index if ti.map_index is not None else -1
            )
        payload, fields["content_type"] = self._payload(fields.get("content_type"))
        return fields, payload

    def _mask_custom_attributes(self) -> None:
        if isinstance(self.custom_attributes, str) and self.custom_attributes:
            mask_secret(self.custom_attributes)


def _check_size(size: int, parameter: str, what: str) -> None:
    if size > MAX_REALTIME_BODY_BYTES:
        raise SageMakerAsyncParameterError(
            f"{parameter} is {size} bytes {what}, more than the {MAX_REALTIME_BODY_BYTES} bytes a real-time "
            "endpoint accepts (InvokeEndpoint's Body limit in the service model). Use "
            "SageMakerInvokeEndpointAsyncOperator (payloads up to 1 GB through S3) on an async endpoint instead.",
            parameter=parameter,
        )


def check_output_format(value: Any, *, has_destination: bool) -> str:
    """
    Return the ``output_format`` to use: ``value``, or the default (``location`` with a destination, else ``text``).

    :raises SageMakerAsyncParameterError: ``value`` is not one of the formats, or is ``location`` with no
        destination (the response would be dropped).
    """
    if value is None:
        return "location" if has_destination else "text"
    if value not in OUTPUT_FORMATS or (value == "location" and not has_destination):
        raise SageMakerAsyncParameterError(
            f"output_format={value!r} is invalid: must be one of {', '.join(OUTPUT_FORMATS)}, and 'location' needs "
            "somewhere to write the response. Pass output_location='s3://bucket/key', or 'text' / 'json' / "
            "'bytes' to return the response in the outcome.",
            parameter="output_format",
        )
    return str(value)


class SageMakerInvokeEndpointOperator(RealtimeRequestMixin, AwsBaseOperator[SageMakerRuntimeHook]):
    """
    Invoke a SageMaker real-time endpoint once (InvokeEndpoint) and return the answer as the outcome.

    Runs on the worker (never deferred: InvokeEndpoint is not idempotent; the model has 60 s to answer). The
    task returns the :class:`~airflow_sagemaker_async.common.records.RealtimeOutcome`, which Airflow pushes to XCom.
    Every request field of InvokeEndpoint keeps its API name in snake_case:

    :param endpoint_name: a real-time endpoint (no AsyncInferenceConfig) (templated).
    :param input_data: the payload: ``str`` (UTF-8), ``bytes``, or a JSON-serialisable value (sent as JSON,
        ``application/json`` unless ``content_type`` says otherwise), at most 6,291,456 bytes once serialised
        (templated, JSON rendering). Exactly one of ``input_data`` and ``input_location``.
    :param input_location: ``s3://bucket/key`` of a payload to send, read on the worker (``s3:GetObject``),
        at most 6,291,456 bytes (checked by HEAD before the download) (templated).
    :param content_type: MIME type of the payload (templated); default: the S3 object's, else none.
    :param accept: MIME type wanted for the answer (templated).
    :param custom_attributes: value forwarded verbatim to the model, <= 1024 visible ASCII (templated,
        sensitive: never logged).
    :param target_model: the model of a multi-model endpoint, e.g. ``model.tar.gz`` (templated).
    :param target_variant: the production variant to invoke (templated).
    :param target_container_hostname: the container of a multi-container endpoint with direct invocation
        (templated).
    :param inference_id: 1-64 printable ASCII characters, for data capture (templated). Default:
        deterministic from dag_id, task_id, run_id and map_index, as the async operator's.
    :param enable_explanations: a JMESPath expression for SageMaker Clarify explanations (templated).
    :param inference_component_name: the inference component to invoke (templated).
    :param session_id: ``NEW_SESSION`` to open a stateful session, or an open session's id (templated).
    :param prefix_aware_id: identifier for prefix-aware routing (templated).
    :param output_location: ``s3://bucket/key`` to write the answer to (``s3:PutObject``), with the model's
        Content-Type (templated). Default: not written anywhere.
    :param output_format: ``"text"``, ``"json"`` or ``"bytes"`` (base64 text) put the answer in the outcome's
        ``output``; ``"location"`` only writes it to ``output_location``. Default: ``"location"`` with an
        ``output_location``, else ``"text"``.
    :param max_output_bytes: largest answer put in the outcome, bytes, default 1 MiB; a larger one raises
        :class:`~airflow_sagemaker_async.common.exceptions.SageMakerAsyncOutputTooLarge` (after writing it to
        ``output_location`` when given).
    :param aws_conn_id: Airflow AWS connection, default ``aws_default``; ``None`` uses boto3's default chain.
    :param region_name: AWS region, default from the connection.
    :param verify: whether / how to verify SSL certificates, default from the connection.
    :param botocore_config: botocore ``Config`` parameters as a dict. ``read_timeout`` defaults to 70 s (AWS's
        advice for a model near the 60 s limit). botocore retries only what cannot have reached the model
        (throttling, 503, no connection); a read timeout or another 5xx is never retried (README "Retries").

    :raises SageMakerAsyncParameterError: at construction for a static bad value, at ``execute`` (before
        any AWS call) for a templated one, and for an ``input_location`` object over the limit (before it is
        downloaded).
    :raises SageMakerModelError: the model answered an error (``ModelError``): its status, its message and
        the CloudWatch link to its logs.
    :raises SageMakerEndpointReadTimeout: no answer within ``read_timeout``; the model may have run once.
    :raises botocore.exceptions.ClientError: other refusals (``ValidationError`` for an unknown endpoint or an
        async endpoint, throttling after botocore's retries, ...).

    .. seealso::
        - https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_runtime_InvokeEndpoint.html
        - :external+boto3:py:meth:`SageMakerRuntime.Client.invoke_endpoint`
    """

    operation: ClassVar[str] = INVOKE_ENDPOINT
    aws_hook_class = SageMakerRuntimeHook
    template_fields: Sequence[str] = aws_template_fields(
        "endpoint_name",
        "input_data",
        "input_location",
        "content_type",
        "accept",
        "custom_attributes",
        "target_model",
        "target_variant",
        "target_container_hostname",
        "inference_id",
        "enable_explanations",
        "inference_component_name",
        "session_id",
        "prefix_aware_id",
        "output_location",
    )
    template_fields_renderers: ClassVar[dict[str, str]] = {"input_data": "json"}
    operator_extra_links = (SageMakerEndpointLink(),)
    ui_color = "#c6e2e9"

    def __init__(
        self,
        *,
        endpoint_name: str,
        input_data: Any = None,
        input_location: str | None = None,
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
        output_location: str | None = None,
        output_format: str | None = None,
        max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.endpoint_name = endpoint_name
        self.input_data = input_data
        self.input_location = input_location
        self.content_type = content_type
        self.accept = accept
        self.custom_attributes = custom_attributes
        self.target_model = target_model
        self.target_variant = target_variant
        self.target_container_hostname = target_container_hostname
        self.inference_id = inference_id
        self.enable_explanations = enable_explanations
        self.inference_component_name = inference_component_name
        self.session_id = session_id
        self.prefix_aware_id = prefix_aware_id
        self.output_location = output_location
        self.output_format = check_output_format(output_format, has_destination=output_location is not None)
        self.max_output_bytes = int(check_positive(max_output_bytes, "max_output_bytes", unit="bytes"))
        self._check_parameters(only_rendered=True)

    def _check_parameters(self, *, only_rendered: bool) -> dict[str, Any]:
        fields = self._check_request(only_rendered=only_rendered)
        if self.output_location is not None and (not only_rendered or is_rendered(self.output_location)):
            _, key = parse_s3_uri(self.output_location, "output_location")
            if not key:
                raise SageMakerAsyncParameterError(
                    f"output_location={self.output_location!r} is invalid: it names a bucket, not an object. "
                    "Give s3://bucket/key to write the answer to.",
                    parameter="output_location",
                )
        return fields

    def render_template_fields(self, context: Context, jinja_env: Any = None) -> None:
        """Render the templated fields, then mask ``custom_attributes`` (sensitive) in logs and rendered views."""
        super().render_template_fields(context, jinja_env)
        self._mask_custom_attributes()

    def execute(self, context: Context) -> RealtimeOutcome:
        """
        Invoke the endpoint once; write the answer to ``output_location`` and / or return it in the outcome.

        :return: the :class:`~airflow_sagemaker_async.common.records.RealtimeOutcome`.
        :raises SageMakerAsyncParameterError: a rendered parameter breaks a rule (nothing was sent).
        :raises SageMakerModelError: the model answered an error.
        :raises SageMakerAsyncOutputTooLarge: the answer is larger than ``max_output_bytes`` (output formats
            other than ``location``).
        """
        fields, payload = self._request(context)
        endpoint_name = fields["endpoint_name"]
        self.log.info(
            "Invoking real-time endpoint %s (inference id %s, %d bytes).",
            endpoint_name,
            fields["inference_id"],
            len(payload),
        )
        self.hook.conn  # noqa: B018 - the client first: invoked_at / completed_at time the call alone
        invoked_at, started = utcnow(), time.monotonic()
        response = call_endpoint(
            self.hook.invoke_endpoint,
            operation=self.operation,
            read_timeout=self.hook.read_timeout,
            body=payload,
            **fields,
        )
        metrics.submitted("realtime", endpoint_name=endpoint_name)
        SageMakerEndpointLink.persist(
            context=context,
            operator=self,
            region_name=self.hook.conn_region_name,
            aws_partition=self.hook.conn_partition,
            endpoint_name=endpoint_name,
        )
        limit = None if self.output_location is not None else self.max_output_bytes + 1
        with response["Body"] as body:
            data: bytes = body.read(limit)
        completed_at = utcnow()
        attributes = response.get("CustomAttributes")
        if attributes:
            mask_secret(attributes)
        content_type = response.get("ContentType")
        outcome: RealtimeOutcome = {
            "endpoint_name": endpoint_name,
            "inference_id": fields["inference_id"],
            "content_type": content_type,
            "invoked_production_variant": response.get("InvokedProductionVariant"),
            "custom_attributes": attributes,
            "new_session_id": response.get("NewSessionId"),
            "closed_session_id": response.get("ClosedSessionId"),
            "invoked_at": isoformat(invoked_at),
            "completed_at": isoformat(completed_at),
            "output_bytes": len(data),
            "output_location": None,
        }
        if self.output_location is not None:
            bucket, key = parse_s3_uri(self.output_location, "output_location")
            extra = {"ContentType": content_type} if content_type else {}
            s3: Any = self._s3_hook().conn
            s3.put_object(Bucket=bucket, Key=key, Body=data, **extra)
            outcome["output_location"] = self.output_location
        self.log.info(
            "Endpoint %s answered %s bytes (%s) in %.3f s from variant %s%s.",
            endpoint_name,
            len(data) if limit is None or len(data) < limit else f"more than {self.max_output_bytes}",
            content_type,
            time.monotonic() - started,
            outcome["invoked_production_variant"],
            f"; written to {self.output_location}" if self.output_location else "",
        )
        if self.output_format != "location":
            if len(data) > self.max_output_bytes:
                kept = f" It was written to {self.output_location}." if self.output_location else ""
                raise SageMakerAsyncOutputTooLarge(
                    f"The answer of endpoint {endpoint_name} is larger than max_output_bytes={self.max_output_bytes}."
                    f"{kept} Raise max_output_bytes, or pass output_location='s3://bucket/key' with "
                    "output_format='location' and read it downstream."
                )
            outcome["output"] = decode_output(data, self.output_format, f"the answer of endpoint {endpoint_name}")
        return outcome

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """
        Return the lineage for the OpenLineage provider (optional; imported lazily).

        Input: the ``input_location`` object (none for inline ``input_data``). Output: the ``output_location``
        object. Run facet ``sagemakerEndpoint``: the endpoint and the operation. See
        :mod:`airflow_sagemaker_async.common.lineage`.
        """
        return operator_lineage(realtime_lineage(self))

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> OperatorLineage:
        """Return the lineage of a failed invocation: the input only (a model error writes nothing)."""
        return operator_lineage(realtime_lineage(self), outputs=False)


def realtime_lineage(operator: Any) -> LineageRecord:
    """Return the lineage record of a real-time or streaming operator, from its (rendered) parameters."""
    record = LineageRecord(operator.operation, endpoint_name=operator.endpoint_name)
    if isinstance(operator.input_location, str):
        record.inputs.append(operator.input_location)
    for destination in (operator.output_location, getattr(operator, "output_file", None)):
        if isinstance(destination, str) and destination:
            record.outputs.append(destination)
    if isinstance(operator.inference_id, str):
        record.facet["inferenceId"] = operator.inference_id
    return record
