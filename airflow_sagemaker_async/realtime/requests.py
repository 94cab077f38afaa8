"""
What InvokeEndpoint and InvokeEndpointWithResponseStream share, on the worker: the request side of both operators.

Every request field of the operation's service model as a snake_case parameter, checked before any AWS call
from :mod:`airflow_sagemaker_async.common.rules` (:class:`RealtimeRequestMixin`); the payload inline
(``input_data``) or read from S3 (``input_location``, size checked by HEAD before the download); the call made
once, never retried once it may have reached the model (:func:`call_endpoint`); a ``ModelError`` turned into
:class:`~airflow_sagemaker_async.common.exceptions.SageMakerModelError` (:func:`model_error`); the lineage of
both (:func:`realtime_lineage`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Final

from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.sdk.log import mask_secret
from botocore.exceptions import ClientError, ReadTimeoutError

from airflow_sagemaker_async.common.exceptions import (
    SageMakerAsyncParameterError,
    SageMakerEndpointReadTimeout,
    SageMakerModelError,
)
from airflow_sagemaker_async.common.lineage import LineageRecord
from airflow_sagemaker_async.common.links import cloudwatch_logs_url
from airflow_sagemaker_async.common.rules import INVOKE_ENDPOINT, field_rules
from airflow_sagemaker_async.common.submission import default_inference_id, serialize_input_data
from airflow_sagemaker_async.common.validation import (
    MAX_REALTIME_BODY_BYTES,
    OUTPUT_FORMATS,
    check_realtime_fields,
    is_rendered,
    parse_s3_uri,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow.sdk import Context


__all__ = [
    "RealtimeRequestMixin",
    "call_endpoint",
    "check_output_format",
    "model_error",
    "read_timeout_error",
    "realtime_lineage",
]

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
