from __future__ import annotations

import pytest
from aiobotocore.session import get_session
from botocore.config import Config
from botocore.exceptions import ClientError

from airflow_sagemaker_async.common.rules import python_pattern
from airflow_sagemaker_async.local.request_model import (
    RequestValidationError,
    parse_invoke_endpoint_async,
)
from tests.local.conftest import IRIS_ROW
from tests.local.signing import send_signed


@pytest.fixture(scope="module")
def unvalidated_runtime(backend):
    """A runtime client that lets every value through, so the server's validation is what answers."""
    return backend.client("sagemaker-runtime", config=Config(parameter_validation=False, retries={"max_attempts": 1}))


CASES = [
    pytest.param({"RequestTTLSeconds": 59}, "at 'requestTTLSeconds'", "greater than or equal to 60", id="ttl-low"),
    pytest.param({"RequestTTLSeconds": 21601}, "at 'requestTTLSeconds'", "less than or equal to 21600", id="ttl-high"),
    pytest.param(
        {"InvocationTimeoutSeconds": 0}, "'invocationTimeoutSeconds'", "greater than or equal to 1", id="timeout-low"
    ),
    pytest.param(
        {"InvocationTimeoutSeconds": 3601},
        "'invocationTimeoutSeconds'",
        "less than or equal to 3600",
        id="timeout-high",
    ),
    pytest.param(
        {"InferenceId": "x" * 65}, "at 'inferenceId'", "length less than or equal to 64", id="inference-id-long"
    ),
    pytest.param({"Filename": "a.b.c"}, "at 'filename'", "regular expression pattern", id="filename-two-dots"),
    pytest.param({"Filename": "-result"}, "at 'filename'", "regular expression pattern", id="filename-leading-dash"),
    pytest.param({"Filename": "f" * 33}, "at 'filename'", "length less than or equal to 32", id="filename-long"),
    pytest.param({"S3OutputPathExtension": "s3://elsewhere"}, "'s3OutputPathExtension'", "pattern", id="extension-url"),
    pytest.param({"S3OutputPathExtension": "has space"}, "'s3OutputPathExtension'", "pattern", id="extension-space"),
    pytest.param({"InputLocation": "ftp://bucket/key", "Body": None}, "at 'inputLocation'", "pattern", id="input-ftp"),
    pytest.param(
        {"ContentType": "t" * 1025}, "at 'contentType'", "length less than or equal to 1024", id="content-type-long"
    ),
    pytest.param({"Accept": "a" * 1025}, "at 'accept'", "length less than or equal to 1024", id="accept-long"),
    pytest.param({"Body": b"x" * 128_001}, "at 'body'", "length less than or equal to 128000", id="body-too-large"),
    pytest.param(
        {"InputLocation": "s3://b/k"}, "exactly one of Body and InputLocation", "both", id="both-body-and-input"
    ),
    pytest.param({"Body": None}, "exactly one of Body and InputLocation", "neither", id="neither-body-nor-input"),
]


@pytest.mark.parametrize(("params", "field", "constraint"), CASES)
def test_invalid_request_answers_400_validation_error(backend, iris, unvalidated_runtime, params, field, constraint):
    request = {"EndpointName": iris.name, "Body": IRIS_ROW, "ContentType": "text/csv", **params}
    request = {key: value for key, value in request.items() if value is not None}
    before = len(backend.invocations(iris.name))

    with pytest.raises(ClientError) as raised:
        unvalidated_runtime.invoke_endpoint_async(**request)

    response = raised.value.response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-errortype"] == "ValidationError"
    assert field in response["Error"]["Message"]
    assert constraint in response["Error"]["Message"]
    assert len(backend.invocations(iris.name)) == before, "a rejected request must not be queued"


def test_sensitive_custom_attributes_are_not_echoed_in_the_error(backend, iris, unvalidated_runtime):
    with pytest.raises(ClientError) as raised:
        unvalidated_runtime.invoke_endpoint_async(EndpointName=iris.name, Body=IRIS_ROW, CustomAttributes="s" * 1025)
    message = raised.value.response["Error"]["Message"]
    assert "Value at 'customAttributes' failed to satisfy constraint" in message
    assert "sss" not in message


def test_every_broken_constraint_is_reported_in_one_message(backend, iris, unvalidated_runtime):
    with pytest.raises(ClientError) as raised:
        unvalidated_runtime.invoke_endpoint_async(
            EndpointName=iris.name, Body=IRIS_ROW, RequestTTLSeconds=1, InvocationTimeoutSeconds=9999
        )
    assert raised.value.response["Error"]["Message"].startswith("2 validation errors detected: ")


def test_endpoint_name_breaking_the_pattern_answers_validation_error_not_not_found(backend, iris, unvalidated_runtime):
    with pytest.raises(ClientError) as raised:
        unvalidated_runtime.invoke_endpoint_async(EndpointName="bad_name", Body=IRIS_ROW)
    message = raised.value.response["Error"]["Message"]
    assert "Value 'bad_name' at 'endpointName'" in message
    assert "not found" not in message


def test_non_integer_ttl_header_answers_validation_error(backend, iris):
    status, headers, body = send_signed(
        backend,
        f"/endpoints/{iris.name}/async-invocations",
        IRIS_ROW,
        {"X-Amzn-SageMaker-RequestTTLSeconds": "soon"},
    )
    assert status == 400
    assert headers["x-amzn-ErrorType"] == "ValidationError"
    assert "Member must be an integer" in body["message"]


def test_botocore_refuses_a_ttl_below_60_before_sending(backend, iris):
    from botocore.exceptions import ParamValidationError

    before = len(backend.invocations(iris.name))
    with pytest.raises(ParamValidationError):
        backend.client("sagemaker-runtime").invoke_endpoint_async(
            EndpointName=iris.name, Body=IRIS_ROW, RequestTTLSeconds=5
        )
    assert len(backend.invocations(iris.name)) == before


@pytest.mark.asyncio
async def test_aiobotocore_invalid_request_answers_validation_error(backend, iris):
    async with get_session().create_client(
        "sagemaker-runtime",
        config=Config(parameter_validation=False),
        **backend.client_kwargs("sagemaker-runtime"),
    ) as runtime:
        with pytest.raises(ClientError) as raised:
            await runtime.invoke_endpoint_async(EndpointName=iris.name, Body=IRIS_ROW, RequestTTLSeconds=30000)
    assert raised.value.response["Error"]["Code"] == "ValidationError"
    assert "'requestTTLSeconds'" in raised.value.response["Error"]["Message"]


def test_documented_defaults_apply_when_ttl_and_timeout_are_absent():
    parsed = parse_invoke_endpoint_async("ep", {}, b"1,2,3,4")
    assert (parsed.request_ttl_seconds, parsed.invocation_timeout_seconds) == (21600, 900)
    assert parsed.body == b"1,2,3,4"
    assert parsed.input_location is None


def test_java_patterns_of_the_service_model_are_translated_to_python():
    inference_id = python_pattern(r"\A\S[\p{Print}]*\z")
    assert inference_id.fullmatch("id with spaces")
    assert not inference_id.fullmatch(" leading-space")
    assert not inference_id.fullmatch("tab\tinside")
    ascii_only = python_pattern(r"\p{ASCII}*")
    assert ascii_only.fullmatch("text/csv")
    assert not ascii_only.fullmatch("text/csv; é")


def test_parse_rejects_a_non_ascii_content_type():
    with pytest.raises(RequestValidationError, match="at 'contentType'"):
        parse_invoke_endpoint_async("ep", {"X-Amzn-SageMaker-Content-Type": "text/é"}, b"1")
