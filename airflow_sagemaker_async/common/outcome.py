"""
The outcome: what a finished wait hands to XCom, built once for the operator and the sensor.

Runs on the worker only (it downloads with boto3); the trigger never downloads payloads. The
shapes, :class:`~airflow_sagemaker_async.common.records.WatchEvent` in and
:class:`~airflow_sagemaker_async.common.records.Outcome` out, are documented in
:mod:`airflow_sagemaker_async.common.records`.
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import ClientError

from airflow_sagemaker_async.common.exceptions import (
    SageMakerAsyncInferenceError,
    SageMakerAsyncInferenceTimeout,
    SageMakerAsyncOutputDecodeError,
    SageMakerAsyncOutputMissing,
    SageMakerAsyncOutputTooLarge,
)
from airflow_sagemaker_async.common.records import FAILED, TIMED_OUT
from airflow_sagemaker_async.common.validation import parse_s3_uri
from airflow_sagemaker_async.common.watch import EXPIRY_HINT, FORBIDDEN_HINT

if TYPE_CHECKING:
    from airflow_sagemaker_async.common.records import Outcome, WatchEvent

#: Default cap on the output downloaded for ``output_format`` text / json / bytes: 1 MiB.
DEFAULT_MAX_OUTPUT_BYTES: Final = 1024 * 1024
#: At most this much of a failure object is read into ``failure_reason`` (bytes).
MAX_FAILURE_BYTES: Final = 64 * 1024
#: At most this much of the model's error body is quoted in an exception message (characters).
MAX_MESSAGE_CHARS: Final = 1000


def build_outcome(event: WatchEvent) -> Outcome:
    """Return the :class:`~airflow_sagemaker_async.common.records.Outcome` (without downloads) of a watch event."""
    return {
        "inference_id": event["inference_id"],
        "endpoint_name": event.get("endpoint_name"),
        "status": event["status"],
        "output_location": event["output_location"],
        "failure_location": event["failure_location"],
        "submitted_at": event.get("submitted_at"),
        "completed_at": event.get("completed_at") or (event["detected_at"] if event["status"] != TIMED_OUT else None),
        "detected_at": event["detected_at"],
        "endpoint_instances_at_submit": event.get("endpoint_instances_at_submit"),
    }


def _truncate(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... [{len(text) - limit} more characters]"


def read_object(client: Any, uri: str, *, max_bytes: int, strict: bool) -> tuple[bytes, str | None]:
    """
    Read at most ``max_bytes`` of the S3 object at ``uri``; return ``(data, content_type)``.

    Reads with a byte range, so memory stays bounded even if the object grows after the size check.

    :param client: a boto3 S3 client.
    :param strict: refuse an object larger than ``max_bytes`` instead of truncating it.
    :raises SageMakerAsyncOutputTooLarge: ``strict`` and the object is larger (nothing downloaded).
    :raises SageMakerAsyncOutputMissing: the object is not there (deleted after detection).

    .. seealso:: :external+boto3:py:meth:`S3.Client.get_object`
    """
    bucket, key = parse_s3_uri(uri, "location")
    try:
        head = client.head_object(Bucket=bucket, Key=key)
        size = int(head["ContentLength"])
        if strict and size > max_bytes:
            raise SageMakerAsyncOutputTooLarge(
                f"The output at {uri} is {size} bytes, more than max_output_bytes={max_bytes}; nothing was "
                "downloaded. Raise max_output_bytes, or use output_format='location' and read it downstream "
                "with S3Hook / a streaming reader."
            )
        if size == 0:
            return b"", head.get("ContentType")
        response = client.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{max_bytes - 1}")
        with response["Body"] as body:
            return body.read(max_bytes), response.get("ContentType")
    except ClientError as error:
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status == 404 or error.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
            raise SageMakerAsyncOutputMissing(
                f"The object at {uri} was seen, then was gone when the worker came to read it (deleted by a "
                "lifecycle rule or another process?). Keep the output prefix's objects until the DAG has read them."
            ) from error
        raise


def decode_output(data: bytes, output_format: str, uri: str) -> Any:
    """
    Decode downloaded output for XCom.

    ``text``: UTF-8 string; ``json``: the parsed JSON value; ``bytes``: base64 text (ASCII).

    :raises SageMakerAsyncOutputDecodeError: the data is not UTF-8 / JSON.
    """
    if output_format == "bytes":
        return base64.b64encode(data).decode("ascii")
    try:
        text = data.decode("utf-8")
        return json.loads(text) if output_format == "json" else text
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SageMakerAsyncOutputDecodeError(
            f"The output at {uri} is not valid {'JSON' if output_format == 'json' else 'UTF-8 text'} "
            f"({error}). Use output_format='bytes' (base64) or 'location'."
        ) from error


def timeout_error(event: WatchEvent) -> SageMakerAsyncInferenceTimeout:
    """Return the timeout error for a ``timeout`` event: both locations, the deadline, why it may happen."""
    endpoint_name, submitted_at = event.get("endpoint_name"), event.get("submitted_at")
    where = f"endpoint {endpoint_name}, " if endpoint_name else ""
    failure = event["failure_location"] or "(none: the endpoint has no S3FailurePath)"
    forbidden = f" {FORBIDDEN_HINT}" if event.get("s3_forbidden") else ""
    if event.get("expired"):
        return SageMakerAsyncInferenceTimeout(
            f"Inference {event['inference_id']} ({where}submitted {submitted_at or 'elsewhere'}) expired in "
            "SageMaker's queue: SageMaker's notification said invocationStatus 'Expired', i.e. the request waited "
            "longer than its RequestTTLSeconds before an instance took it (scale-up from zero, a backlog), and the "
            f"model never ran. No object will appear at {event['output_location']} or {failure}. Raise "
            "request_ttl_seconds (up to 21600), or scale the endpoint (MinCapacity, "
            "MaxConcurrentInvocationsPerInstance), then run the task again.",
            outcome=build_outcome(event),
        )
    return SageMakerAsyncInferenceTimeout(
        f"Inference {event['inference_id']} ({where}submitted {submitted_at or 'elsewhere'}) left no object "
        f"at its output location {event['output_location']} nor at its failure location {failure} by "
        f"the deadline {event['deadline']}. {EXPIRY_HINT}{forbidden}",
        outcome=build_outcome(event),
    )


def finish(
    event: WatchEvent,
    *,
    s3_client: Any,
    output_format: str,
    max_output_bytes: int,
    fail_on_model_error: bool,
) -> Outcome:
    """
    Turn a watch event into the task's result: return the outcome or raise.

    Idempotent: the same event gives the same outcome (events are delivered at least once).

    :param event: the final event of a :class:`~airflow_sagemaker_async.common.watch.Watch`.
    :param s3_client: a boto3 S3 client, used to read the output or the failure object.
    :param output_format: ``location`` (download nothing), ``text``, ``json`` or ``bytes``.
    :param max_output_bytes: largest output downloaded, bytes.
    :param fail_on_model_error: raise on a model failure (else return the ``Failed`` outcome).
    :raises SageMakerAsyncInferenceError: model failure and ``fail_on_model_error``.
    :raises SageMakerAsyncInferenceTimeout: the deadline passed with no object.
    :raises SageMakerAsyncOutputError: the output cannot be handed over as ``output_format`` asks.
    """
    outcome = build_outcome(event)
    endpoint_name = event.get("endpoint_name")
    where = f"endpoint {endpoint_name}, " if endpoint_name else ""
    if event["status"] == TIMED_OUT:
        raise timeout_error(event)
    if event["status"] == FAILED:
        location = event["location"] or event["failure_location"] or event["output_location"]
        try:
            data, _ = read_object(s3_client, location, max_bytes=MAX_FAILURE_BYTES, strict=False)
            reason = data.decode("utf-8", errors="replace")
        except SageMakerAsyncOutputMissing as error:
            reason = f"(the failure object could not be read: {error})"
        outcome["failure_reason"] = reason
        message = (
            f"Inference {event['inference_id']} failed on {where.rstrip(', ') or 'its endpoint'}: the model's "
            f"error, from {location}: {_truncate(reason)}"
        )
        if fail_on_model_error:
            raise SageMakerAsyncInferenceError(message, outcome=outcome)
        return outcome
    if output_format != "location":
        location = event["location"] or event["output_location"]
        data, content_type = read_object(s3_client, location, max_bytes=max_output_bytes, strict=True)
        outcome["output"] = decode_output(data, output_format, location)
        outcome["output_content_type"] = content_type
    return outcome
