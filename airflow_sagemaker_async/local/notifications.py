"""The SNS messages SageMaker publishes for async inference, built from an invocation.

Shapes of the developer guide's examples ("Check prediction results"): ``eventName`` ``InferenceResult``,
``invocationStatus`` ``Completed`` / ``Failed`` / ``Expired``. Only ``Completed`` carries
``responseParameters`` (``contentType``, ``outputLocation``); ``Failed`` carries ``failureReason`` and no
location at all, as AWS documents it (a waiter must route it by ``inferenceId``); ``Expired`` likewise. The
details AWS does not document are marked "our choice" in the local backend's README.

.. seealso::
    https://docs.aws.amazon.com/sagemaker/latest/dg/async-inference-check-predictions.html
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datetime import datetime

#: SageMaker includes the inference response in a notification only up to this size (bytes).
MAX_INCLUDED_RESPONSE_BYTES = 128 * 1024


def aws_timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and ``Z``, as in SageMaker's notifications."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def response_body(body: bytes) -> dict[str, str] | None:
    """Build the ``responseBody`` of a notification: UTF-8 text as is, other bytes in base64.

    :return: ``None`` when the body is larger than 128 KB (SageMaker leaves it out then).
    """
    if len(body) > MAX_INCLUDED_RESPONSE_BYTES:
        return None
    try:
        return {"content": body.decode("utf-8"), "encoding": "UTF-8"}
    except UnicodeDecodeError:
        return {"content": base64.b64encode(body).decode("ascii"), "encoding": "BASE64"}


def inference_result(
    *,
    region_name: str,
    endpoint_name: str,
    inference_id: str,
    status: str,
    received_time: datetime,
    event_time: datetime,
    content_type: str | None,
    accept: str | None,
    custom_attributes: str | None,
    input_location: str | None,
    response_content_type: str | None = None,
    output_location: str | None = None,
    failure_reason: str | None = None,
    body: bytes | None = None,
) -> dict[str, Any]:
    """Build the ``InferenceResult`` message of one finished request.

    :param status: ``Completed``, ``Failed`` or ``Expired``.
    :param response_content_type: for ``Completed``: the model's content type.
    :param output_location: for ``Completed``: where the response was written.
    :param failure_reason: for ``Failed`` and ``Expired``.
    :param body: the model's response to include (``IncludeInferenceResponseIn``), ``None`` to leave out.
    :return: the message, to be published as JSON.
    """
    request: dict[str, Any] = {"endpointName": endpoint_name}
    for key, value in (
        ("contentType", content_type),
        ("accept", accept),
        ("customAttributes", custom_attributes),
        ("inputLocation", input_location),
    ):
        if value is not None:
            request[key] = value
    message: dict[str, Any] = {
        "awsRegion": region_name,
        "eventTime": aws_timestamp(event_time),
        "receivedTime": aws_timestamp(received_time),
        "invocationStatus": status,
        "requestParameters": request,
    }
    response: dict[str, Any] = {}
    if response_content_type is not None:
        response["contentType"] = response_content_type
    if output_location is not None:
        response["outputLocation"] = output_location
    if response:
        message["responseParameters"] = response
    if body is not None:
        included = response_body(body)
        if included is not None:
            message["responseBody"] = included
    if failure_reason is not None:
        message["failureReason"] = failure_reason
    message.update(
        {
            "inferenceId": inference_id,
            "eventVersion": "1.0",
            "eventSource": "aws:sagemaker",
            "eventName": "InferenceResult",
        }
    )
    return message


def endpoint_test_notification(*, region_name: str, endpoint_name: str, event_time: datetime) -> dict[str, Any]:
    """Build the ``TestNotification`` SageMaker sends to an endpoint's topics when the endpoint is created."""
    return {
        "awsRegion": region_name,
        "eventTime": aws_timestamp(event_time),
        "endpointName": endpoint_name,
        "eventVersion": "1.0",
        "eventSource": "aws:sagemaker",
        "eventName": "TestNotification",
    }
