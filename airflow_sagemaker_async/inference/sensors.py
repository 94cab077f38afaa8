"""SageMakerAsyncInferenceSensor: wait for an asynchronous inference submitted elsewhere."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.providers.amazon.aws.sensors.base_aws import AwsBaseSensor
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from airflow.sdk import PokeReturnValue
from airflow.sdk.exceptions import AirflowSensorTimeout

from airflow_sagemaker_async.common.exceptions import SageMakerAsyncParameterError
from airflow_sagemaker_async.common.outcome import DEFAULT_MAX_OUTPUT_BYTES, timeout_error
from airflow_sagemaker_async.common.validation import (
    check_inference_id,
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

    from airflow.sdk import Context

    from airflow_sagemaker_async.common.records import Outcome

__all__ = ["SageMakerAsyncInferenceSensor"]


class SageMakerAsyncInferenceSensor(InferenceWaitMixin, AwsBaseSensor[S3Hook]):
    """
    Wait for an asynchronous inference submitted elsewhere, by its output (and failure) location.

    For requests submitted by
    :class:`~airflow_sagemaker_async.inference.operators.SageMakerInvokeEndpointAsyncOperator` with
    ``wait_for_completion=False`` (pull its record from XCom) or outside Airflow. Deferrable by default,
    with the same trigger as the operator; in ``poke`` / ``reschedule`` mode each poke makes the same
    check. Returns the same :class:`~airflow_sagemaker_async.common.records.Outcome`, raises the same exceptions,
    offers the same ``output_format``; it shares the operator's waiting code
    (:mod:`airflow_sagemaker_async.inference.waiting`: a check on the worker first, the fast-event guard).

    The wait ends after the sensor's ``timeout`` (seconds, Airflow's default 7 days) with
    :class:`~airflow_sagemaker_async.common.exceptions.SageMakerAsyncInferenceTimeout`.

    :param output_location: S3 URI returned by InvokeEndpointAsync as ``OutputLocation`` (templated, required).
    :param failure_location: S3 URI returned as ``FailureLocation`` (templated). Without it a model
        error shows only as a timeout.
    :param inference_id: the request's InferenceId, for messages and the outcome (templated); default
        the output object's name.
    :param endpoint_name: the endpoint, for messages and the outcome (templated, optional).
    :param deferrable: wait in the triggerer; default ``True``, unless the deployment explicitly sets
        ``[operators] default_deferrable`` (see :func:`~airflow_sagemaker_async.inference.waiting.default_deferrable`).
        ``False`` pokes.
    :param poke_interval: seconds before the first re-check, growing 1.5x per check in the trigger;
        pacing the pokes in poke / reschedule mode. Default ``[sagemaker_async] poll_interval`` from
        Airflow's config, else 2 (not Airflow's 60: an inference is checked sooner at first).
    :param max_poll_interval: ceiling of the trigger's interval, seconds; default
        ``[sagemaker_async] max_poll_interval``, else 30; with ``notification_queue_url``
        ``[sagemaker_async] push_max_poll_interval``, else 300 (safety polling).
    :param notification_queue_url: URL of an SQS queue subscribed to the endpoint's SNS SuccessTopic and
        ErrorTopic (templated); the trigger then wakes on notifications, as the operator's does (see there).
        Default ``None`` (or ``""`` once rendered): poll only. Used in the triggerer only. **What a sensor
        can be told depends on ``inference_id``.** Without it, the sensor knows only its locations: a
        ``Completed`` message wakes it (its ``outputLocation`` as ``s3://`` or an S3 https URL,
        virtual-hosted or path-style), but AWS's ``Failed`` and ``Expired`` messages name no location, so it
        learns of a failure only by safety polling (up to ``max_poll_interval``) and of an expiry only at its
        ``timeout``. With the request's ``inference_id`` (and ``endpoint_name``) it is told of all three at once.
    :param min_deferral_seconds: the trigger fires no sooner than this after the deferral; default
        ``[sagemaker_async] min_deferral_seconds``, else 10.
    :param output_format: ``"location"`` (default), ``"text"``, ``"json"`` or ``"bytes"`` (base64 text).
    :param max_output_bytes: largest output downloaded, bytes, default 1 MiB.
    :param fail_on_model_error: raise on a model failure (default ``True``), else return the ``"Failed"`` outcome.
    :param aws_conn_id: Airflow AWS connection, default ``aws_default``.
    :param region_name: AWS region, default from the connection.
    :param verify: whether / how to verify SSL certificates, default from the connection.
    :param botocore_config: botocore ``Config`` parameters as a dict.

    :raises SageMakerAsyncParameterError: a bad or missing ``output_location``, at construction when
        static, at ``execute`` when templated.

    .. seealso::
        - https://docs.aws.amazon.com/sagemaker/latest/dg/async-inference-check-predictions.html
    """

    aws_hook_class = S3Hook
    metrics_kind = "sensor"
    template_fields: Sequence[str] = aws_template_fields(
        "output_location", "failure_location", "inference_id", "endpoint_name", "notification_queue_url"
    )
    ui_color = "#c6e2e9"

    def __init__(
        self,
        *,
        output_location: str | None = None,
        failure_location: str | None = None,
        inference_id: str | None = None,
        endpoint_name: str | None = None,
        deferrable: bool | None = None,
        poke_interval: float | None = None,
        max_poll_interval: float | None = None,
        notification_queue_url: str | None = None,
        min_deferral_seconds: float | None = None,
        output_format: str = "location",
        max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
        fail_on_model_error: bool = True,
        **kwargs: Any,
    ) -> None:
        self.notification_queue_url = notification_queue(notification_queue_url, only_rendered=True)
        self._default_ceiling = max_poll_interval is None
        self.poll_interval, self.max_poll_interval = poll_schedule(
            poke_interval, max_poll_interval, push=self.notification_queue_url is not None
        )
        super().__init__(poke_interval=self.poll_interval, **kwargs)
        self.output_location = output_location
        self.failure_location = failure_location
        self.inference_id = inference_id
        self.endpoint_name = endpoint_name
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.min_deferral_seconds = min_deferral(min_deferral_seconds)
        self.output_format = check_output_format(output_format)
        self.max_output_bytes = int(check_positive(max_output_bytes, "max_output_bytes", unit="bytes"))
        self.fail_on_model_error = fail_on_model_error
        self._watch: Watch | None = None
        self._check_locations(only_rendered=True)

    def _check_locations(self, *, only_rendered: bool) -> None:
        if not self.output_location:
            raise SageMakerAsyncParameterError(
                "output_location is required: the S3 URI InvokeEndpointAsync returned as OutputLocation "
                "(e.g. \"{{ ti.xcom_pull(task_ids='submit')['output_location'] }}\").",
                parameter="output_location",
            )
        for name in ("output_location", "failure_location"):
            value = getattr(self, name)
            if value is not None and (not only_rendered or is_rendered(value)):
                parse_s3_uri(value, name)
        if self.inference_id is not None and (not only_rendered or is_rendered(self.inference_id)):
            check_inference_id(self.inference_id)

    def _new_watch(self) -> Watch:
        self._check_locations(only_rendered=False)
        assert self.output_location is not None  # checked above
        return Watch(
            inference_id=self.inference_id or self.output_location.rsplit("/", 1)[-1],
            output_location=self.output_location,
            failure_location=self.failure_location,
            deadline=utcnow() + timedelta(seconds=self.timeout),
            poll_interval=self.poll_interval,
            max_poll_interval=self.max_poll_interval,
            log=self.log,
            endpoint_name=self.endpoint_name,
        )

    def _s3_client(self) -> Any:
        return self.hook.conn

    def execute(self, context: Context) -> Outcome | None:
        """
        Defer to the trigger (``deferrable=True``) or poke until an object appears.

        :return: the :class:`~airflow_sagemaker_async.common.records.Outcome`.
        :raises SageMakerAsyncInferenceTimeout: the sensor's ``timeout`` passed with no object.
        """
        if not self.deferrable:
            try:
                return super().execute(context)
            except AirflowSensorTimeout as error:
                watch = self._watch or self._new_watch()
                event = watch.timeout_event()
                event["deadline"] = isoformat(utcnow())
                raise timeout_error(event) from error
        return self.wait_for(self._new_watch())

    def poke(self, context: Context) -> PokeReturnValue | bool:
        """Check both locations once; done with the outcome when an object is there."""
        if self._watch is None:
            self._watch = self._new_watch()
        event = check_sync(self._watch, self.hook.conn)
        if event is None:
            return False
        return PokeReturnValue(is_done=True, xcom_value=self.finish_event(event))
