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
    from airflow_sagemaker_async.records import Outcome

__all__ = [
    "SageMakerAsyncError",
    "SageMakerAsyncInferenceError",
    "SageMakerAsyncInferenceTimeout",
    "SageMakerAsyncOutputDecodeError",
    "SageMakerAsyncOutputError",
    "SageMakerAsyncOutputMissing",
    "SageMakerAsyncOutputTooLarge",
    "SageMakerAsyncParameterError",
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
    RequestTTLSeconds), so this is also how an expired request shows.

    :param outcome: the outcome dict with ``status`` ``"TimedOut"``.
    """

    def __init__(self, message: str, *, outcome: Outcome) -> None:
        super().__init__(message)
        self.outcome = outcome


class SageMakerAsyncOutputError(SageMakerAsyncError):
    """The inference completed but its output could not be handed over as asked."""


class SageMakerAsyncOutputTooLarge(SageMakerAsyncOutputError):
    """The output object is larger than ``max_output_bytes``; nothing was downloaded."""


class SageMakerAsyncOutputMissing(SageMakerAsyncOutputError):
    """The output object was seen, then was gone when the worker came to read it."""


class SageMakerAsyncOutputDecodeError(SageMakerAsyncOutputError):
    """The output object is not valid UTF-8 text or JSON as ``output_format`` asked."""
