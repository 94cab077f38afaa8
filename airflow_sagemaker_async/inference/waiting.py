"""
How a task waits for one inference: shared by the operator and the sensor.

:class:`InferenceWaitMixin` holds the one path from a :class:`~airflow_sagemaker_async.common.watch.Watch`
built on the worker to the task's outcome:

1. **check once on the worker** (one HEAD of each location): a result that is already there is
   finished at once, without a deferral;
2. otherwise **defer** to :class:`~airflow_sagemaker_async.inference.triggers.SageMakerAsyncInferenceTrigger`
   (``deferrable=True``), or wait on the worker with the same checks (``deferrable=False``);
3. **finish** the event (:func:`airflow_sagemaker_async.common.outcome.finish`), in ``execute_complete`` after a
   deferral.

**The fast-event guard.** Airflow 3.2 and 3.3 can mark a resumed task failed when its trigger fires
within seconds of the deferral, before the scheduler has processed the deferring attempt's executor
event ("state mismatch": apache/airflow#66374, #71580, #72716). Step 1 keeps results that are already
there away from the triggerer; and the trigger never fires before ``min_deferral_seconds`` (default
:data:`DEFAULT_MIN_DEFERRAL_SECONDS`) have passed since the deferral (its ``not_before``, an absolute time,
so a rebuilt trigger keeps it).

**Deployment settings** (Airflow config, section ``[sagemaker_async]``, or the environment variables
``AIRFLOW__SAGEMAKER_ASYNC__<KEY>``) give the defaults of parameters a DAG leaves out:

=========================  ========  =====================================================================
key                        default   meaning
=========================  ========  =====================================================================
``poll_interval``          2         seconds before the first re-check; the interval then grows 1.5x
``max_poll_interval``      30        ceiling of the interval, seconds
``push_max_poll_interval`` 300       ceiling with a ``notification_queue_url`` (safety polling), seconds
``min_deferral_seconds``   10        the trigger fires no sooner than this after the deferral
=========================  ========  =====================================================================

**Deferrable by default, unless the deployment says otherwise.** ``deferrable`` left out (``None``) is
``True``, unless ``[operators] default_deferrable`` is *explicitly* configured (:func:`default_deferrable`):
by the environment variable ``AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE`` (or its ``_CMD`` / ``_SECRET``
forms), or by ``airflow.cfg`` with a value other than Airflow's default ``False``. Airflow writes its
defaults, ``default_deferrable = false`` among them, into every new ``airflow.cfg``, so a ``false`` there
cannot be told from "nothing said"; a deployment without a triggerer says so with the environment
variable (or ``deferrable=False`` on the task). Without a triggerer a deferred task waits until its
deferral timeout (the deadline + 60 s: up to about 7 hours) and then fails.
"""

from __future__ import annotations

import os
from configparser import RawConfigParser
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal

from airflow.providers.common.compat.sdk import conf

from airflow_sagemaker_async.common import metrics
from airflow_sagemaker_async.common.exceptions import SageMakerAsyncInferenceError, SageMakerAsyncInferenceTimeout
from airflow_sagemaker_async.common.outcome import finish
from airflow_sagemaker_async.common.validation import (
    check_non_negative,
    check_poll_schedule,
    check_queue_url,
    is_rendered,
)
from airflow_sagemaker_async.common.watch import (
    DEFAULT_MAX_POLL_INTERVAL,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_PUSH_MAX_POLL_INTERVAL,
    check_sync,
    isoformat,
    utcnow,
    watch_sync,
)
from airflow_sagemaker_async.inference.triggers import SageMakerAsyncInferenceTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_sagemaker_async.common.records import Outcome, WatchEvent
    from airflow_sagemaker_async.common.watch import Watch

__all__ = [
    "CONFIG_SECTION",
    "DEFAULT_MIN_DEFERRAL_SECONDS",
    "DEFERRAL_GRACE_SECONDS",
    "InferenceWaitMixin",
    "default_deferrable",
]

#: The Airflow config section of this package's deployment settings.
CONFIG_SECTION: Final = "sagemaker_async"
#: Seconds after the deferral before a trigger may fire (the fast-event guard), when config says nothing.
DEFAULT_MIN_DEFERRAL_SECONDS: Final = 10.0
#: Extra seconds the scheduler waits past the deadline before failing a deferred task whose trigger
#: never reported (triggerer down): the trigger itself ends the wait at the deadline.
DEFERRAL_GRACE_SECONDS: Final = 60


def default_deferrable() -> bool:
    """
    Return the ``deferrable`` of a task that leaves it out: ``True`` unless the deployment explicitly says otherwise.

    Explicitly means ``[operators] default_deferrable`` set by an environment variable
    (``AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE``, ``..._CMD``, ``..._SECRET``) or in ``airflow.cfg`` (or by
    ``conf.set``) to a value other than Airflow's default, ``False``: Airflow writes ``default_deferrable =
    false`` into every ``airflow.cfg`` it generates, so that value there says nothing. See the module doc.
    """
    variable = "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE"
    from_environment = any(name in os.environ for name in (variable, f"{variable}_CMD", f"{variable}_SECRET"))
    # RawConfigParser.has_option sees only what was read from airflow.cfg or set, not Airflow's defaults.
    in_file = RawConfigParser.has_option(conf, "operators", "default_deferrable")
    if from_environment:
        return conf.getboolean("operators", "default_deferrable")
    if in_file:
        value = conf.getboolean("operators", "default_deferrable")
        if value != _airflow_default_deferrable():  # not what Airflow writes into every new airflow.cfg
            return value
    return True


def _airflow_default_deferrable() -> bool | None:
    """Airflow's own default of ``[operators] default_deferrable`` (``False`` in Airflow 3), ``None`` if unknown."""
    default = conf.get_default_value("operators", "default_deferrable")
    return None if default is None else str(default).strip().lower() in ("true", "t", "1")


def configured(key: str, fallback: float) -> float:
    """Return ``[sagemaker_async] <key>`` from Airflow's config as a float, or ``fallback`` when unset."""
    return conf.getfloat(CONFIG_SECTION, key, fallback=fallback)


def poll_schedule(
    poll_interval: float | None, max_poll_interval: float | None, *, push: bool = False
) -> tuple[float, float]:
    """
    Return the checked ``(poll_interval, max_poll_interval)``, each from config when ``None``.

    :param push: a notification queue wakes the wait: the default ceiling is ``push_max_poll_interval``
        (300 s) instead of ``max_poll_interval`` (30 s).
    :raises SageMakerAsyncParameterError: a value <= 0, or the ceiling below the start.
    """
    start = configured("poll_interval", DEFAULT_POLL_INTERVAL) if poll_interval is None else poll_interval
    ceiling = None
    if max_poll_interval is None:
        ceiling = (
            configured("push_max_poll_interval", DEFAULT_PUSH_MAX_POLL_INTERVAL)
            if push
            else configured("max_poll_interval", DEFAULT_MAX_POLL_INTERVAL)
        )
    if ceiling is not None:
        ceiling = max(ceiling, start)  # a configured ceiling never refuses an explicit poll_interval
    return check_poll_schedule(start, max_poll_interval if ceiling is None else ceiling)


def notification_queue(value: str | None, *, only_rendered: bool) -> str | None:
    """
    Return the checked ``notification_queue_url`` (``None`` and ``""`` mean no queue).

    :param only_rendered: leave a value Airflow will still render unchecked (construction time).
    :raises SageMakerAsyncParameterError: not an SQS queue URL.
    """
    if not value:
        return None
    if only_rendered and not is_rendered(value):
        return value
    return check_queue_url(value)


def min_deferral(value: float | None) -> float:
    """
    Return the checked ``min_deferral_seconds``, from config when ``None``.

    :raises SageMakerAsyncParameterError: a negative value.
    """
    if value is None:
        value = configured("min_deferral_seconds", DEFAULT_MIN_DEFERRAL_SECONDS)
    return check_non_negative(value, "min_deferral_seconds")


class InferenceWaitMixin:
    """
    Wait for one inference and finish it: the code the operator and the sensor share (see the module doc).

    The class using it provides ``deferrable``, ``output_format``, ``max_output_bytes``,
    ``fail_on_model_error``, ``min_deferral_seconds``, the four AWS parameters, ``defer`` and ``log``
    (an ``AwsBaseOperator`` / ``AwsBaseSensor`` with those attributes), and :meth:`_s3_client`.
    """

    deferrable: bool
    output_format: str
    max_output_bytes: int
    fail_on_model_error: bool
    min_deferral_seconds: float
    notification_queue_url: str | None
    max_poll_interval: float
    _default_ceiling: bool
    aws_conn_id: str | None
    region_name: str | None
    verify: bool | str | None
    botocore_config: dict[str, Any] | None
    log: Any
    defer: Any
    #: the outcome of the wait once finished (also when it raised with one), for lineage; ``None`` before.
    last_outcome: Outcome | None = None
    #: the ``kind`` tag of the outcome metrics (:func:`~airflow_sagemaker_async.common.metrics.inference_ended`).
    metrics_kind: ClassVar[Literal["operator", "sensor"]] = "operator"

    def _s3_client(self) -> Any:
        """Return a boto3 S3 client built from the task's AWS parameters."""
        raise NotImplementedError

    def wait_for(self, watch: Watch) -> Outcome:
        """
        Check once on the worker, then defer (or wait on the worker); return the outcome.

        With ``deferrable=True`` this raises Airflow's ``TaskDeferred`` unless the result is already there.

        :raises SageMakerAsyncError: as :func:`~airflow_sagemaker_async.common.outcome.finish` does.
        """
        queue_url = notification_queue(self.notification_queue_url, only_rendered=False)
        if (queue_url is None or not self.deferrable) and self._default_ceiling:
            # No queue after rendering, or a worker-side wait (only the trigger reads the queue): poll at
            # the ceiling of a wait without one.
            watch.set_ceiling(poll_schedule(watch.poll_interval, None)[1])
        client = self._s3_client()
        event = check_sync(watch, client)
        if event is not None:
            return self.finish_event(event)
        if self.deferrable:
            now = utcnow()
            self.defer(
                trigger=SageMakerAsyncInferenceTrigger.continuing(
                    watch,
                    not_before=isoformat(now + timedelta(seconds=self.min_deferral_seconds)),
                    notification_queue_url=queue_url,
                    aws_conn_id=self.aws_conn_id,
                    region_name=self.region_name,
                    verify=self.verify,
                    botocore_config=self.botocore_config,
                ),
                method_name="execute_complete",
                timeout=watch.deadline - now + timedelta(seconds=DEFERRAL_GRACE_SECONDS),
            )
        return self.finish_event(watch_sync(watch, client))

    def execute_complete(self, context: Context, event: WatchEvent) -> Outcome:
        """
        Resume after the trigger's event: download what ``output_format`` asks, return the outcome or raise.

        Idempotent: the same event (events are delivered at least once) gives the same outcome. The
        event carries everything needed (endpoint, submission time), so nothing rides on ``defer`` kwargs.

        :raises SageMakerAsyncInferenceError: the model failed and ``fail_on_model_error`` is True.
        :raises SageMakerAsyncInferenceTimeout: no object by the deadline (expired request?).
        :raises SageMakerAsyncOutputError: the output is too large, gone, or not decodable.
        """
        return self.finish_event(event)

    def finish_event(self, event: WatchEvent) -> Outcome:
        """
        Turn a final watch event into the outcome (or raise), and log it.

        The outcome, also that of an error which carries one, is kept as ``last_outcome`` for lineage.
        """
        try:
            outcome = finish(
                event,
                s3_client=self._s3_client(),
                output_format=self.output_format,
                max_output_bytes=self.max_output_bytes,
                fail_on_model_error=self.fail_on_model_error,
            )
        except (SageMakerAsyncInferenceError, SageMakerAsyncInferenceTimeout) as error:
            self.last_outcome = error.outcome
            metrics.inference_ended(error.outcome, kind=self.metrics_kind)
            raise
        self.last_outcome = outcome
        metrics.inference_ended(outcome, kind=self.metrics_kind)
        self.log.info(
            "Inference %s: %s (completed %s, detected %s after %s checks)",
            outcome["inference_id"],
            outcome["status"],
            outcome["completed_at"],
            outcome["detected_at"],
            event.get("checks"),
        )
        return outcome
