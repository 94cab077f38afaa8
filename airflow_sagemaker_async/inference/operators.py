"""SageMakerInvokeEndpointAsyncOperator: submit with InvokeEndpointAsync, wait, push the outcome to XCom.

Longer than ~400 lines because the operator's class docstring is its parameter reference (every request field
of InvokeEndpointAsync as a parameter); the wait itself is in :mod:`~airflow_sagemaker_async.inference.waiting`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from airflow.sdk.log import mask_secret
from botocore.exceptions import ClientError

from airflow_sagemaker_async.assets.events import check_output_assets, record_inference_events
from airflow_sagemaker_async.common import metrics
from airflow_sagemaker_async.common.capacity import check_endpoint_capacity, log_capacity
from airflow_sagemaker_async.common.exceptions import SageMakerAsyncParameterError
from airflow_sagemaker_async.common.hooks import AsyncInferenceSubmission, SageMakerRuntimeHook
from airflow_sagemaker_async.common.layout import compute_deadline, result_locations
from airflow_sagemaker_async.common.lineage import LineageRecord, operator_lineage
from airflow_sagemaker_async.common.links import SageMakerAsyncOutputLink, SageMakerEndpointLink
from airflow_sagemaker_async.common.outcome import DEFAULT_MAX_OUTPUT_BYTES
from airflow_sagemaker_async.common.records import FAILED, IN_PROGRESS, TIMED_OUT
from airflow_sagemaker_async.common.rules import INVOKE_ENDPOINT_ASYNC
from airflow_sagemaker_async.common.submission import default_inference_id, input_key, serialize_input_data
from airflow_sagemaker_async.common.validation import (
    INLINE_BODY,
    MAX_INLINE_BODY_BYTES,
    check_inline_payload,
    check_invoke_fields,
    check_output_format,
    check_positive,
    is_rendered,
    parse_s3_uri,
)
from airflow_sagemaker_async.common.watch import Watch, check_sync, isoformat, utcnow
from airflow_sagemaker_async.inference.waiting import (
    InferenceWaitMixin,
    default_deferrable,
    min_deferral,
    notification_queue,
    poll_schedule,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Context

    from airflow_sagemaker_async.common.records import Outcome, Submission, WatchEvent

__all__ = ["SageMakerInvokeEndpointAsyncOperator"]


class SageMakerInvokeEndpointAsyncOperator(InferenceWaitMixin, AwsBaseOperator[SageMakerRuntimeHook]):
    """
    Submit one SageMaker asynchronous inference and wait for its result without holding a worker slot.

    Calls InvokeEndpointAsync, then (``deferrable=True``, the default) defers to
    :class:`~airflow_sagemaker_async.inference.triggers.SageMakerAsyncInferenceTrigger`, which watches the
    request's S3 output and failure locations in the triggerer. The task returns the
    :class:`~airflow_sagemaker_async.common.records.Outcome`, which Airflow pushes to XCom. Before deferring it
    checks once on the worker, and the trigger never fires within ``min_deferral_seconds`` of the deferral
    (see :mod:`airflow_sagemaker_async.inference.waiting`).

    Every InvokeEndpointAsync field keeps its API name in snake_case:

    :param endpoint_name: endpoint with an AsyncInferenceConfig (templated).
    :param input_location: S3 (or https) URI of a payload already uploaded (templated). Exactly one of
        ``input_location`` and ``input_data``.
    :param input_data: the payload: ``str`` (UTF-8), ``bytes``, or a JSON-serialisable value (sent as
        JSON, ``application/json`` unless ``content_type`` says otherwise) (templated, JSON rendering).
        Sent inline as the request Body when it is at most 128,000 bytes, else uploaded to
        ``input_s3_prefix`` first. With botocore < 1.43.29 (no Body in InvokeEndpointAsync, e.g. MWAA 3.2.1's
        1.42.84) it is always uploaded, so ``input_s3_prefix`` is then required.
    :param input_s3_prefix: ``s3://bucket/prefix`` where a larger ``input_data`` is uploaded, under
        ``<prefix>/<inference id>/input`` (templated). Needs ``s3:PutObject`` there.
    :param content_type: MIME type of the payload (templated).
    :param accept: MIME type wanted for the output (templated).
    :param custom_attributes: value forwarded verbatim to the model, <= 1024 visible ASCII (templated,
        sensitive: never logged).
    :param inference_id: 1-64 printable ASCII characters (templated). Default: deterministic from
        dag_id, task_id, run_id and map_index (:func:`default_inference_id`), so retries reuse it and
        the SageMaker logs can be matched to the task instance.
    :param s3_output_path_extension: path appended to the endpoint's S3OutputPath (templated; botocore >= 1.42.54).
    :param filename: name of the output object, <= 32 characters, one dot at most (templated; botocore >= 1.42.54).
    :param request_ttl_seconds: seconds the request may wait in SageMaker's queue, 60-21600; SageMaker's
        default 21600 (templated).
    :param invocation_timeout_seconds: seconds the model may take, 1-3600; SageMaker's default 900 (templated).
    :param wait_for_completion: wait for the result (default ``True``); ``False`` returns the
        :class:`~airflow_sagemaker_async.common.records.Submission` at once, e.g. for
        :class:`~airflow_sagemaker_async.inference.sensors.SageMakerAsyncInferenceSensor`.
    :param deferrable: wait in the triggerer; default ``True``, unless the deployment explicitly sets
        ``[operators] default_deferrable`` (see :func:`~airflow_sagemaker_async.inference.waiting.default_deferrable`).
        ``False`` waits on the worker with the same checks and the same outcomes.
    :param max_wait_seconds: seconds from submission until the wait ends with
        :class:`~airflow_sagemaker_async.common.exceptions.SageMakerAsyncInferenceTimeout` (templated). Default:
        the request's TTL (or 21600) + invocation timeout (or 900) + 600 s of margin. Fixed at submission
        as an absolute time: a triggerer restart does not extend it.
    :param poll_interval: seconds before the first re-check, grows 1.5x per check; default
        ``[sagemaker_async] poll_interval`` from Airflow's config, else 2.
    :param max_poll_interval: ceiling of the interval between checks, seconds; default
        ``[sagemaker_async] max_poll_interval``, else 30; with ``notification_queue_url``
        ``[sagemaker_async] push_max_poll_interval``, else 300 (safety polling).
    :param notification_queue_url: URL of an SQS queue subscribed to the endpoint's SNS SuccessTopic and
        ErrorTopic (raw message delivery or not) (templated). The trigger then learns of the result within
        about a second and polls S3 only as a safety net; an ``Expired`` notification ends the wait at once
        with :class:`~airflow_sagemaker_async.common.exceptions.SageMakerAsyncInferenceTimeout`. Default ``None``
        (or ``""`` once rendered): poll only. Used in the triggerer only (``deferrable=True``); see the
        docs/concepts/push.md for the setup and the IAM actions.
    :param min_deferral_seconds: the trigger fires no sooner than this after the deferral (guard against
        apache/airflow#71580); default ``[sagemaker_async] min_deferral_seconds``, else 10.
    :param output_format: ``"location"`` (default, download nothing), ``"text"``, ``"json"`` or
        ``"bytes"`` (base64 text): download the output on the worker into the outcome's ``output`` key.
    :param max_output_bytes: largest output downloaded, bytes, default 1 MiB; a larger one raises
        :class:`~airflow_sagemaker_async.common.exceptions.SageMakerAsyncOutputTooLarge`.
    :param fail_on_model_error: raise
        :class:`~airflow_sagemaker_async.common.exceptions.SageMakerAsyncInferenceError` when the model fails
        (default ``True``); ``False`` succeeds with the ``"Failed"`` outcome and ``failure_reason``.
    :param resume_on_retry: on a retry (try 2+) with a fixed ``filename``, look for the result of an earlier
        try at the endpoint's output and failure paths (``sagemaker:DescribeEndpoint`` and
        ``sagemaker:DescribeEndpointConfig``) and resume from it instead of invoking again (default ``True``).
        Without a result there, the task invokes again: submission is at least once
        (docs/concepts/waiting.md, "Retries").
    :param check_endpoint_capacity: just before submitting, read the endpoint's instance count (``DescribeEndpoint``,
        cached 30 s per endpoint in the worker process) into ``endpoint_instances_at_submit`` of the outcome
        (or of the submission record, with ``wait_for_completion=False``);
        at 0 instances log once that the request queues until the endpoint scales up, and whether it has a
        scale-from-zero policy (``application-autoscaling:DescribeScalingPolicies``). Default ``True``: the
        tasks that need it are those whose authors do not know their endpoint scales to zero. A missing
        permission only logs that the check was skipped (:mod:`~airflow_sagemaker_async.common.capacity`,
        docs/concepts/cold-starts.md).
    :param aws_conn_id: Airflow AWS connection, default ``aws_default``; ``None`` uses boto3's default chain.
    :param region_name: AWS region, default from the connection.
    :param verify: whether / how to verify SSL certificates, default from the connection.
    :param botocore_config: botocore ``Config`` parameters as a dict (e.g. ``{"retries": {"mode": "standard"}}``).

    **Assets.** Each ``s3://`` asset of ``outlets`` covering the output or failure location gets the outcome
    (inference id, status, locations) in its event's ``extra``; a non-S3 asset in ``outlets`` is a parameter
    error (see :mod:`airflow_sagemaker_async.assets.events`).

    :raises SageMakerAsyncParameterError: at construction for a static bad value, at ``execute`` (before
        any AWS call) for a templated one.

    .. seealso::
        - https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_runtime_InvokeEndpointAsync.html
        - https://docs.aws.amazon.com/sagemaker/latest/dg/async-inference.html
    """

    aws_hook_class = SageMakerRuntimeHook
    template_fields: Sequence[str] = aws_template_fields(
        "endpoint_name",
        "input_location",
        "input_data",
        "input_s3_prefix",
        "content_type",
        "accept",
        "custom_attributes",
        "inference_id",
        "s3_output_path_extension",
        "filename",
        "request_ttl_seconds",
        "invocation_timeout_seconds",
        "max_wait_seconds",
        "notification_queue_url",
    )
    template_fields_renderers: ClassVar[dict[str, str]] = {"input_data": "json"}
    operator_extra_links = (SageMakerEndpointLink(), SageMakerAsyncOutputLink())
    ui_color = "#c6e2e9"

    def __init__(
        self,
        *,
        endpoint_name: str,
        input_location: str | None = None,
        input_data: Any = None,
        input_s3_prefix: str | None = None,
        content_type: str | None = None,
        accept: str | None = None,
        custom_attributes: str | None = None,
        inference_id: str | None = None,
        s3_output_path_extension: str | None = None,
        filename: str | None = None,
        request_ttl_seconds: int | None = None,
        invocation_timeout_seconds: int | None = None,
        wait_for_completion: bool = True,
        deferrable: bool | None = None,
        max_wait_seconds: float | None = None,
        poll_interval: float | None = None,
        max_poll_interval: float | None = None,
        notification_queue_url: str | None = None,
        min_deferral_seconds: float | None = None,
        output_format: str = "location",
        max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
        fail_on_model_error: bool = True,
        resume_on_retry: bool = True,
        check_endpoint_capacity: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_output_assets(self.outlets)
        self.endpoint_name = endpoint_name
        self.input_location = input_location
        self.input_data = input_data
        self.input_s3_prefix = input_s3_prefix
        self.content_type = content_type
        self.accept = accept
        self.custom_attributes = custom_attributes
        self.inference_id = inference_id
        self.s3_output_path_extension = s3_output_path_extension
        self.filename = filename
        self.request_ttl_seconds = request_ttl_seconds
        self.invocation_timeout_seconds = invocation_timeout_seconds
        self.wait_for_completion = wait_for_completion
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.max_wait_seconds = max_wait_seconds
        self.notification_queue_url = notification_queue(notification_queue_url, only_rendered=True)
        self._default_ceiling = max_poll_interval is None
        self.poll_interval, self.max_poll_interval = poll_schedule(
            poll_interval, max_poll_interval, push=self.notification_queue_url is not None
        )
        self.min_deferral_seconds = min_deferral(min_deferral_seconds)
        self.output_format = check_output_format(output_format)
        self.max_output_bytes = int(check_positive(max_output_bytes, "max_output_bytes", unit="bytes"))
        self.fail_on_model_error = fail_on_model_error
        self.resume_on_retry = resume_on_retry
        self.check_endpoint_capacity = check_endpoint_capacity
        self._check_parameters(only_rendered=True)

    def render_template_fields(self, context: Context, jinja_env: Any = None) -> None:
        """
        Render the templated fields, then mask ``custom_attributes`` in logs and rendered-field views.

        The service model marks CustomAttributes sensitive (it may carry tokens for the model).
        """
        super().render_template_fields(context, jinja_env)
        if isinstance(self.custom_attributes, str) and self.custom_attributes:
            mask_secret(self.custom_attributes)

    def _invoke_fields(self) -> dict[str, Any]:
        return {
            "endpoint_name": self.endpoint_name,
            "input_location": self.input_location,
            "content_type": self.content_type,
            "accept": self.accept,
            "custom_attributes": self.custom_attributes,
            "inference_id": self.inference_id,
            "s3_output_path_extension": self.s3_output_path_extension,
            "filename": self.filename,
            "request_ttl_seconds": self.request_ttl_seconds,
            "invocation_timeout_seconds": self.invocation_timeout_seconds,
        }

    def _check_parameters(self, *, only_rendered: bool) -> dict[str, Any]:
        """Check every parameter that is final (all of them when ``only_rendered`` is False)."""
        fields = check_invoke_fields(self._invoke_fields(), only_rendered=only_rendered)
        if (self.input_location is None) == (self.input_data is None):
            raise SageMakerAsyncParameterError(
                "Exactly one of input_location and input_data must be given, "
                f"got {'both' if self.input_location is not None else 'neither'}. Pass input_location for a "
                "payload already in S3, or input_data to send (or upload) it from the task.",
                parameter="input_data",
            )

        def final(value: Any) -> bool:
            return value is not None and (not only_rendered or is_rendered(value))

        if self.input_s3_prefix is not None and final(self.input_s3_prefix):
            parse_s3_uri(self.input_s3_prefix, "input_s3_prefix")
        if final(self.max_wait_seconds):
            fields["max_wait_seconds"] = check_positive(self.max_wait_seconds, "max_wait_seconds")
        notification_queue(self.notification_queue_url, only_rendered=only_rendered)
        if final(self.input_data):
            fields["payload"], fields["content_type"] = self._payload(fields.get("content_type"))
        return fields

    def _payload(self, content_type: str | None) -> tuple[bytes, str | None]:
        payload, content_type = serialize_input_data(self.input_data, content_type)
        check_inline_payload(len(payload), self.input_s3_prefix, "input_data", "input_data")
        return payload, content_type

    def _s3_hook(self) -> S3Hook:
        return S3Hook(**self._hook_parameters)

    def _s3_client(self) -> Any:
        return self._s3_hook().conn

    def execute(self, context: Context) -> Outcome | Submission:
        """
        Submit the inference; then defer, wait, or return the submission record.

        :return: the :class:`~airflow_sagemaker_async.common.records.Outcome`, or the
            :class:`~airflow_sagemaker_async.common.records.Submission` when ``wait_for_completion`` is False.
        :raises SageMakerAsyncParameterError: a rendered parameter breaks a rule (nothing was sent).
        :raises botocore.exceptions.ClientError: InvokeEndpointAsync refused the request.
        """
        fields = self._check_parameters(only_rendered=False)
        ti = context["ti"]
        inference_id = fields.get("inference_id") or default_inference_id(
            ti.dag_id, ti.task_id, ti.run_id, ti.map_index if ti.map_index is not None else -1
        )
        payload = fields.pop("payload", None)
        max_wait_seconds = fields.pop("max_wait_seconds", None)
        if (ti.try_number or 1) > 1 and (event := self._previous_result(fields, inference_id)) is not None:
            self.log.info(
                "Try %s: the result of an earlier try of inference %s is already at %s; not invoking again.",
                ti.try_number,
                inference_id,
                event["location"],
            )
            return self.finish_event(event)
        body = None
        if payload is not None and (not INLINE_BODY or len(payload) > MAX_INLINE_BODY_BYTES):
            bucket, prefix = parse_s3_uri(self.input_s3_prefix or "", "input_s3_prefix")
            key = input_key(prefix, inference_id)
            self._s3_hook().load_bytes(payload, key=key, bucket_name=bucket, replace=True)
            fields["input_location"] = f"s3://{bucket}/{key}"
            self.log.info("Uploaded %d bytes of input_data to %s", len(payload), fields["input_location"])
        elif payload is not None:
            body = payload
        fields["inference_id"] = inference_id
        # read before the request goes: after it, a scale-from-zero policy may already be starting an instance
        instances = self._instances_at_submit(fields["endpoint_name"], fields.get("request_ttl_seconds"))
        try:
            submission = self.hook.invoke_endpoint_async(body=body, **fields)
        except ClientError as error:
            if error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) >= 500:
                self.log.error(
                    "InvokeEndpointAsync of inference %s on endpoint %s still failed after botocore's retries. "
                    "SageMaker may or may not have queued it (the API has no idempotency token); a retry of this "
                    "task sends the same inference id. Check the endpoint's CloudWatch logs before re-running by hand.",
                    inference_id,
                    fields["endpoint_name"],
                )
            raise
        submitted_at = utcnow()
        metrics.submitted("async", endpoint_name=fields["endpoint_name"])
        self._persist_links(context, submission)
        deadline = compute_deadline(
            submitted_at,
            request_ttl_seconds=fields.get("request_ttl_seconds"),
            invocation_timeout_seconds=fields.get("invocation_timeout_seconds"),
            max_wait_seconds=max_wait_seconds,
        )
        self.log.info(
            "Submitted inference %s to endpoint %s; output %s, failure %s, deadline %s",
            submission.inference_id,
            fields["endpoint_name"],
            submission.output_location,
            submission.failure_location,
            isoformat(deadline),
        )
        if not self.wait_for_completion:
            self.last_submission: Submission | None = {
                "inference_id": submission.inference_id,
                "endpoint_name": fields["endpoint_name"],
                "status": IN_PROGRESS,
                "output_location": submission.output_location,
                "failure_location": submission.failure_location,
                "submitted_at": isoformat(submitted_at),
                "deadline": isoformat(deadline),
                "endpoint_instances_at_submit": instances,
            }
            return self.last_submission
        return self.wait_for(
            Watch(
                inference_id=submission.inference_id,
                output_location=submission.output_location,
                failure_location=submission.failure_location,
                deadline=deadline,
                poll_interval=self.poll_interval,
                max_poll_interval=self.max_poll_interval,
                log=self.log,
                endpoint_name=fields["endpoint_name"],
                submitted_at=isoformat(submitted_at),
                endpoint_instances_at_submit=instances,
            )
        )

    def _instances_at_submit(self, endpoint_name: str, request_ttl_seconds: int | None) -> int | None:
        """Return the endpoint's instance count (``check_endpoint_capacity``); explain a cold start in the log."""
        if not self.check_endpoint_capacity:
            return None
        capacity = check_endpoint_capacity(endpoint_name, self._hook_parameters)
        log_capacity(self.log, capacity, request_ttl_seconds=request_ttl_seconds)
        return capacity.instances

    def _previous_result(self, fields: dict[str, Any], inference_id: str) -> WatchEvent | None:
        """
        Return the final event of an earlier try's result, if ``filename`` fixes where it is, else ``None``.

        Where to look is :func:`airflow_sagemaker_async.common.layout.result_locations`. AWS does not document
        the failure object's name when Filename is given; if AWS names it otherwise than the layout says,
        a failed earlier try is not found and the model is invoked again.
        """
        if not (self.resume_on_retry and fields.get("filename")):
            return None
        try:
            sagemaker: Any = AwsBaseHook(client_type="sagemaker", **self._hook_parameters).conn
            config = sagemaker.describe_endpoint(EndpointName=fields["endpoint_name"])["EndpointConfigName"]
            paths = sagemaker.describe_endpoint_config(EndpointConfigName=config)["AsyncInferenceConfig"]
        except (ClientError, KeyError) as error:
            self.log.warning("Cannot look for an earlier try's result (%r); invoking again.", error)
            return None
        output_config = paths.get("OutputConfig", {})
        output_location, failure_location = result_locations(
            output_config.get("S3OutputPath", ""),
            output_config.get("S3FailurePath"),
            name=inference_id,
            s3_output_path_extension=fields.get("s3_output_path_extension"),
            filename=fields["filename"],
        )
        watch = Watch(
            inference_id=inference_id,
            output_location=output_location,
            failure_location=failure_location,
            deadline=utcnow(),
            log=self.log,
            endpoint_name=fields["endpoint_name"],
        )
        return check_sync(watch, self._s3_hook().conn)

    def _persist_links(self, context: Context, submission: AsyncInferenceSubmission) -> None:
        region, partition = self.hook.conn_region_name, self.hook.conn_partition
        SageMakerEndpointLink.persist(
            context=context,
            operator=self,
            region_name=region,
            aws_partition=partition,
            endpoint_name=self.endpoint_name,
        )
        bucket, key = parse_s3_uri(submission.output_location, "output_location")
        SageMakerAsyncOutputLink.persist(
            context=context, operator=self, region_name=region, aws_partition=partition, bucket=bucket, key=key
        )

    # -- OpenLineage -------------------------------------------------------------------------------------

    def post_execute(self, context: Any, result: Any = None) -> None:
        """Put the outcome in the ``extra`` of the outlet S3 assets that cover it (after a successful task)."""
        super().post_execute(context, result)
        record_inference_events(self, context)

    def _lineage(self) -> LineageRecord:
        """Return what this task read and what SageMaker wrote, from the outcome (or the submission record)."""
        result: Outcome | Submission | None = self.last_outcome or getattr(self, "last_submission", None)
        record = LineageRecord(INVOKE_ENDPOINT_ASYNC, endpoint_name=self.endpoint_name)
        if isinstance(self.input_location, str):
            record.inputs.append(self.input_location)
        elif result is not None and self.input_data is not None and isinstance(self.input_s3_prefix, str):
            payload, _ = serialize_input_data(self.input_data, self.content_type)
            if not INLINE_BODY or len(payload) > MAX_INLINE_BODY_BYTES:  # uploaded before the request: see execute
                bucket, prefix = parse_s3_uri(self.input_s3_prefix, "input_s3_prefix")
                record.inputs.append(f"s3://{bucket}/{input_key(prefix, result['inference_id'])}")
        if result is not None:
            record.endpoint_name = result["endpoint_name"] or self.endpoint_name
            record.facet = {"inferenceId": result["inference_id"], "status": result["status"]}
            written = result["failure_location"] if result["status"] == FAILED else result["output_location"]
            if result["status"] != TIMED_OUT and written:
                record.outputs.append(written)
        return record

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """
        Return the lineage of a successful task for the OpenLineage provider (optional; imported lazily).

        Inputs: ``input_location``, or the object ``input_data`` was uploaded to. Outputs: the output object
        (the failure object for a tolerated ``"Failed"`` outcome; the expected output object with
        ``wait_for_completion=False``). Run facet ``sagemakerEndpoint``: the endpoint, the inference id, the
        status. See :mod:`airflow_sagemaker_async.common.lineage`.
        """
        return operator_lineage(self._lineage())

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> OperatorLineage:
        """Return the lineage of a failed task: as on completion; a model error's output is the failure object."""
        return operator_lineage(self._lineage())
