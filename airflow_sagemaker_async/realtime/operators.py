"""
SageMakerInvokeEndpointOperator: one real-time inference (InvokeEndpoint) on the worker.

The request side it shares with the streaming operator is :mod:`airflow_sagemaker_async.realtime.requests`.

Real-time calls run on the worker only, never in a trigger: neither InvokeEndpoint nor its streaming variant
is idempotent, and a trigger may run twice.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from airflow.sdk.log import mask_secret

from airflow_sagemaker_async.common import metrics
from airflow_sagemaker_async.common.exceptions import (
    SageMakerAsyncOutputTooLarge,
    SageMakerAsyncParameterError,
)
from airflow_sagemaker_async.common.hooks import SageMakerRuntimeHook
from airflow_sagemaker_async.common.lineage import operator_lineage
from airflow_sagemaker_async.common.links import SageMakerEndpointLink
from airflow_sagemaker_async.common.outcome import DEFAULT_MAX_OUTPUT_BYTES, decode_output
from airflow_sagemaker_async.common.rules import INVOKE_ENDPOINT
from airflow_sagemaker_async.common.validation import (
    check_positive,
    is_rendered,
    parse_s3_uri,
)
from airflow_sagemaker_async.common.watch import isoformat, utcnow
from airflow_sagemaker_async.realtime.requests import (
    RealtimeRequestMixin,
    call_endpoint,
    check_output_format,
    realtime_lineage,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Context

    from airflow_sagemaker_async.common.records import RealtimeOutcome

__all__ = ["SageMakerInvokeEndpointOperator"]


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
        (throttling, 503, no connection); a read timeout or another 5xx is never retried
        (docs/concepts/waiting.md, "Retries").

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
