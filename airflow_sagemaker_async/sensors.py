"""SageMakerAsyncInferenceSensor: wait for an asynchronous inference submitted elsewhere."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.providers.amazon.aws.sensors.base_aws import AwsBaseSensor
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from airflow.sdk import PokeReturnValue
from airflow.sdk.exceptions import AirflowSensorTimeout

from airflow_sagemaker_async.exceptions import SageMakerAsyncParameterError
from airflow_sagemaker_async.outcome import DEFAULT_MAX_OUTPUT_BYTES, finish, timeout_error
from airflow_sagemaker_async.triggers import SageMakerAsyncInferenceTrigger
from airflow_sagemaker_async.validation import (
    check_inference_id,
    check_output_format,
    check_poll_schedule,
    check_positive,
    is_rendered,
    parse_s3_uri,
)
from airflow_sagemaker_async.watch import (
    DEFAULT_MAX_POLL_INTERVAL,
    DEFAULT_POLL_INTERVAL,
    Watch,
    check_sync,
    isoformat,
    utcnow,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.sdk import Context

__all__ = ["SageMakerAsyncInferenceSensor"]


class SageMakerAsyncInferenceSensor(AwsBaseSensor[S3Hook]):
    """
    Wait for an asynchronous inference submitted elsewhere, by its output (and failure) location.

    For requests submitted by
    :class:`~airflow_sagemaker_async.operators.SageMakerInvokeEndpointAsyncOperator` with
    ``wait_for_completion=False`` (pull its record from XCom) or outside Airflow. Deferrable by default,
    with the same trigger as the operator; in ``poke`` / ``reschedule`` mode each poke makes the same
    check. Returns the same outcome dict, raises the same exceptions, offers the same ``output_format``.

    The wait ends after the sensor's ``timeout`` (seconds, Airflow's default 7 days) with
    :class:`~airflow_sagemaker_async.exceptions.SageMakerAsyncInferenceTimeout`.

    :param output_location: S3 URI returned by InvokeEndpointAsync as ``OutputLocation`` (templated, required).
    :param failure_location: S3 URI returned as ``FailureLocation`` (templated). Without it a model
        error shows only as a timeout.
    :param inference_id: the request's InferenceId, for messages and the outcome (templated); default
        the output object's name.
    :param endpoint_name: the endpoint, for messages and the outcome (templated, optional).
    :param deferrable: wait in the triggerer (default ``True``).
    :param poll_interval: seconds before the first check of the trigger, default 2; grows 1.5x per check.
        In poke mode ``poke_interval`` (default: this value) paces the pokes.
    :param max_poll_interval: ceiling of the trigger's interval, seconds, default 30.
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
    template_fields: Sequence[str] = aws_template_fields(
        "output_location", "failure_location", "inference_id", "endpoint_name"
    )
    ui_color = "#c6e2e9"

    def __init__(
        self,
        *,
        output_location: str | None = None,
        failure_location: str | None = None,
        inference_id: str | None = None,
        endpoint_name: str | None = None,
        deferrable: bool = True,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        max_poll_interval: float = DEFAULT_MAX_POLL_INTERVAL,
        output_format: str = "location",
        max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
        fail_on_model_error: bool = True,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("poke_interval", poll_interval)
        super().__init__(**kwargs)
        self.output_location = output_location
        self.failure_location = failure_location
        self.inference_id = inference_id
        self.endpoint_name = endpoint_name
        self.deferrable = deferrable
        self.poll_interval, self.max_poll_interval = check_poll_schedule(poll_interval, max_poll_interval)
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

    def execute(self, context: Context) -> Any:
        """
        Defer to the trigger (``deferrable=True``) or poke until an object appears.

        :return: the outcome dict.
        :raises SageMakerAsyncInferenceTimeout: the sensor's ``timeout`` passed with no object.
        """
        if not self.deferrable:
            try:
                return super().execute(context)
            except AirflowSensorTimeout as error:
                watch = self._watch or self._new_watch()
                event = {**watch.timeout_event(), "deadline": isoformat(utcnow())}
                raise timeout_error(event) from error
        watch = self._new_watch()
        self.defer(
            trigger=SageMakerAsyncInferenceTrigger.continuing(
                watch,
                aws_conn_id=self.aws_conn_id,
                region_name=self.region_name,
                verify=self.verify,
                botocore_config=self.botocore_config,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout + 60),
        )

    def poke(self, context: Context) -> PokeReturnValue | bool:
        """Check both locations once; done with the outcome when an object is there."""
        if self._watch is None:
            self._watch = self._new_watch()
        event = check_sync(self._watch, self.hook.conn)
        if event is None:
            return False
        return PokeReturnValue(is_done=True, xcom_value=self._finish(event))

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """
        Resume after the trigger's event; return the outcome dict or raise (idempotent).

        :raises SageMakerAsyncInferenceError: the model failed and ``fail_on_model_error`` is True.
        :raises SageMakerAsyncInferenceTimeout: no object by the deadline.
        :raises SageMakerAsyncOutputError: the output is too large, gone, or not decodable.
        """
        return self._finish(event)

    def _finish(self, event: dict[str, Any]) -> dict[str, Any]:
        outcome = finish(
            event,
            s3_client=self.hook.conn,
            output_format=self.output_format,
            max_output_bytes=self.max_output_bytes,
            fail_on_model_error=self.fail_on_model_error,
        )
        self.log.info("Inference %s: %s", outcome["inference_id"], outcome["status"])
        return outcome
