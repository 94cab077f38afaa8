"""
SageMakerInvokeEndpointAsyncBatchOperator: thousands of asynchronous inferences in one task, one manifest.

The worker shell of a batch: checks, the try's batch (resume or a new generation), waves of submissions, the
deferral, the finish. Its S3 state I/O is in :mod:`~airflow_sagemaker_async.batch.state`, the parsing of its
inputs in :mod:`~airflow_sagemaker_async.batch.inputs`, its decisions in :mod:`~airflow_sagemaker_async.batch.core`.
Longer than ~400 lines (about 1,030) for two reasons: the operator's class docstring is its parameter reference
(about 130 lines, with ``__init__`` another 70), and the try's control flow (resume or new generation, the
loop of checks and waves, defer or wait, finish) is one sequence of decisions over one state that reads best
in one place. What has a seam of its own is out: the sends in :mod:`~airflow_sagemaker_async.batch.waves`, the
S3 state in :mod:`~airflow_sagemaker_async.batch.state`, the inputs in :mod:`~airflow_sagemaker_async.batch.inputs`,
the progress record (``progress.json``) in :mod:`~airflow_sagemaker_async.batch.progress`.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from datetime import datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from airflow.sdk.log import mask_secret

from airflow_sagemaker_async.assets.events import check_output_assets, record_batch_events
from airflow_sagemaker_async.batch import state as batch_state
from airflow_sagemaker_async.batch.core import (
    DEFAULT_MAX_IN_FLIGHT,
    MAX_ITEMS,
    BatchNames,
    BatchState,
    Found,
    PendingItem,
    batch_tag,
    low_water_mark,
    reconcile,
    summary_counts,
)
from airflow_sagemaker_async.batch.inputs import BatchInput, as_list, positive_int, records_digest
from airflow_sagemaker_async.batch.progress import WRITE_EVERY_SECONDS, Progress, progress_location
from airflow_sagemaker_async.batch.triggers import SageMakerAsyncBatchInferenceTrigger
from airflow_sagemaker_async.batch.waves import Waves, pending_item
from airflow_sagemaker_async.common import metrics
from airflow_sagemaker_async.common.capacity import check_endpoint_capacity, log_capacity
from airflow_sagemaker_async.common.exceptions import SageMakerAsyncBatchFailed, SageMakerAsyncParameterError
from airflow_sagemaker_async.common.hooks import SageMakerRuntimeHook
from airflow_sagemaker_async.common.layout import join_s3
from airflow_sagemaker_async.common.lineage import LineageRecord, operator_lineage
from airflow_sagemaker_async.common.records import COMPLETED, FAILED, TIMED_OUT
from airflow_sagemaker_async.common.rules import INVOKE_ENDPOINT_ASYNC
from airflow_sagemaker_async.common.validation import (
    check_inline_payload,
    check_input_location,
    check_invoke_fields,
    check_non_negative,
    check_positive,
    parse_s3_uri,
)
from airflow_sagemaker_async.common.watch import PollSchedule, isoformat, utcnow
from airflow_sagemaker_async.inference.waiting import (
    DEFERRAL_GRACE_SECONDS,
    default_deferrable,
    min_deferral,
    notification_queue,
    poll_schedule,
)
from airflow_sagemaker_async.ui.links import PROGRESS_POINTER_KEY, BatchProgressLink

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Context

    from airflow_sagemaker_async.common.records import BatchEvent, BatchSummary

__all__ = ["SageMakerInvokeEndpointAsyncBatchOperator"]

#: A wave starts once ``max_in_flight // WAVE_DIVISOR`` places are free (at least 1): 50 at the default 1,000.
WAVE_DIVISOR = 20
#: Seconds between two checks on the worker while waves go out (``poll_interval`` when it is shorter).
STREAM_CHECK_SECONDS = 2.0
#: Submissions in flight at once from the worker (threads), by default.
DEFAULT_SUBMIT_CONCURRENCY = 8
#: botocore retries when the task's botocore_config says nothing: adaptive mode rides out throttling by
#: slowing the client down instead of failing.
DEFAULT_RETRIES = {"mode": "adaptive", "max_attempts": 10}


class SageMakerInvokeEndpointAsyncBatchOperator(AwsBaseOperator[SageMakerRuntimeHook]):
    """
    Score many inputs with one task: submit them in waves with InvokeEndpointAsync, watch by LIST, write a manifest.

    The worker keeps up to ``max_in_flight`` items in flight (``submit_concurrency`` threads, botocore's adaptive
    retries): waves go out in the background while it checks S3 and records what ended, the next wave as soon as
    a twentieth of ``max_in_flight`` is free. When nothing is left to send for ``min_deferral_seconds`` (a slow
    model), it defers to
    :class:`~airflow_sagemaker_async.batch.triggers.SageMakerAsyncBatchInferenceTrigger`, which resumes the
    task once at most a quarter of ``max_in_flight`` are still in flight; the task records what ended,
    submits the next wave, and so on until every item has ended. Names, S3 layout and state are described
    in :mod:`airflow_sagemaker_async.batch.core`: nothing that grows with the number of inputs goes into the
    trigger's kwargs or XCom.

    The task returns a :class:`~airflow_sagemaker_async.common.records.BatchSummary` (counts, manifest location);
    the manifest (S3, JSON lines) holds one :class:`~airflow_sagemaker_async.common.records.ManifestLine` per input.

    **Retries.** The batch tag, and so every InferenceId, Filename and the state location, is the same for
    every try of a task instance. The first try pins its inputs in S3 (``inputs.jsonl``: the listed or given
    locations, or a digest of ``input_records``) before it submits anything; every later try uses the pinned
    list, whenever the earlier one died, so item ``i`` and its result always belong to the same input (a
    changed ``input_prefix`` is not listed again; changed ``input_records`` are refused). A retry reads the
    state, finds by LIST the results that already exist, and submits only the missing items; items that were
    in flight (submitted, not yet ended) when the earlier try died are watched, not re-sent, unless the earlier
    try died before it recorded them and they have not ended yet (then they may run twice: at-least-once, as
    for the single operator). ``invocations`` in the summary counts them. Items an earlier try recorded
    ``TimedOut`` are looked up again by LIST first: a result that arrived since turns them ``Completed`` /
    ``Failed`` in a rewritten manifest and summary. ``Failed`` items are not looked up nor sent again (a
    failure object is the model's answer).

    **Clears.** A try that follows a *successful* try of the same task instance (Airflow counts a clear as a
    new try) scores the inputs again as a new batch (a new tag, so new names, state and pinned inputs; the
    earlier batch's results and manifest stay), unless ``rescore_on_clear=False``: then it returns the ended
    batch's summary (after the ``TimedOut`` look-up). A retry of that new batch goes on with it.

    Exactly one source of inputs:

    :param input_locations: S3 / https URIs of payloads already uploaded, one item each (templated, e.g. from
        an upstream task's XCom; a rendered str is read as a JSON list, else as a Python list literal, the
        text Airflow's default rendering makes of a list).
    :param input_prefix: ``s3://bucket/prefix``: every object under it (paginated LIST at the first try,
        pinned in the batch state so retries see the same list; keys ending in ``/`` skipped) (templated).
    :param input_records: JSON-serialisable payloads (``str`` and ``bytes`` sent as they are), one item each
        (templated): sent inline when at most 128,000 bytes once serialised, else uploaded to
        ``input_s3_prefix`` under ``<prefix>/<batch tag>/<item>.input``.

    The request fields, applied to every item (as in
    :class:`~airflow_sagemaker_async.inference.operators.SageMakerInvokeEndpointAsyncOperator`):

    :param endpoint_name: endpoint with an AsyncInferenceConfig (templated).
    :param input_s3_prefix: ``s3://bucket/prefix`` for ``input_records`` over 128,000 bytes (templated).
    :param content_type: MIME type of the payloads (templated).
    :param accept: MIME type wanted for the outputs (templated).
    :param custom_attributes: forwarded verbatim to the model (templated, sensitive: never logged).
    :param s3_output_path_extension: path appended to the endpoint's S3OutputPath (templated); default
        ``airflow-batch/<batch tag>``, a directory of the batch's own.
    :param request_ttl_seconds: 60-21600, SageMaker's default 21600 (templated).
    :param invocation_timeout_seconds: 1-3600, SageMaker's default 900 (templated).

    How it runs:

    :param max_in_flight: items submitted and not yet ended at most, default 1,000.
    :param submit_concurrency: threads submitting at once, default 8.
    :param max_failed_items: failed or timed-out items tolerated, default 0.
    :param max_failed_fraction: fraction (0-1) of failed or timed-out items tolerated, default 0. The task
        fails only when both limits are exceeded, after every item has ended, the manifest written.
    :param manifest_location: S3 URI of the manifest (templated); default
        ``<output dir>/<batch tag>.batch/manifest.jsonl``.
    :param max_wait_seconds: seconds from an item's submission until it counts as ``TimedOut`` (templated);
        default its TTL + invocation timeout + 600 s.
    :param deferrable: wait in the triggerer; default ``True``, unless the deployment explicitly sets
        ``[operators] default_deferrable`` (see :func:`~airflow_sagemaker_async.inference.waiting.default_deferrable`).
        ``False`` waits on the worker.
    :param poll_interval: seconds before the first re-check; default ``[sagemaker_async] poll_interval``, else 2.
    :param max_poll_interval: ceiling of the interval, seconds; default ``[sagemaker_async] max_poll_interval``,
        else 30.
    :param min_deferral_seconds: the trigger fires no sooner than this after a deferral; default
        ``[sagemaker_async] min_deferral_seconds``, else 10.
    :param notification_queue_url: URL of an SQS queue subscribed to the endpoint's SNS success and error
        topics (templated): results wake the trigger within about a second, S3 confirms them, and safety
        polling slows to ``[sagemaker_async] push_max_poll_interval`` (300 s). Default ``None`` (polling).
    :param rescore_on_clear: a try after a successful try (a clear) scores the inputs again, default ``True``;
        ``False`` returns the ended batch's summary instead.
    :param aws_conn_id: Airflow AWS connection, default ``aws_default``.
    :param region_name: AWS region, default from the connection.
    :param verify: whether / how to verify SSL certificates, default from the connection.
    :param botocore_config: botocore ``Config`` parameters as a dict; submissions default to retries
        ``{"mode": "adaptive", "max_attempts": 10}`` and a connection pool as large as ``submit_concurrency``.

    **Assets.** Each ``s3://`` asset of ``outlets`` covering the output prefix, failure prefix or manifest gets the
    batch's figures (counts by status, manifest location, tag) in its event's ``extra`` when the batch ends within
    its failure policy; a non-S3 asset in ``outlets`` is a parameter error (see
    :mod:`airflow_sagemaker_async.assets.events`).

    **Progress.** The worker logs each wave's figures and keeps ``<output dir>/<batch tag>.batch/progress.json``
    (counts by status, rate, ETA, a bounded time series, the first failures; see
    :mod:`airflow_sagemaker_async.batch.progress`), drawn by the task's "Batch progress" extra link while it runs.

    Needs, beyond InvokeEndpointAsync: ``sagemaker:DescribeEndpoint`` and ``sagemaker:DescribeEndpointConfig``
    (to find the endpoint's output and failure paths before the first request), ``s3:ListBucket`` on the
    output buckets, ``s3:GetObject`` / ``s3:PutObject`` under the output path.

    :raises SageMakerAsyncParameterError: a bad parameter or input, before any request of any kind (none, or
        more than one source of inputs; no inputs; a value that is not a list; an input that breaks a rule;
        ``max_in_flight`` / ``submit_concurrency`` not a whole number >= 1; ``filename`` given); for
        ``input_prefix``, a listed key that breaks a rule (after the LIST); ``input_records`` that differ from
        those pinned by an earlier try.
    :raises SageMakerAsyncBatchFailed: more failures than the policy allows (after the manifest is written).
    :raises botocore.exceptions.ClientError: InvokeEndpointAsync still failing after botocore's retries
        (the items sent so far are recorded; a retry of the task goes on from there).

    .. seealso::
        - https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_runtime_InvokeEndpointAsync.html
        - :external+boto3:py:meth:`S3.Client.list_objects_v2`
    """

    aws_hook_class = SageMakerRuntimeHook
    template_fields: Sequence[str] = aws_template_fields(
        "endpoint_name",
        "input_locations",
        "input_prefix",
        "input_records",
        "input_s3_prefix",
        "content_type",
        "accept",
        "custom_attributes",
        "s3_output_path_extension",
        "request_ttl_seconds",
        "invocation_timeout_seconds",
        "manifest_location",
        "max_wait_seconds",
        "notification_queue_url",
    )
    template_fields_renderers: ClassVar[dict[str, str]] = {"input_records": "json", "input_locations": "json"}
    ui_color = "#c6e2e9"
    operator_extra_links = (BatchProgressLink(),)
    #: what this process knows of the try (none of it is serialised): the DescribeEndpoint answer read by
    #: ``_result_dirs``, the progress being kept, when it was last written (unix seconds).
    _endpoint_description: dict[str, Any] | None = None
    _progress: Progress | None = None
    _progress_written: float = 0.0

    def __init__(
        self,
        *,
        endpoint_name: str,
        input_locations: Sequence[str] | str | None = None,
        input_prefix: str | None = None,
        input_records: Sequence[Any] | str | None = None,
        input_s3_prefix: str | None = None,
        content_type: str | None = None,
        accept: str | None = None,
        custom_attributes: str | None = None,
        s3_output_path_extension: str | None = None,
        request_ttl_seconds: int | None = None,
        invocation_timeout_seconds: int | None = None,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        submit_concurrency: int = DEFAULT_SUBMIT_CONCURRENCY,
        max_failed_items: int = 0,
        max_failed_fraction: float = 0.0,
        manifest_location: str | None = None,
        max_wait_seconds: float | None = None,
        deferrable: bool | None = None,
        poll_interval: float | None = None,
        max_poll_interval: float | None = None,
        min_deferral_seconds: float | None = None,
        notification_queue_url: str | None = None,
        rescore_on_clear: bool = True,
        **kwargs: Any,
    ) -> None:
        if "filename" in kwargs:
            raise SageMakerAsyncParameterError(
                "filename cannot be given to a batch: each item gets its own Filename (<batch tag>-<item>.out) "
                "so that the batch's results can be listed. Leave it out.",
                parameter="filename",
            )
        super().__init__(**kwargs)
        check_output_assets(self.outlets)
        self.endpoint_name = endpoint_name
        self.input_locations = input_locations
        self.input_prefix = input_prefix
        self.input_records = input_records
        self.input_s3_prefix = input_s3_prefix
        self.content_type = content_type
        self.accept = accept
        self.custom_attributes = custom_attributes
        self.s3_output_path_extension = s3_output_path_extension
        self.request_ttl_seconds = request_ttl_seconds
        self.invocation_timeout_seconds = invocation_timeout_seconds
        self.max_in_flight = positive_int(max_in_flight, "max_in_flight", "items", example=DEFAULT_MAX_IN_FLIGHT)
        self.submit_concurrency = positive_int(
            submit_concurrency, "submit_concurrency", "threads", example=DEFAULT_SUBMIT_CONCURRENCY
        )
        self.max_failed_items = int(check_non_negative(max_failed_items, "max_failed_items", unit="items"))
        self.max_failed_fraction = check_non_negative(max_failed_fraction, "max_failed_fraction", unit="parts of 1")
        if self.max_failed_fraction > 1:
            raise SageMakerAsyncParameterError(
                f"max_failed_fraction={max_failed_fraction!r} is invalid: a fraction lies from 0 to 1. "
                "Pass e.g. 0.05 to tolerate 5 % failed items.",
                parameter="max_failed_fraction",
            )
        self.manifest_location = manifest_location
        self.max_wait_seconds = max_wait_seconds
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.notification_queue_url = notification_queue(notification_queue_url, only_rendered=True)
        self.poll_interval, self.max_poll_interval = poll_schedule(
            poll_interval, max_poll_interval, push=self.notification_queue_url is not None
        )
        self.min_deferral_seconds = min_deferral(min_deferral_seconds)
        self.rescore_on_clear = bool(rescore_on_clear)
        self._check_parameters(only_rendered=True)

    # -- parameters and inputs -------------------------------------------------------------------------

    def _check_parameters(self, *, only_rendered: bool) -> dict[str, Any]:
        fields = check_invoke_fields(
            {
                "endpoint_name": self.endpoint_name,
                "content_type": self.content_type,
                "accept": self.accept,
                "custom_attributes": self.custom_attributes,
                "s3_output_path_extension": self.s3_output_path_extension,
                "request_ttl_seconds": self.request_ttl_seconds,
                "invocation_timeout_seconds": self.invocation_timeout_seconds,
            },
            only_rendered=only_rendered,
        )
        given = [
            name for name in ("input_locations", "input_prefix", "input_records") if getattr(self, name) is not None
        ]
        if len(given) != 1:
            raise SageMakerAsyncParameterError(
                "Exactly one of input_locations, input_prefix and input_records must be given, got "
                f"{', '.join(given) or 'none'}. Pass a list of S3 URIs, an S3 prefix to list, or a list of payloads.",
                parameter="input_locations" if not given else given[-1],
            )
        if not only_rendered:
            for name in ("input_prefix", "input_s3_prefix", "manifest_location"):
                if (value := getattr(self, name)) is not None:
                    parse_s3_uri(value, name)
            if self.max_wait_seconds is not None:
                fields["max_wait_seconds"] = check_positive(self.max_wait_seconds, "max_wait_seconds")
            fields["notification_queue_url"] = notification_queue(self.notification_queue_url, only_rendered=False)
        return fields

    def render_template_fields(self, context: Context, jinja_env: Any = None) -> None:
        """Render the templated fields, then mask ``custom_attributes`` (sensitive in the service model)."""
        super().render_template_fields(context, jinja_env)
        if isinstance(self.custom_attributes, str) and self.custom_attributes:
            mask_secret(self.custom_attributes)

    def _s3(self) -> Any:
        return S3Hook(**self._hook_parameters).conn

    @cached_property
    def _submitter(self) -> SageMakerRuntimeHook:
        """
        Return the runtime hook that submits.

        Adaptive retries and a pool for every submitting thread unless ``botocore_config`` says otherwise; the
        S3 hooks and the trigger keep ``botocore_config`` as given (so the trigger shares the event loop's S3
        client with the other triggers of the connection).
        """
        config = {"retries": dict(DEFAULT_RETRIES), "max_pool_connections": max(10, self.submit_concurrency)}
        return SageMakerRuntimeHook(**{**self._hook_parameters, "config": {**config, **(self.botocore_config or {})}})

    def _given_inputs(self, *, check: bool) -> list[BatchInput] | None:
        """
        Return the inputs given as parameters (``input_locations`` / ``input_records``); ``None`` for ``input_prefix``.

        No request: this runs before any, so a bad list or item never reaches S3, the control plane or the runtime.

        :param check: check every input (each try's ``execute``); a resume skips it.
        :raises SageMakerAsyncParameterError: no inputs, too many, or an input that breaks a rule.
        """
        content_type = self.content_type
        if self.input_records is not None:
            inputs = [BatchInput(None, record, content_type) for record in as_list(self.input_records, "input_records")]
            for index, item in enumerate(inputs if check else ()):
                try:
                    payload, _ = item.payload()
                except SageMakerAsyncParameterError as error:
                    raise SageMakerAsyncParameterError(
                        f"input_records[{index}]: {error}", parameter="input_records"
                    ) from error
                if payload is not None:
                    check_inline_payload(len(payload), self.input_s3_prefix, f"input_records[{index}]", "input_records")
        elif self.input_locations is not None:
            inputs = self._locations(as_list(self.input_locations, "input_locations"), check=check)
        else:
            return None
        return self._counted(inputs)

    def _locations(self, locations: list[Any], *, check: bool, first: int = 0) -> list[BatchInput]:
        name = "input_locations" if self.input_locations is not None else "input_prefix"
        for index, location in enumerate(locations if check else (), start=first):
            try:
                check_input_location(location)
            except SageMakerAsyncParameterError as error:
                raise SageMakerAsyncParameterError(f"{name}[{index}]: {error}", parameter=name) from error
        return [BatchInput(location, None, self.content_type) for location in locations]

    def _counted(self, inputs: list[BatchInput]) -> list[BatchInput]:
        if not inputs:
            source = (
                "input_prefix"
                if self.input_prefix is not None
                else "input_records"
                if self.input_records is not None
                else "input_locations"
            )
            raise SageMakerAsyncParameterError(
                f"{source} holds no inputs: a batch needs at least one item. Check the upstream task or the "
                "prefix; skip this task (e.g. a ShortCircuitOperator) when there is nothing to score.",
                parameter=source,
            )
        if len(inputs) > MAX_ITEMS:
            raise _too_many(len(inputs))
        return inputs

    def _pinned_inputs(
        self, s3: Any, names: BatchNames, given: list[BatchInput] | None, *, compare: bool
    ) -> Sequence[BatchInput]:
        """
        Return the batch's inputs as pinned by its first try; pin them first if no try did yet.

        The pinned list is the only truth of every try, whenever an earlier one died: item ``i`` is the ``i``-th
        pinned input, so a result found in S3 is always paired with the input its inference read. It is written
        before anything is submitted: locations in chunks of 1,000 (a prefix is listed page by page, once, and
        its keys checked) and then the index that makes the pin (:func:`.state.pin_locations`); ``input_records``
        as a digest. A resume reads the index only, then the chunks of the items it handles
        (:class:`.state.PinnedInputs`).

        :param compare: compare the given inputs with the pin (a new try); a resume of the same try does not.
        :raises SageMakerAsyncParameterError: ``input_records`` changed since they were pinned; a listed key
            breaks a rule; the prefix holds no inputs, or too many.
        """
        if self.input_records is not None:
            assert given is not None
            pin = join_s3(names.state_dir(), "inputs.jsonl")
            text = batch_state.get_text_or_none(s3, pin)
            self._pinned_now = text is None
            if text is not None and not compare:
                return given
            digest = records_digest(given)
            if text is not None and json.loads(text) != digest:
                raise SageMakerAsyncParameterError(
                    f"input_records changed between tries of batch {names.tag}: {len(given)} records now, "
                    f"{json.loads(text).get('count')} pinned by the first try (compared by SHA-256). Results already "
                    "in S3 belong to the pinned records, so a retry cannot go on with others. Restore the records, "
                    f"or delete {names.state_dir()}/ to score the new ones from scratch.",
                    parameter="input_records",
                )
            if text is None:
                batch_state.put(s3, pin, json.dumps(digest).encode())
            return given
        pinned = batch_state.read_pin(s3, names, content_type=self.content_type)
        self._pinned_now = pinned is None
        if pinned is not None:
            if compare and given is not None and self._differs(given, pinned):
                self.log.warning(
                    "Batch %s: input_locations (%d items) differ from the %d pinned by the first try; the batch goes "
                    "on with the pinned ones. Delete %s/ to score the new list from scratch.",
                    names.tag,
                    len(given),
                    len(pinned),
                    names.state_dir(),
                )
            return pinned
        if given is not None:
            return batch_state.pin_locations(
                s3, names, (str(item.location) for item in given), content_type=self.content_type
            )

        def check(index: int, location: str) -> None:
            if index >= MAX_ITEMS:
                raise _too_many(index + 1)
            self._locations([location], check=True, first=index)

        started = time.monotonic()
        listed = batch_state.iter_listed_uris(s3, self.input_prefix or "")
        pinned = batch_state.pin_locations(s3, names, listed, content_type=self.content_type, check=check)
        if not len(pinned):
            self._counted([])  # raises: no inputs
        self.log.info(
            "Batch %s: listed and pinned %d inputs of %s in %.1f s",
            names.tag,
            len(pinned),
            self.input_prefix,
            time.monotonic() - started,
        )
        return pinned

    @staticmethod
    def _differs(given: list[BatchInput], pinned: Sequence[BatchInput]) -> bool:
        if isinstance(pinned, batch_state.PinnedInputs):
            locations = [str(item.location) for item in given]
            return len(locations) != len(pinned) or batch_state.locations_digest(locations) != pinned.digest
        return [i.location for i in given] != [i.location for i in pinned]

    # -- execute / resume ------------------------------------------------------------------------------

    def execute(self, context: Context) -> BatchSummary:
        """
        Validate everything, then submit the first wave (or resume an earlier try's batch) and wait.

        Every parameter and every given input is checked before the first request of any kind. A new try
        resumes the batch of the earlier tries (pinned inputs, results found by LIST, ``TimedOut`` items looked
        up again); a try after a successful one (a clear) scores the inputs again as a new batch, unless
        ``rescore_on_clear=False``.

        :return: the :class:`~airflow_sagemaker_async.common.records.BatchSummary`.
        """
        fields = self._check_parameters(only_rendered=False)
        given = self._given_inputs(check=True)
        ti = context["ti"]
        self._try_number = int(getattr(ti, "try_number", None) or 1)
        map_index = ti.map_index if ti.map_index is not None else -1
        s3 = self._s3()
        result_dirs = self._result_dirs(fields)
        generation = 1
        while True:
            tag = batch_tag(ti.dag_id, ti.task_id, ti.run_id, map_index, generation)
            names = self._names(fields, tag, ti, result_dirs)
            state = batch_state.load_state(s3, names)
            if not (
                self.rescore_on_clear
                and state is not None
                and state.succeeded_try is not None
                and state.succeeded_try < self._try_number
            ):
                break
            self.log.info(
                "Batch %s ended successfully in try %d; try %d (a clear) scores the inputs again as a new batch "
                "(rescore_on_clear=True).",
                tag,
                state.succeeded_try,
                self._try_number,
            )
            generation += 1
        self._push_progress_pointer(ti, names, map_index)
        inputs = self._pinned_inputs(s3, names, given, compare=True)
        if state is None:
            state = BatchState(
                tag=tag,
                endpoint_name=fields["endpoint_name"],
                total=len(inputs),
                output_dir=names.output_dir,
                failure_dir=names.failure_dir,
                started_at=isoformat(utcnow()),
                generation=generation,
                timed_out=0,
                # pinned by this try: nothing was sent yet; pinned by an earlier try that died before its first
                # state: it may have sent a wave of any size, so every item is looked up before it is sent
                recheck_until=0 if self._pinned_now else None,
                endpoint_instances_at_submit=self._instances_at_submit(fields),
            )
            self.log.info(
                "Batch %s: %d items for endpoint %s; results under %s",
                tag,
                len(inputs),
                fields["endpoint_name"],
                names.output_dir,
            )
        else:
            self.log.info(
                "Batch %s: resuming an earlier try (%d of %d submitted, %d in flight)",
                tag,
                state.next_index,
                state.total,
                len(state.pending),
            )
            if state.total != len(inputs):
                raise RuntimeError(
                    f"Batch {tag}: the state holds {state.total} items but {len(inputs)} inputs are pinned; the state "
                    f"under {names.state_dir()} is inconsistent. Please report this."
                )
            self._recheck_timed_out(s3, names, state)
            if state.sent_until is None:
                state.recheck_until = None  # a state of an older version: look up every item, as it did
            else:  # the earlier try sent at most one wave (<= its max_in_flight) past its last state
                window = max(self.max_in_flight, state.max_in_flight or 0)
                state.recheck_until = max(state.recheck_until or 0, state.sent_until + window)
        return self._advance(s3, names, state, inputs, fields)

    def execute_complete(self, context: Context, event: BatchEvent) -> BatchSummary:
        """Resume after the trigger's event: record what ended, submit the next wave, defer again or finish."""
        fields = self._check_parameters(only_rendered=False)
        ti = context["ti"]
        self._try_number = int(getattr(ti, "try_number", None) or 1)
        s3 = self._s3()
        state = BatchState.from_json(batch_state.get_text(s3, event["state_location"]))
        names = BatchNames.of(state.tag, ti.dag_id, ti.task_id, state.output_dir, state.failure_dir)
        self.log.info(
            "Batch %s: the trigger reports %s (%d ended, %d in flight)",
            state.tag,
            event["status"],
            event["ended"],
            event["pending"],
        )
        given = self._given_inputs(check=False) if self.input_records is not None else None
        inputs = self._pinned_inputs(s3, names, given, compare=False)
        return self._advance(s3, names, state, inputs, fields)

    def _result_dirs(self, fields: dict[str, Any]) -> tuple[str, str | None]:
        """Return the endpoint's ``(S3OutputPath, S3FailurePath or None)``: DescribeEndpoint, DescribeEndpointConfig."""
        sagemaker: Any = AwsBaseHook(client_type="sagemaker", **self._hook_parameters).conn
        description = sagemaker.describe_endpoint(EndpointName=fields["endpoint_name"])
        self._endpoint_description = description  # its instance count: endpoint_instances_at_submit
        config_name = description["EndpointConfigName"]
        config = sagemaker.describe_endpoint_config(EndpointConfigName=config_name)
        output_config = (config.get("AsyncInferenceConfig") or {}).get("OutputConfig")
        if not output_config:
            raise SageMakerAsyncParameterError(
                f"endpoint_name={fields['endpoint_name']!r} is invalid: its endpoint config {config_name} has no "
                "AsyncInferenceConfig, so it does not take asynchronous inferences. Use an async endpoint.",
                parameter="endpoint_name",
            )
        failure_path = output_config.get("S3FailurePath")
        if not failure_path:
            self.log.warning(
                "Endpoint %s has no S3FailurePath: a model error shows only as TimedOut at the item's deadline.",
                fields["endpoint_name"],
            )
        return output_config["S3OutputPath"], failure_path or None

    def _instances_at_submit(self, fields: dict[str, Any]) -> int | None:
        """Return the instance count read by :meth:`_result_dirs` (``None`` if it read none); explain a cold start."""
        if self._endpoint_description is None:
            return None
        capacity = check_endpoint_capacity(
            fields["endpoint_name"], self._hook_parameters, description=self._endpoint_description
        )
        log_capacity(self.log, capacity, request_ttl_seconds=fields.get("request_ttl_seconds"))
        return capacity.instances

    @staticmethod
    def _names(fields: dict[str, Any], tag: str, ti: Any, result_dirs: tuple[str, str | None]) -> BatchNames:
        output_path, failure_path = result_dirs
        extension = fields.get("s3_output_path_extension") or f"airflow-batch/{tag}"
        return BatchNames.of(
            tag,
            ti.dag_id,
            ti.task_id,
            join_s3(output_path, extension),
            join_s3(failure_path, extension) if failure_path else None,
        )

    def _recheck_timed_out(self, s3: Any, names: BatchNames, state: BatchState) -> None:
        """
        Look up by LIST (HEAD for odd failure keys) the items an earlier try recorded ``TimedOut``.

        A result that arrived since turns the item ``Completed`` / ``Failed`` (a new ended part, which wins in
        the manifest). ``Failed`` items are not looked up: a failure object is the model's answer.
        """
        if state.timed_out == 0:
            return  # counted since the batch began: no part needs reading
        timed_out = [line for line in batch_state.ended_lines(s3, names).values() if line["status"] == TIMED_OUT]
        if not timed_out:
            return
        items = [
            PendingItem(
                index=line["item"],
                inference_id=line["inference_id"],
                input_location=line["input_location"],
                output_location=line["output_location"],
                failure_location=line["failure_location"],
                submitted_at=line["submitted_at"],
                deadline=line["submitted_at"],
                head_failure=not names.failure_follows_filename(line["item"], line["failure_location"]),
            )
            for line in timed_out
        ]
        found = batch_state.find(s3, names, items)
        ended = [(item, found[item.index]) for item in items if item.index in found]
        self.log.info(
            "Batch %s: %d items ended TimedOut in an earlier try; %d of them have a result now",
            state.tag,
            len(items),
            len(ended),
        )
        if ended:
            if state.timed_out is not None:
                state.timed_out = max(0, state.timed_out - len(ended))
            lines = batch_state.manifest_lines(s3, ended, self.submit_concurrency)
            self._write_ended_part(s3, names, state, lines, replacing=TIMED_OUT)

    def _advance(
        self, s3: Any, names: BatchNames, state: BatchState, inputs: Sequence[BatchInput], fields: dict[str, Any]
    ) -> BatchSummary:
        """
        Submit, record and check until the batch ends, or defer when results are slow.

        Waves go out in the background (:class:`~airflow_sagemaker_async.batch.waves.Waves`) while this loop
        checks S3 every ``poll_interval`` (at most 2 s), writes what ended and the state, and hands out the next
        wave as soon as ``max(1, max_in_flight // 20)`` places are free (items being sent count as in flight):
        with a fast model the threads never wait on the bookkeeping, and the task never defers. Once nothing is
        being sent, no wave could start and fewer than a wave's worth of items ended for ``min_deferral_seconds``
        (a slow model), the task defers (the trigger resumes it at the low-water mark) or, not deferrable, waits
        here.
        """
        low = low_water_mark(self.max_in_flight)
        wave_min = max(1, self.max_in_flight // WAVE_DIVISOR)
        cadence = min(self.poll_interval, STREAM_CHECK_SECONDS)
        state.max_in_flight = self.max_in_flight
        waves = Waves(
            self._submitter,
            s3,
            names,
            state,
            inputs.__getitem__,
            fields,
            self.submit_concurrency,
            self.input_s3_prefix,
            self.log,
        )
        schedule: PollSchedule | None = None
        idle_since, ended_since_idle = time.monotonic(), 0
        try:
            while True:
                sent, refused = waves.harvest()
                metrics.submitted("batch", endpoint_name=state.endpoint_name, count=sent)
                wrote = False
                if refused:
                    wrote = self._record_refused(s3, names, state, refused)
                in_flight = len(state.pending)
                wrote = self._record(s3, names, state) or wrote
                ended_since_idle += in_flight - len(state.pending)
                if ended_since_idle >= wave_min:  # results still flow (the last wave's tail): stay
                    idle_since, ended_since_idle = time.monotonic(), 0
                if sent and not wrote:
                    batch_state.put(s3, names.state_location(), state.to_json().encode())
                self._write_progress(s3, names, state, in_flight=len(state.pending) + waves.in_progress)
                if waves.error is not None:
                    if waves.busy:
                        time.sleep(cadence)
                        continue
                    batch_state.put(s3, names.state_location(), state.to_json().encode())
                    self.log.error(
                        "Batch %s: InvokeEndpointAsync still failing after botocore's retries. A retry of this task "
                        "goes on from item %d.",
                        state.tag,
                        state.next_index,
                    )
                    raise waves.error
                if state.done and not waves.busy:
                    return self._finish(s3, names, state)
                room = self.max_in_flight - len(state.pending) - waves.in_progress
                left = state.total - waves.cursor
                if left > 0 and room >= min(wave_min, left):
                    self._start_wave(s3, names, state, waves, inputs=inputs, fields=fields, room=room)
                    idle_since, ended_since_idle = time.monotonic(), 0
                    time.sleep(cadence)
                    continue
                if waves.busy or time.monotonic() - idle_since < self.min_deferral_seconds:
                    # the fast-event guard's worker check: a wave that reaches the mark soon goes on here
                    if waves.busy:
                        idle_since = time.monotonic()
                    time.sleep(cadence)
                    continue
                waves.close()
                low_water = low if waves.cursor < state.total else 0
                schedule = self._defer_or_wait(s3, names, state, fields, low_water=low_water, schedule=schedule)
        finally:
            waves.close()  # queued sends are cancelled, running ones end (an error or a kill: at-least-once)

    def _defer_or_wait(
        self,
        s3: Any,
        names: BatchNames,
        state: BatchState,
        fields: dict[str, Any],
        *,
        low_water: int,
        schedule: PollSchedule | None,
    ) -> PollSchedule:
        """Defer to the trigger until ``low_water`` (deferrable), else write the state and sleep one poll delay."""
        earliest = state.earliest_deadline()
        deadline = utcnow() if earliest is None else _parse(earliest)
        self._write_progress(s3, names, state, in_flight=len(state.pending), force=True)
        self.log.info("Batch %s: %s; waiting for results", state.tag, self._progress_of(s3, names, state).figures())
        if self.deferrable:
            state.deferrals += 1
            batch_state.put(s3, names.state_location(), state.to_json().encode())
            now = utcnow()
            self.defer(
                trigger=SageMakerAsyncBatchInferenceTrigger(
                    batch_tag=state.tag,
                    state_location=names.state_location(),
                    output_dir=names.output_dir,
                    failure_dir=names.failure_dir,
                    low_water=low_water,
                    not_before=isoformat(now + timedelta(seconds=self.min_deferral_seconds)),
                    poll_interval=self.poll_interval,
                    max_poll_interval=self.max_poll_interval,
                    notification_queue_url=fields.get("notification_queue_url"),
                    aws_conn_id=self.aws_conn_id,
                    region_name=self.region_name,
                    verify=self.verify,
                    botocore_config=self.botocore_config,
                ),
                method_name="execute_complete",
                timeout=max(deadline - now, timedelta(0)) + timedelta(seconds=DEFERRAL_GRACE_SECONDS),
            )
        batch_state.put(s3, names.state_location(), state.to_json().encode())
        if schedule is None or schedule.deadline != deadline:
            schedule = PollSchedule(names.state_location(), deadline, self.poll_interval, self.max_poll_interval)
        delay = schedule.next_delay()
        if delay:
            time.sleep(delay)
        return schedule

    def _start_wave(
        self,
        s3: Any,
        names: BatchNames,
        state: BatchState,
        waves: Waves,
        *,
        inputs: Sequence[BatchInput],
        fields: dict[str, Any],
        room: int,
    ) -> None:
        """
        Hand the next ``room`` items to the threads; look up first those an earlier try may have sent.

        Only items below ``state.recheck_until`` (set by a new try from the earlier try's ``sent_until``) are
        looked up by LIST: above it, no try sent anything, so a fresh wave costs no request before its sends.
        """
        in_flight = {item.index for item in state.pending}
        candidates: list[int] = []
        for index in range(waves.cursor, state.total):
            if len(candidates) >= room:
                break
            if index not in in_flight:
                candidates.append(index)
        until = state.total if state.recheck_until is None else state.recheck_until
        looked_up = [index for index in candidates if index < until]
        already = batch_state.find(s3, names, looked_up) if looked_up else {}
        if already:
            self._record_found_earlier(s3, names, state, inputs=inputs, fields=fields, already=already)
        waves.cursor = max(waves.cursor, candidates[-1] + 1) if candidates else waves.cursor
        wave = [index for index in candidates if index not in already]
        if wave:
            progress = self._progress_of(s3, names, state)
            self.log.info(
                "Batch %s: wave of %d items from item %d; %s", state.tag, len(wave), wave[0], progress.figures()
            )
        waves.start(wave)
        if not waves.busy:  # every candidate had ended in an earlier try
            waves.harvest()

    def _record_refused(self, s3: Any, names: BatchNames, state: BatchState, refused: list[Any]) -> bool:
        """Write the items InvokeEndpointAsync refused as an ended part (``Failed``); count them."""
        self._write_ended_part(s3, names, state, refused)
        metrics.batch_items_ended(summary_counts(refused), endpoint_name=state.endpoint_name)
        return True

    def _record(self, s3: Any, names: BatchNames, state: BatchState) -> bool:
        """Move the items whose result exists (or whose deadline passed) to an ended part; tell if one was written."""
        if not state.pending:
            return False
        ended, state.pending = reconcile(state.pending, batch_state.find(s3, names, state.pending), utcnow())
        if not ended:
            return False
        lines = batch_state.manifest_lines(s3, ended, self.submit_concurrency)
        if state.timed_out is not None:
            state.timed_out += sum(found is None for _, found in ended)
        self._write_ended_part(s3, names, state, lines)
        metrics.batch_items_ended(summary_counts(lines), endpoint_name=state.endpoint_name)
        return True

    def _record_found_earlier(
        self,
        s3: Any,
        names: BatchNames,
        state: BatchState,
        *,
        inputs: Sequence[BatchInput],
        fields: dict[str, Any],
        already: dict[int, Found],
    ) -> None:
        """Record items whose result an earlier try left in S3, without sending them again."""
        ended: list[tuple[PendingItem, Found | None]] = []
        for index, found in sorted(already.items()):
            moment = _parse(found.completed_at) if found.completed_at else utcnow()
            item = pending_item(names, index, location=inputs[index].location, submitted=moment, fields=fields)
            ended.append((item, found))
        lines = batch_state.manifest_lines(s3, ended, self.submit_concurrency)
        self._write_ended_part(s3, names, state, lines)
        state.resumed += len(ended)
        self.log.info("Batch %s: %d items already ended in S3 (an earlier try); not sent again", state.tag, len(ended))

    def _finish(self, s3: Any, names: BatchNames, state: BatchState) -> BatchSummary:
        """
        Write the manifest (every item once, sorted), return the summary or raise per the failure policy.

        A success is recorded in the state (``succeeded_try``), so a later try of the task, a clear, re-scores.
        """
        lines = batch_state.ended_texts(s3, names)
        if len(lines) != state.total:
            missing = sorted(set(range(state.total)) - set(lines))[:10]
            raise RuntimeError(
                f"Batch {state.tag}: the ended parts hold {len(lines)} of {state.total} items (first missing: "
                f"{missing}); the state under {names.state_dir()} is inconsistent. Please report this."
            )
        manifest = self.manifest_location or names.default_manifest_location()
        body = io.BytesIO()
        for index in range(state.total):
            body.write(lines[index][1].encode())
            body.write(b"\n")
        batch_state.put(s3, manifest, body.getvalue())
        del body
        counts = {COMPLETED: 0, FAILED: 0, TIMED_OUT: 0}
        for status, _ in lines.values():
            counts[status] += 1
        del lines
        ended_at = utcnow()
        summary: BatchSummary = {
            "batch_tag": state.tag,
            "endpoint_name": state.endpoint_name,
            "total": state.total,
            "counts": counts,
            "manifest_location": manifest,
            "output_prefix": names.output_dir,
            "failure_prefix": names.failure_dir,
            "invocations": state.submitted,
            "resumed_items": state.resumed,
            "deferrals": state.deferrals,
            "started_at": state.started_at,
            "ended_at": isoformat(ended_at),
            "duration_seconds": round((ended_at - _parse(state.started_at)).total_seconds(), 3),
            "endpoint_instances_at_submit": state.endpoint_instances_at_submit,
        }
        self.last_summary = summary
        progress = self._progress_of(s3, names, state)
        progress.counts = dict(counts)  # the manifest's figures are the truth
        self._write_progress(s3, names, state, in_flight=0, force=True, manifest_location=manifest)
        self.log.info("Batch %s: %s; manifest %s", state.tag, counts, manifest)
        failed = counts[FAILED] + counts[TIMED_OUT]
        if failed > self.max_failed_items and failed > self.max_failed_fraction * state.total:
            raise SageMakerAsyncBatchFailed(
                f"Batch {state.tag} on endpoint {state.endpoint_name}: {counts[FAILED]} failed and {counts[TIMED_OUT]} "
                f"timed out of {state.total} items, more than max_failed_items={self.max_failed_items} and "
                f"max_failed_fraction={self.max_failed_fraction}. Every item has ended; the manifest at {manifest} "
                "has each item's status and failure reason.",
                summary=summary,
            )
        state.succeeded_try = getattr(self, "_try_number", 1)
        batch_state.put(s3, names.state_location(), state.to_json().encode())
        return summary

    # -- progress (progress.json, the UI page) -----------------------------------------------------------

    def _push_progress_pointer(self, ti: Any, names: BatchNames, map_index: int) -> None:
        """Push where ``progress.json`` is (small XCom) and the page's extra link, so both work while the batch runs."""
        self._progress, self._progress_written = None, 0.0  # a new try reads it from S3 again
        pointer = {
            "progress_location": progress_location(names),
            "aws_conn_id": self.aws_conn_id,
            "region_name": self.region_name,
        }
        ti.xcom_push(key=PROGRESS_POINTER_KEY, value=pointer)
        link = BatchProgressLink()
        ti.xcom_push(key=link.xcom_key, value=link.get_link(self, ti_key=ti))

    def _write_ended_part(
        self, s3: Any, names: BatchNames, state: BatchState, lines: list[Any], *, replacing: str | None = None
    ) -> None:
        """Write ``lines`` as the next ended part (and the state), and count them in the progress.

        :param replacing: the status the items had before (``TimedOut`` for a re-check's finds).
        """
        progress = self._progress_of(s3, names, state)  # read before the part: it must not count it twice
        if replacing is not None:
            state.recheck_parts.append(state.parts)  # so a catch-up after a death here moves them too
        batch_state.write_part(s3, names, state, lines)
        progress.add(lines, parts=state.parts, replacing=replacing)

    def _progress_of(self, s3: Any, names: BatchNames, state: BatchState) -> Progress:
        """Return this try's progress, read (and brought up to date) from S3 the first time."""
        progress = self._progress
        if progress is None or progress.batch_tag != state.tag:
            progress = self._progress = batch_state.load_progress(s3, names, state)
            self._progress_written = 0.0
        return progress

    def _write_progress(
        self,
        s3: Any,
        names: BatchNames,
        state: BatchState,
        *,
        in_flight: int,
        force: bool = False,
        manifest_location: str | None = None,
    ) -> None:
        """Write ``progress.json`` at most every ``WRITE_EVERY_SECONDS`` (``force``: a deferral, the end)."""
        now = time.time()
        if not force and now - self._progress_written < WRITE_EVERY_SECONDS:
            return
        progress = self._progress_of(s3, names, state)
        progress.mark(now, in_flight=in_flight, manifest_location=manifest_location)
        batch_state.write_progress(s3, names, progress)
        self._progress_written = now

    # -- OpenLineage -------------------------------------------------------------------------------------

    def post_execute(self, context: Any, result: Any = None) -> None:
        """Put the batch's figures in the ``extra`` of the outlet S3 assets that cover it (after a success)."""
        super().post_execute(context, result)
        record_batch_events(self, context)

    def _lineage(self) -> LineageRecord:
        """Return the batch's lineage as prefixes (never one dataset per item): inputs, result dirs, manifest."""
        record = LineageRecord(INVOKE_ENDPOINT_ASYNC, endpoint_name=self.endpoint_name)
        if isinstance(self.input_prefix, str):
            record.inputs.append(self.input_prefix)
        elif self.input_locations is not None:
            with contextlib.suppress(SageMakerAsyncParameterError):
                # The "directory" of each input: as few datasets as there are input folders.
                record.inputs += [uri.rsplit("/", 1)[0] for uri in as_list(self.input_locations, "input_locations")]
        summary: BatchSummary | None = getattr(self, "last_summary", None)
        if summary is None:
            return record
        if isinstance(self.input_s3_prefix, str) and self.input_records is not None:
            record.inputs.append(join_s3(self.input_s3_prefix, summary["batch_tag"]))  # large records uploaded
        record.endpoint_name = summary["endpoint_name"]
        record.outputs += [summary["output_prefix"], summary["manifest_location"]]
        if summary["failure_prefix"] and summary["counts"].get(FAILED):
            record.outputs.append(summary["failure_prefix"])
        record.facet = {
            "batchTag": summary["batch_tag"],
            "total": summary["total"],
            "counts": summary["counts"],
            "manifestLocation": summary["manifest_location"],
        }
        return record

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """
        Return the batch's lineage for the OpenLineage provider (optional; imported lazily), kept small.

        Inputs: ``input_prefix``, or the folders of ``input_locations``, or the upload prefix of large
        ``input_records``. Outputs: the batch's output prefix, the failure prefix (when items failed) and the
        manifest. Run facet ``sagemakerEndpoint``: endpoint, batch tag, counts. See
        :mod:`airflow_sagemaker_async.common.lineage`.
        """
        return operator_lineage(self._lineage())

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> OperatorLineage:
        """Return the lineage of a failed batch: as on completion (over its failure policy, the manifest exists)."""
        return operator_lineage(self._lineage())


def _too_many(count: int) -> SageMakerAsyncParameterError:
    return SageMakerAsyncParameterError(
        f"{count} inputs are more than the {MAX_ITEMS} one batch can name (7-digit item numbers in "
        "the Filename). Split the inputs over several tasks.",
        parameter="input_locations",
    )


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text)
