"""
The records that cross modules: each shape is documented here once, and everything else points here.

All are plain JSON-serialisable dicts (``TypedDict``), because they travel through Airflow's triggers
table, XCom and S3; every timestamp is an ISO-8601 UTC string.

One status vocabulary, SageMaker's own (the ``invocationStatus`` of its SNS notifications), is used by
every record: :data:`COMPLETED`, :data:`FAILED`, :data:`TIMED_OUT` (no object by the deadline; SageMaker
says ``Expired`` for a request that expired in its queue, which an S3 watch sees as a timeout and a wait
with a notification queue as ``TimedOut`` with ``expired`` set, at once), plus
:data:`IN_PROGRESS` for a submission nobody waited for.

=====================  =====================================================  ==============================
record                 what it is                                             made by
=====================  =====================================================  ==============================
:class:`WatchEvent`    the end of one wait: the trigger's event payload       ``watch.Watch`` (trigger and
                                                                              worker-side waits alike)
:class:`Outcome`       the task's return value (XCom) for one inference       ``outcome.finish``
:class:`Submission`    returned by ``wait_for_completion=False``              the async operator
:class:`ManifestLine`  one item of a batch, one JSON line of its manifest     ``batch.PendingItem.ended``
:class:`BatchSummary`  the batch operator's return value (XCom): counts,      the batch operator
                       where the manifest is; never a list of N items
:class:`BatchEvent`    the batch trigger's event payload                      ``batch_trigger``
=====================  =====================================================  ==============================

:class:`RealtimeOutcome` is the return value (XCom) of a real-time or streaming invocation (the ``realtime`` and
``streaming`` operators): where the response was written, or the response itself.
"""

from __future__ import annotations

from typing import Final, Literal, NotRequired, TypedDict

__all__ = [
    "COMPLETED",
    "FAILED",
    "IN_PROGRESS",
    "TIMED_OUT",
    "BatchEvent",
    "BatchSummary",
    "InferenceStatus",
    "ManifestLine",
    "Outcome",
    "RealtimeOutcome",
    "Submission",
    "WatchEvent",
]

#: The output object exists: the model answered.
COMPLETED: Final = "Completed"
#: The failure object exists: the model (or SageMaker) failed the request.
FAILED: Final = "Failed"
#: Neither object by the deadline (also how a request that expired in SageMaker's queue shows).
TIMED_OUT: Final = "TimedOut"
#: Submitted; nobody waited for the result.
IN_PROGRESS: Final = "InProgress"

InferenceStatus = Literal["Completed", "Failed", "TimedOut"]


class WatchEvent(TypedDict):
    """
    The end of one wait for an asynchronous inference: the payload of the trigger's ``TriggerEvent``.

    Also what a worker-side wait (``deferrable=False``, poke mode) hands to ``outcome.finish``, so both
    paths end the same way. It carries everything the resumed task needs (no ``defer()`` kwargs).
    """

    #: ``Completed`` (output object found), ``Failed`` (failure object found), ``TimedOut`` (deadline).
    status: InferenceStatus
    #: the request's InferenceId.
    inference_id: str
    #: the endpoint, or ``None`` for a sensor that was not told it.
    endpoint_name: str | None
    #: when InvokeEndpointAsync answered, or ``None`` (sensor).
    submitted_at: str | None
    #: S3 URI of the output object, as InvokeEndpointAsync returned it.
    output_location: str
    #: S3 URI of the failure object, or ``None`` when the endpoint has no S3FailurePath.
    failure_location: str | None
    #: the object found (``None`` for ``TimedOut``).
    location: str | None
    #: the object's LastModified (``None`` for ``TimedOut`` or when S3 did not say).
    completed_at: str | None
    #: when the watch saw it.
    detected_at: str
    #: the absolute deadline of the wait.
    deadline: str
    #: how many checks the wait made.
    checks: int
    #: S3 answered 403 at least once (``s3:ListBucket`` missing?).
    s3_forbidden: bool
    #: ``TimedOut`` because SageMaker's notification said ``invocationStatus: "Expired"`` (the request
    #: expired in its queue; see :mod:`airflow_sagemaker_async.push.notifications`), not because the deadline
    #: passed. Absent in events of versions without push completion (read as False).
    expired: NotRequired[bool]
    #: the endpoint's instance count when the request was submitted; absent when unknown.
    endpoint_instances_at_submit: NotRequired[int]


class Outcome(TypedDict):
    """The result of one inference: what the operator and the sensor return (so XCom)."""

    #: the request's InferenceId.
    inference_id: str
    #: the endpoint (``None`` from a sensor not told it).
    endpoint_name: str | None
    #: ``Completed`` or ``Failed`` (returned only with ``fail_on_model_error=False``); ``TimedOut`` only
    #: inside :class:`~airflow_sagemaker_async.common.exceptions.SageMakerAsyncInferenceTimeout`.
    status: InferenceStatus
    #: S3 URI SageMaker returned as OutputLocation.
    output_location: str
    #: S3 URI SageMaker returned as FailureLocation, or ``None``.
    failure_location: str | None
    #: when InvokeEndpointAsync answered; ``None`` for a sensor.
    submitted_at: str | None
    #: LastModified of the object found (``None`` for ``TimedOut``).
    completed_at: str | None
    #: when the watch saw it.
    detected_at: str
    #: only with ``output_format`` ``text`` (str), ``json`` (the value) or ``bytes`` (base64 text).
    output: NotRequired[object]
    #: with ``output``: the object's Content-Type.
    output_content_type: NotRequired[str | None]
    #: only for ``Failed``: the model's error body, at most 64 KiB.
    failure_reason: NotRequired[str]
    #: the endpoint's instances (``CurrentInstanceCount`` over its variants) when the operator submitted; 0: the
    #: request waited for a cold start (docs/concepts/cold-starts.md). ``None`` when unknown (a sensor, the check
    #: off or not allowed); absent in outcomes of versions before it.
    endpoint_instances_at_submit: NotRequired[int | None]


class RealtimeOutcome(TypedDict):
    """
    What the real-time and streaming operators return (so XCom): one InvokeEndpoint(WithResponseStream) answer.

    No ``status``: these calls either answer or raise; a model error is an exception, never an outcome.
    """

    #: the endpoint invoked.
    endpoint_name: str
    #: the InferenceId sent, or ``None`` (the real-time APIs do not generate one).
    inference_id: str | None
    #: the response's ContentType (the model's).
    content_type: str | None
    #: InvokedProductionVariant: the variant that served the request.
    invoked_production_variant: str | None
    #: the response's CustomAttributes from the model (sensitive: masked in Airflow's logs, never logged by us).
    custom_attributes: str | None
    #: InvokeEndpoint's NewSessionId / ClosedSessionId (stateful sessions); ``None`` otherwise and when streaming.
    new_session_id: str | None
    closed_session_id: str | None
    #: when the call was made and when the last byte of the response arrived (ISO-8601 UTC).
    invoked_at: str
    completed_at: str
    #: size of the response body, bytes.
    output_bytes: int
    #: where the response was written: an S3 URI (``output_location``) or a local path (``output_file``);
    #: ``None`` when it is only in ``output``.
    output_location: str | None
    #: only with ``output_format`` ``text`` (str), ``json`` (the value) or ``bytes`` (base64 text).
    output: NotRequired[object]
    #: streaming only: PayloadPart events received.
    parts: NotRequired[int]
    #: streaming only: seconds from the call to the first PayloadPart (``None`` for an empty stream).
    time_to_first_part_seconds: NotRequired[float | None]


class Submission(TypedDict):
    """What the async operator returns with ``wait_for_completion=False``: where to wait, until when."""

    inference_id: str
    endpoint_name: str
    #: always ``InProgress``.
    status: Literal["InProgress"]
    output_location: str
    failure_location: str | None
    submitted_at: str
    #: the absolute deadline a wait for it would use.
    deadline: str
    #: the endpoint's instances when the operator submitted, as in :class:`Outcome`; 0: the request waits for a
    #: cold start. ``None`` when unknown (``check_endpoint_capacity=False``, or the check not allowed).
    endpoint_instances_at_submit: NotRequired[int | None]


class ManifestLine(TypedDict):
    """One item of a batch: one JSON line of its manifest (``manifest.jsonl`` in S3), exactly once per input."""

    #: the item's position in the inputs, 0-based (the manifest is sorted by it).
    item: int
    #: the S3/https URI the payload was sent from, ``None`` when it was sent inline.
    input_location: str | None
    inference_id: str
    status: InferenceStatus
    output_location: str
    failure_location: str | None
    #: for ``Failed``: the start of the model's error body (at most 1,000 characters); else ``None``.
    failure_reason: str | None
    submitted_at: str
    #: LastModified of the result object (``None`` for ``TimedOut``).
    completed_at: str | None


class BatchSummary(TypedDict):
    """What the batch operator returns (so XCom): counts and locations, never a list with an entry per item."""

    batch_tag: str
    endpoint_name: str
    total: int
    #: items by status: ``{"Completed": n, "Failed": n, "TimedOut": n}``.
    counts: dict[str, int]
    #: S3 URI of the manifest (one :class:`ManifestLine` per item).
    manifest_location: str
    #: S3 URI of the directory holding every output of the batch.
    output_prefix: str
    failure_prefix: str | None
    #: InvokeEndpointAsync calls over every try (more than ``total`` only after a retry re-sent items in flight).
    invocations: int
    #: items a retry found already ended in S3 and did not send again.
    resumed_items: int
    deferrals: int
    started_at: str
    ended_at: str
    duration_seconds: float
    #: the endpoint's instances when the batch began (``None`` when unknown); 0: it began with a cold start.
    endpoint_instances_at_submit: NotRequired[int | None]


class BatchEvent(TypedDict):
    """The batch trigger's event: few enough items in flight, or one of them past its deadline."""

    #: ``"LowWater"`` (in flight <= the low-water mark) or ``"Deadline"`` (an item's deadline passed).
    status: Literal["LowWater", "Deadline"]
    batch_tag: str
    #: S3 URI of the ``state.json`` the worker resumes from.
    state_location: str
    #: items the trigger saw end, and still in flight, when it fired.
    ended: int
    pending: int
    checks: int
    detected_at: str
