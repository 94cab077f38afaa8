"""
The package's error tree.

Every error this package raises on purpose derives from :class:`SageMakerAsyncError`, itself an
``AirflowException`` so Airflow's retry and failure handling treat it as a task failure. A parameter
error is also an ``AirflowFailException``: the task fails without retries, since a retry cannot fix it::

    AirflowException
    └── SageMakerAsyncError
        ├── SageMakerAsyncParameterError (also AirflowFailException, ValueError)   bad input, before any AWS call
        ├── SageMakerAsyncInferenceError                     the model failed: object at the failure location
        ├── SageMakerAsyncInferenceTimeout                   deadline passed, no object at either location
        ├── SageMakerModelError                              real-time / streaming: the model answered an error
        ├── SageMakerEndpointReadTimeout                     real-time / streaming: no answer within read_timeout
        ├── SageMakerResponseStreamError                     the response stream broke; what arrived is kept
        ├── SageMakerAsyncBatchFailed                        a batch ended over its failure policy
        └── SageMakerAsyncOutputError                        the output exists but cannot be handed over
            ├── SageMakerAsyncOutputTooLarge                 larger than ``max_output_bytes``
            ├── SageMakerAsyncOutputMissing                  gone between detection and download
            └── SageMakerAsyncOutputDecodeError              not valid text / JSON for ``output_format``

Errors from AWS itself (``botocore.exceptions.ClientError`` for a ValidationError from
InvokeEndpointAsync, for example) are not wrapped: they keep their own type, code and traceback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk.exceptions import AirflowException, AirflowFailException

if TYPE_CHECKING:
    from airflow_sagemaker_async.common.records import BatchSummary, Outcome

__all__ = [
    "SageMakerAsyncBatchFailed",
    "SageMakerAsyncError",
    "SageMakerAsyncInferenceError",
    "SageMakerAsyncInferenceTimeout",
    "SageMakerAsyncOutputDecodeError",
    "SageMakerAsyncOutputError",
    "SageMakerAsyncOutputMissing",
    "SageMakerAsyncOutputTooLarge",
    "SageMakerAsyncParameterError",
    "SageMakerEndpointReadTimeout",
    "SageMakerModelError",
    "SageMakerResponseStreamError",
]


class SageMakerAsyncError(AirflowException):
    """Base class of every error raised on purpose by this package."""


class SageMakerAsyncParameterError(SageMakerAsyncError, AirflowFailException, ValueError):
    """
    A parameter breaks a rule of InvokeEndpointAsync or of this package.

    Raised at construction for static values and at ``execute`` (before any AWS call) for templated
    ones. The message names the parameter, the rule and the offending value (sensitive values redacted).
    An ``AirflowFailException``: the task fails at once, without the retries a retry could not help.

    :param parameter: the parameter's name as the user wrote it, e.g. ``"request_ttl_seconds"``.
    """

    def __init__(self, message: str, *, parameter: str) -> None:
        super().__init__(message)
        self.parameter = parameter


class SageMakerAsyncInferenceError(SageMakerAsyncError):
    """
    The model failed: SageMaker wrote an object at the request's failure location.

    :param outcome: the outcome dict (``status`` ``"Failed"``, ``failure_reason`` holding the model's
        error body, truncated) that a successful task would have returned.
    """

    def __init__(self, message: str, *, outcome: Outcome) -> None:
        super().__init__(message)
        self.outcome = outcome


class SageMakerAsyncInferenceTimeout(SageMakerAsyncError):
    """
    The deadline passed and neither the output nor the failure location holds an object.

    SageMaker writes no S3 object for a request that expired in its queue (older than
    RequestTTLSeconds), so this is also how an expired request shows: at the deadline, or at once when a
    ``notification_queue_url`` delivered SageMaker's ``Expired`` notification (``outcome`` then comes from
    an event with ``expired`` set, and the message says the request expired in the queue).

    :param outcome: the outcome dict with ``status`` ``"TimedOut"``.
    """

    def __init__(self, message: str, *, outcome: Outcome) -> None:
        super().__init__(message)
        self.outcome = outcome


class SageMakerModelError(SageMakerAsyncError):
    """
    InvokeEndpoint / InvokeEndpointWithResponseStream answered ``ModelError``: the model container answered an error.

    :param endpoint_name: the endpoint invoked.
    :param original_status_code: the HTTP status the model answered (``OriginalStatusCode``), if SageMaker said.
    :param original_message: the model's own error body (``OriginalMessage``), if SageMaker said.
    :param log_stream_arn: ``LogStreamArn`` as SageMaker sent it: the endpoint's CloudWatch log group
        (``arn:aws:logs:REGION:ACCOUNT:log-group:/aws/sagemaker/Endpoints/NAME``) or a stream, if SageMaker said.
    :param log_url: the CloudWatch console link to that group or stream, if known.
    :param sagemaker_message: SageMaker's own ``Message`` (with its console link), if sent.
    :param error_code: ``ErrorCode`` (e.g. ``CLIENT_ERROR_FROM_MODEL``), if sent.
    """

    def __init__(
        self,
        message: str,
        *,
        endpoint_name: str,
        original_status_code: int | None,
        original_message: str | None,
        log_stream_arn: str | None,
        log_url: str | None,
        sagemaker_message: str | None = None,
        error_code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.endpoint_name = endpoint_name
        self.original_status_code = original_status_code
        self.original_message = original_message
        self.log_stream_arn = log_stream_arn
        self.log_url = log_url
        self.sagemaker_message = sagemaker_message
        self.error_code = error_code


class SageMakerEndpointReadTimeout(SageMakerAsyncError):
    """
    InvokeEndpoint / InvokeEndpointWithResponseStream got no answer within the client's ``read_timeout``.

    The request was sent, so the model may have run (and may still be running): it was not sent again, since
    the API has no idempotency token. The message names the timeout and ``botocore_config`` ``read_timeout``.

    :param endpoint_name: the endpoint invoked.
    :param read_timeout: the client's ``read_timeout``, seconds.
    """

    def __init__(self, message: str, *, endpoint_name: str, read_timeout: float | None) -> None:
        super().__init__(message)
        self.endpoint_name = endpoint_name
        self.read_timeout = read_timeout


class SageMakerResponseStreamError(SageMakerAsyncError):
    """
    InvokeEndpointWithResponseStream's event stream ended with ``ModelStreamError`` or ``InternalStreamFailure``.

    The parts received before the error are kept at the ``.partial`` sibling of the operator's destination
    (``<output_file>.partial`` or ``<output_location>.partial``): the destination itself is only ever written
    with a whole answer.

    :param endpoint_name: the endpoint invoked.
    :param error_type: ``ModelStreamError`` or ``InternalStreamFailure`` (the event's exception type).
    :param error_code: ModelStreamError's ``ErrorCode`` (``ModelInvocationTimeExceeded``, ``StreamBroken``),
        or ``None`` when SageMaker sent none.
    :param parts: PayloadPart events received before the error.
    :param bytes_received: bytes those parts held.
    :param location: where those bytes are (the ``.partial`` local path or S3 URI), or ``None`` when collected
        in memory.
    :param received: the bytes themselves when collected in memory (bounded by ``max_output_bytes``), else ``None``.
    """

    def __init__(
        self,
        message: str,
        *,
        endpoint_name: str,
        error_type: str,
        error_code: str | None,
        parts: int,
        bytes_received: int,
        location: str | None,
        received: bytes | None = None,
    ) -> None:
        super().__init__(message)
        self.endpoint_name = endpoint_name
        self.error_type = error_type
        self.error_code = error_code
        self.parts = parts
        self.bytes_received = bytes_received
        self.location = location
        self.received = received


class SageMakerAsyncOutputError(SageMakerAsyncError):
    """The inference completed but its output could not be handed over as asked."""


class SageMakerAsyncOutputTooLarge(SageMakerAsyncOutputError):
    """The output object is larger than ``max_output_bytes``; nothing was downloaded."""


class SageMakerAsyncOutputMissing(SageMakerAsyncOutputError):
    """The output object was seen, then was gone when the worker came to read it."""


class SageMakerAsyncOutputDecodeError(SageMakerAsyncOutputError):
    """The output object is not valid UTF-8 text or JSON as ``output_format`` asked."""


class SageMakerAsyncBatchFailed(SageMakerAsyncError):
    """
    A batch ended with more failed (or timed-out) items than ``max_failed_items`` / ``max_failed_fraction`` allow.

    Raised after every item has ended, with the manifest and the summary already written.

    :param summary: the :class:`~airflow_sagemaker_async.common.records.BatchSummary` the task would have returned.
    """

    def __init__(self, message: str, *, summary: BatchSummary) -> None:
        super().__init__(message)
        self.summary = summary
