"""
SageMakerInvokeEndpointWithResponseStreamOperator: one streamed inference, its parts kept as they arrive.

The response of InvokeEndpointWithResponseStream is an AWS event stream of ``PayloadPart`` events, ended
early by a ``ModelStreamError`` (with an ``ErrorCode``) or an ``InternalStreamFailure`` event. Each part is
written as it arrives to one :class:`Sink`: a local file (flushed per part), an S3 object (multipart upload,
parts of ``multipart_part_bytes``, at least 5 MiB except the last; one PutObject when the whole answer fits
in one part), or memory (bounded by ``max_output_bytes``, returned in the outcome). A file or an S3 object
receives the parts at its ``.partial`` sibling (:data:`PARTIAL_SUFFIX`) and reaches its final path or key only
when the stream ended without an error, so a whole answer is all that ever appears there. When the stream
ends with an error, what arrived stays at the ``.partial`` sibling, and
:class:`~airflow_sagemaker_async.common.exceptions.SageMakerResponseStreamError` names the error code and that location.

The event stream is read by :mod:`airflow_sagemaker_async.realtime.events`; the parts go to a sink of
:mod:`airflow_sagemaker_async.realtime.sinks`.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, ClassVar, Final

from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from airflow.sdk.log import mask_secret
from urllib3.exceptions import ReadTimeoutError

from airflow_sagemaker_async.common import metrics
from airflow_sagemaker_async.common.exceptions import (
    SageMakerAsyncParameterError,
    SageMakerResponseStreamError,
)
from airflow_sagemaker_async.common.hooks import SageMakerRuntimeHook
from airflow_sagemaker_async.common.lineage import operator_lineage
from airflow_sagemaker_async.common.links import SageMakerEndpointLink
from airflow_sagemaker_async.common.outcome import DEFAULT_MAX_OUTPUT_BYTES, decode_output
from airflow_sagemaker_async.common.rules import INVOKE_ENDPOINT_WITH_RESPONSE_STREAM
from airflow_sagemaker_async.common.validation import check_positive, is_rendered, parse_s3_uri
from airflow_sagemaker_async.common.watch import isoformat, utcnow
from airflow_sagemaker_async.realtime.events import StreamEvent, read_events
from airflow_sagemaker_async.realtime.requests import (
    RealtimeRequestMixin,
    call_endpoint,
    check_output_format,
    realtime_lineage,
)
from airflow_sagemaker_async.realtime.sinks import (
    MIN_MULTIPART_PART_BYTES,
    FileSink,
    MemorySink,
    S3Sink,
    Sink,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Context

    from airflow_sagemaker_async.common.records import RealtimeOutcome

__all__ = [
    "SageMakerInvokeEndpointWithResponseStreamOperator",
]

log = logging.getLogger(__name__)

#: Default part size of the S3 multipart upload: 8 MiB.
DEFAULT_MULTIPART_PART_BYTES: Final = 8 * 1024 * 1024
#: Default seconds between two progress lines in the task log.
DEFAULT_PROGRESS_INTERVAL: Final = 10.0


class _Progress:
    """Log the stream's progress at most once per ``interval`` seconds, plus the first part and the end."""

    def __init__(self, log: Any, endpoint_name: str, interval: float) -> None:
        self.log = log
        self.endpoint_name = endpoint_name
        self.interval = interval
        self.started = time.monotonic()
        self.first_part: float | None = None
        self.last_log = self.started
        self.parts = 0
        self.size = 0

    def part(self, size: int) -> None:
        now = time.monotonic()
        self.parts += 1
        self.size += size
        if self.first_part is None:
            self.first_part = now - self.started
            self.log.info("Stream of endpoint %s: first part after %.3f s.", self.endpoint_name, self.first_part)
        elif now - self.last_log >= self.interval:
            self.last_log = now
            self.log.info(
                "Stream of endpoint %s: %d parts, %d bytes in %.1f s.",
                self.endpoint_name,
                self.parts,
                self.size,
                now - self.started,
            )

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started


class SageMakerInvokeEndpointWithResponseStreamOperator(RealtimeRequestMixin, AwsBaseOperator[SageMakerRuntimeHook]):
    """
    Invoke a streaming SageMaker real-time endpoint once and keep the answer's parts as they arrive.

    Runs on the worker (never deferred: the call is not idempotent). The parts go to ``output_file`` (a
    local path), to ``output_location`` (an S3 object, multipart upload), or, with neither, into the
    outcome's ``output`` (at most ``max_output_bytes``). Progress (parts, bytes, time to first part) is
    logged at most every ``progress_interval`` seconds. The task returns the
    :class:`~airflow_sagemaker_async.common.records.RealtimeOutcome` (with ``parts`` and
    ``time_to_first_part_seconds``). Every request field of InvokeEndpointWithResponseStream keeps its API
    name in snake_case:

    :param endpoint_name: a real-time endpoint whose container streams (templated).
    :param input_data: the payload (``str``, ``bytes`` or JSON-serialisable), at most 6,291,456 bytes once
        serialised (templated, JSON rendering). Exactly one of ``input_data`` and ``input_location``.
    :param input_location: ``s3://bucket/key`` of the payload, read on the worker after a HEAD checks its
        size (templated).
    :param content_type: MIME type of the payload (templated).
    :param accept: MIME type wanted for the answer (templated; sent as ``X-Amzn-SageMaker-Accept``).
    :param custom_attributes: value forwarded verbatim to the model (templated, sensitive: never logged).
    :param target_variant: the production variant to invoke (templated).
    :param target_container_hostname: the container of a multi-container endpoint (templated).
    :param inference_id: 1-64 printable ASCII characters (templated); default deterministic per task instance.
    :param inference_component_name: the inference component to invoke (templated).
    :param session_id: an open stateful session's id (templated).
    :param prefix_aware_id: identifier for prefix-aware routing (templated).
    :param output_file: local path of the answer (templated). The parts are appended to ``<path>.partial``,
        flushed per part, which is renamed to the path once the stream ended without an error. On the worker's
        disk: use it when a later step of the same task reads it, or a shared volume.
    :param output_location: ``s3://bucket/key`` of the answer (templated). The parts go to
        ``<key>.partial`` (a multipart upload past one part), copied to the key once the stream ended without
        an error, then deleted (``s3:PutObject``, ``s3:GetObject`` on the ``.partial`` key for the copy,
        ``s3:DeleteObject``, and ``s3:AbortMultipartUpload`` to clean up after an unexpected error).
    :param output_format: ``"text"`` (default without a destination), ``"json"`` or ``"bytes"`` (base64
        text): the joined parts in the outcome's ``output``; ``"location"`` (default, and the only choice, with
        ``output_file`` / ``output_location``) returns only where they are.
    :param max_output_bytes: largest answer collected into the outcome, bytes, default 1 MiB; past it the
        stream is closed and :class:`~airflow_sagemaker_async.common.exceptions.SageMakerAsyncOutputTooLarge` raised.
    :param multipart_part_bytes: size of the S3 multipart upload's parts, bytes, default 8 MiB, at least
        5 MiB (S3's minimum for every part but the last).
    :param progress_interval: seconds between two progress lines in the log, default 10.
    :param aws_conn_id: Airflow AWS connection, default ``aws_default``; ``None`` uses boto3's default chain.
    :param region_name: AWS region, default from the connection.
    :param verify: whether / how to verify SSL certificates, default from the connection.
    :param botocore_config: botocore ``Config`` parameters as a dict. ``read_timeout`` (seconds to the first
        part and between two parts) defaults to 70 s; the call is never retried once it may have reached the
        model (docs/concepts/waiting.md, "Retries").

    :raises SageMakerAsyncParameterError: a bad parameter, before any AWS call.
    :raises SageMakerModelError: the model answered an error before streaming (``ModelError``).
    :raises SageMakerEndpointReadTimeout: no first part within ``read_timeout`` (not retried).
    :raises SageMakerResponseStreamError: the stream ended with ``ModelStreamError`` / ``InternalStreamFailure``;
        the parts received are kept at the ``.partial`` sibling of the destination (never at the destination
        itself) and the error says where.
    :raises botocore.exceptions.ClientError: other refusals (``ValidationError`` for an unknown or async
        endpoint, ...).

    .. seealso::
        - https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_runtime_InvokeEndpointWithResponseStream.html
        - :external+boto3:py:meth:`SageMakerRuntime.Client.invoke_endpoint_with_response_stream`
    """

    operation: ClassVar[str] = INVOKE_ENDPOINT_WITH_RESPONSE_STREAM
    aws_hook_class = SageMakerRuntimeHook
    template_fields: Sequence[str] = aws_template_fields(
        "endpoint_name",
        "input_data",
        "input_location",
        "content_type",
        "accept",
        "custom_attributes",
        "target_variant",
        "target_container_hostname",
        "inference_id",
        "inference_component_name",
        "session_id",
        "prefix_aware_id",
        "output_file",
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
        target_variant: str | None = None,
        target_container_hostname: str | None = None,
        inference_id: str | None = None,
        inference_component_name: str | None = None,
        session_id: str | None = None,
        prefix_aware_id: str | None = None,
        output_file: str | None = None,
        output_location: str | None = None,
        output_format: str | None = None,
        max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
        multipart_part_bytes: int = DEFAULT_MULTIPART_PART_BYTES,
        progress_interval: float = DEFAULT_PROGRESS_INTERVAL,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.endpoint_name = endpoint_name
        self.input_data = input_data
        self.input_location = input_location
        self.content_type = content_type
        self.accept = accept
        self.custom_attributes = custom_attributes
        self.target_variant = target_variant
        self.target_container_hostname = target_container_hostname
        self.inference_id = inference_id
        self.inference_component_name = inference_component_name
        self.session_id = session_id
        self.prefix_aware_id = prefix_aware_id
        self.output_file = output_file
        self.output_location = output_location
        destination = output_file is not None or output_location is not None
        self.output_format = check_output_format(output_format, has_destination=destination)
        if destination and self.output_format != "location":
            raise SageMakerAsyncParameterError(
                f"output_format={output_format!r} is invalid with output_file / output_location: the parts are "
                "written there, not collected. Leave output_format out, or drop the destination to collect them.",
                parameter="output_format",
            )
        self.max_output_bytes = int(check_positive(max_output_bytes, "max_output_bytes", unit="bytes"))
        self.multipart_part_bytes = int(check_positive(multipart_part_bytes, "multipart_part_bytes", unit="bytes"))
        if self.multipart_part_bytes < MIN_MULTIPART_PART_BYTES:
            raise SageMakerAsyncParameterError(
                f"multipart_part_bytes={multipart_part_bytes!r} is invalid: S3 refuses parts under "
                f"{MIN_MULTIPART_PART_BYTES} bytes (5 MiB) but the last. Pass at least {MIN_MULTIPART_PART_BYTES}.",
                parameter="multipart_part_bytes",
            )
        self.progress_interval = check_positive(progress_interval, "progress_interval")
        self._check_parameters(only_rendered=True)

    def _check_parameters(self, *, only_rendered: bool) -> dict[str, Any]:
        fields = self._check_request(only_rendered=only_rendered)
        if self.output_file is not None and self.output_location is not None:
            raise SageMakerAsyncParameterError(
                "output_file and output_location were both given. Pass one: a local path or an S3 URI.",
                parameter="output_location",
            )
        if self.output_location is not None and (not only_rendered or is_rendered(self.output_location)):
            _, key = parse_s3_uri(self.output_location, "output_location")
            if not key:
                raise SageMakerAsyncParameterError(
                    f"output_location={self.output_location!r} is invalid: it names a bucket, not an object. "
                    "Give s3://bucket/key to write the stream to.",
                    parameter="output_location",
                )
        if self.output_file is not None and is_rendered(self.output_file) and not str(self.output_file).strip():
            raise SageMakerAsyncParameterError("output_file='' is invalid: give a file path.", parameter="output_file")
        return fields

    def render_template_fields(self, context: Context, jinja_env: Any = None) -> None:
        """Render the templated fields, then mask ``custom_attributes`` (sensitive) in logs and rendered views."""
        super().render_template_fields(context, jinja_env)
        self._mask_custom_attributes()

    def _sink(self, endpoint_name: str, content_type: str | None, s3_client: Any) -> Sink:
        if self.output_file is not None:
            return FileSink(self.output_file)
        if self.output_location is not None:
            return S3Sink(s3_client, self.output_location, self.multipart_part_bytes, content_type)
        return MemorySink(self.max_output_bytes, endpoint_name)

    def execute(self, context: Context) -> RealtimeOutcome:
        """
        Invoke the endpoint once and keep the parts as they arrive.

        :return: the :class:`~airflow_sagemaker_async.common.records.RealtimeOutcome`.
        :raises SageMakerAsyncParameterError: a rendered parameter breaks a rule (nothing was sent).
        :raises SageMakerModelError: the model answered an error before streaming.
        :raises SageMakerResponseStreamError: the stream ended with an error event (parts kept).
        :raises SageMakerAsyncOutputTooLarge: collecting into the outcome passed ``max_output_bytes``.
        """
        fields, payload = self._request(context)
        endpoint_name = fields["endpoint_name"]
        self.log.info(
            "Invoking streaming endpoint %s (inference id %s, %d bytes).",
            endpoint_name,
            fields["inference_id"],
            len(payload),
        )
        # Clients first: the time to first part counts from the request, and no part waits for a client.
        self.hook.conn  # noqa: B018
        s3_client = self._s3_hook().conn if self.output_location is not None else None
        invoked_at = utcnow()
        progress = _Progress(self.log, endpoint_name, self.progress_interval)
        response = call_endpoint(
            self.hook.invoke_endpoint_with_response_stream,
            operation=self.operation,
            read_timeout=self.hook.read_timeout,
            body=payload,
            **fields,
        )
        metrics.submitted("streaming", endpoint_name=endpoint_name)
        SageMakerEndpointLink.persist(
            context=context,
            operator=self,
            region_name=self.hook.conn_region_name,
            aws_partition=self.hook.conn_partition,
            endpoint_name=endpoint_name,
        )
        content_type = response.get("ContentType")
        attributes = response.get("CustomAttributes")
        if attributes:
            mask_secret(attributes)
        stream = response["Body"]
        sink = self._sink(endpoint_name, content_type, s3_client)
        ended: StreamEvent | None = None
        try:
            try:
                for event in read_events(stream):
                    if event.data is None:
                        ended = event
                        break
                    sink.write(event.data)
                    progress.part(len(event.data))
            except ReadTimeoutError:  # urllib3's, raised between two parts (botocore's subclasses it)
                ended = StreamEvent(
                    error_type="ReadTimeout",
                    message=f"no part within the client's read_timeout of {self.hook.read_timeout} s",
                )
            if ended is None:
                sink.finish()
            else:
                sink.keep_partial()
        except BaseException:
            sink.abandon()
            raise
        finally:
            stream.close()
        self.log.info(
            "Stream of endpoint %s %s: %d parts, %d bytes in %.3f s (first part after %s)%s.",
            endpoint_name,
            f"broke with {ended.error_type}" if ended else "ended",
            progress.parts,
            progress.size,
            progress.elapsed,
            f"{progress.first_part:.3f} s" if progress.first_part is not None else "none arrived",
            (f", kept at {sink.partial_location}" if ended else f", written to {sink.location}")
            if sink.location
            else "",
        )
        if ended is not None:
            raise self._stream_error(ended, endpoint_name, progress, sink)
        outcome: RealtimeOutcome = {
            "endpoint_name": endpoint_name,
            "inference_id": fields["inference_id"],
            "content_type": content_type,
            "invoked_production_variant": response.get("InvokedProductionVariant"),
            "custom_attributes": attributes,
            "new_session_id": None,
            "closed_session_id": None,
            "invoked_at": isoformat(invoked_at),
            "completed_at": isoformat(utcnow()),
            "output_bytes": progress.size,
            "output_location": sink.location,
            "parts": progress.parts,
            "time_to_first_part_seconds": round(progress.first_part, 6) if progress.first_part is not None else None,
        }
        if isinstance(sink, MemorySink):
            outcome["output"] = decode_output(sink.data, self.output_format, f"the answer of endpoint {endpoint_name}")
        return outcome

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """
        Return the lineage for the OpenLineage provider (optional; imported lazily).

        Input: the ``input_location`` object (none for inline ``input_data``). Output: the ``output_location``
        object or the ``output_file`` (namespace ``file``). Run facet ``sagemakerEndpoint``. See
        :mod:`airflow_sagemaker_async.common.lineage`.
        """
        return operator_lineage(realtime_lineage(self))

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> OperatorLineage:
        """Return the lineage of a failed stream: as on completion, since the parts received are kept there."""
        return operator_lineage(realtime_lineage(self))

    def _stream_error(
        self, ended: StreamEvent, endpoint_name: str, progress: _Progress, sink: Sink
    ) -> SageMakerResponseStreamError:
        code = f" ({ended.error_code})" if ended.error_code else ""
        if sink.partial_location:
            kept = (
                f"The {progress.parts} parts ({progress.size} bytes) received are kept at {sink.partial_location} "
                f"(incomplete); {sink.location} was not written."
            )
        else:
            kept = (
                f"The {progress.parts} parts ({progress.size} bytes) received are on the error's .received; "
                "pass output_location or output_file to keep them."
            )
        hint = {
            "ModelInvocationTimeExceeded": "The model took longer than SageMaker allows; shorten the generation.",
            "StreamBroken": "The model container broke the stream; see the endpoint's CloudWatch logs.",
        }.get(ended.error_code or "", "Retry the task, or see the endpoint's CloudWatch logs.")
        if ended.error_type == "ReadTimeout":
            hint = (
                "The model stopped sending parts; raise botocore_config={'read_timeout': ...} (seconds between two "
                "parts, default 70) if it pauses longer, or see the endpoint's CloudWatch logs."
            )
        return SageMakerResponseStreamError(
            f"The response stream of endpoint {endpoint_name} ended with {ended.error_type}{code} after "
            f"{progress.parts} parts: {ended.message or '(no message)'}. {kept} {hint}",
            endpoint_name=endpoint_name,
            error_type=ended.error_type or "UnknownError",
            error_code=ended.error_code,
            parts=progress.parts,
            bytes_received=progress.size,
            location=sink.partial_location,
            received=sink.data if isinstance(sink, MemorySink) else None,
        )
