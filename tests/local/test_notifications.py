from __future__ import annotations

import json

from tests.local.conftest import IRIS_ROW, object_exists, wait_final

ENVELOPE_KEYS = {"awsRegion", "eventTime", "receivedTime", "invocationStatus", "requestParameters",
                 "inferenceId", "eventVersion", "eventSource", "eventName"}  # fmt: skip


def invoke(backend, endpoint_name, **kwargs):
    return backend.client("sagemaker-runtime").invoke_endpoint_async(
        EndpointName=endpoint_name, Body=IRIS_ROW, ContentType="text/csv", **kwargs
    )


def test_completed_notification_has_the_documented_fields_and_the_included_response(backend, iris):
    answer = invoke(backend, iris.name, CustomAttributes="trace=1", Accept="application/json")
    message = iris.notifications.wait_for(answer["InferenceId"])

    assert object_exists(backend, answer["OutputLocation"]), "the object is written before the notification"
    assert set(message) >= ENVELOPE_KEYS
    assert message["invocationStatus"] == "Completed"
    assert message["eventName"] == "InferenceResult"
    assert message["eventSource"] == "aws:sagemaker"
    assert message["eventVersion"] == "1.0"
    assert message["awsRegion"] == "us-east-1"
    assert message["eventTime"].endswith("Z")
    assert message["receivedTime"] <= message["eventTime"]
    assert message["requestParameters"] == {
        "endpointName": "local-iris",
        "contentType": "text/csv",
        "accept": "application/json",
        "customAttributes": "trace=1",
    }
    assert message["responseParameters"] == {
        "contentType": "application/json",
        "outputLocation": answer["OutputLocation"],
    }
    assert "failureReason" not in message
    assert json.loads(message["responseBody"]["content"])["predictions"][0]["label"] == "setosa"
    assert message["responseBody"]["encoding"] == "UTF-8"


def test_failed_notification_has_aws_documented_shape_reason_but_no_location_nor_response_parameters(backend, iris):
    answer = invoke(backend, iris.name, CustomAttributes="status=500")
    message = iris.notifications.wait_for(answer["InferenceId"])

    assert object_exists(backend, answer["FailureLocation"]), "the object is written before the notification"
    assert set(message) >= ENVELOPE_KEYS
    assert message["invocationStatus"] == "Failed"
    assert message["inferenceId"] == answer["InferenceId"]
    assert message["failureReason"] == (
        "ClientError: Received server error (500) from model. "
        "See the SageMaker Endpoint logs in your account for more information."
    )
    assert message["requestParameters"]["customAttributes"] == "status=500"
    # AWS's error notification (developer guide, "Check prediction results"): no responseParameters, so no
    # failure location; before, the backend added responseParameters.failureLocation.
    assert "responseParameters" not in message
    assert "failureLocation" not in json.dumps(message)
    assert "responseBody" not in message, "IncludeInferenceResponseIn names only the success topic"


def test_input_location_is_echoed_in_request_parameters(backend, iris):
    backend.client("s3").put_object(Bucket="sagemaker-async-local", Key="inputs/echo.csv", Body=IRIS_ROW)
    answer = backend.client("sagemaker-runtime").invoke_endpoint_async(
        EndpointName=iris.name, InputLocation="s3://sagemaker-async-local/inputs/echo.csv", ContentType="text/csv"
    )
    message = iris.notifications.wait_for(answer["InferenceId"])
    assert message["requestParameters"]["inputLocation"] == "s3://sagemaker-async-local/inputs/echo.csv"


def test_endpoint_creation_sends_a_test_notification_to_its_topics(backend, iris):
    message = iris.notifications.wait_matching(lambda m: m.get("eventName") == "TestNotification")
    assert message["endpointName"] == "local-iris"
    assert message["eventSource"] == "aws:sagemaker"


def test_records_are_marked_notified_once_published(backend, iris):
    answer = invoke(backend, iris.name)
    final = wait_final(backend, iris.name, answer["InferenceId"])
    assert final.notified
    assert iris.notifications.wait_for(answer["InferenceId"])["inferenceId"] == answer["InferenceId"]
