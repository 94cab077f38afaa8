"""
The local backend's real-time endpoints through boto3 (real botocore parsing, SigV4, 127.0.0.1):
InvokeEndpoint with the model's answer and its ModelError, InvokeEndpointWithResponseStream as an event
stream botocore decodes, validation from the service model, and the refusals between async and real-time.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, EventStreamError

from airflow_sagemaker_async.local.eventstream import MAX_MESSAGE_BYTES, MAX_PAYLOAD_PART_BYTES
from airflow_sagemaker_async.local.text_container import generate
from airflow_sagemaker_async.realtime.events import read_events
from tests.local.conftest import IRIS_ROW, TIME_SCALE
from tests.local.signing import send, send_signed
from tests.test_realtime import RECORDER_COMMAND


@pytest.fixture(scope="module")
def realtime(backend: Any) -> dict[str, Any]:
    """``lrt-iris`` (iris), ``lrt-text`` (streaming text) and ``lrt-recorder``: real-time endpoints."""
    return {
        "iris": backend.create_endpoint("lrt-iris", async_inference=False),
        "text": backend.create_endpoint("lrt-text", model="text", async_inference=False),
        "recorder": backend.create_endpoint("lrt-recorder", container_command=RECORDER_COMMAND, async_inference=False),
    }


@pytest.fixture(scope="module")
def runtime(backend: Any, realtime: dict[str, Any]) -> Any:
    return backend.client("sagemaker-runtime", config=Config(retries={"max_attempts": 1}))


@pytest.fixture(scope="module")
def unvalidated_runtime(backend: Any, realtime: dict[str, Any]) -> Any:
    """A runtime client that lets every value through, so the server's validation is what answers."""
    return backend.client("sagemaker-runtime", config=Config(parameter_validation=False, retries={"max_attempts": 1}))


def test_invoke_endpoint_answers_the_models_prediction_with_the_response_headers(runtime: Any) -> None:
    answer = runtime.invoke_endpoint(EndpointName="lrt-iris", Body=IRIS_ROW, ContentType="text/csv")

    assert b'"label": "setosa"' in answer["Body"].read()
    assert answer["ContentType"] == "application/json"
    assert answer["InvokedProductionVariant"] == "AllTraffic"
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_the_models_response_headers_come_back_parsed(runtime: Any) -> None:
    answer = runtime.invoke_endpoint(
        EndpointName="lrt-recorder", Body=b"x", CustomAttributes="k=v", SessionId="NEW_SESSION"
    )

    assert answer["CustomAttributes"] == "reply=k=v"
    assert answer["NewSessionId"].startswith("sess-1")
    answer = runtime.invoke_endpoint(EndpointName="lrt-recorder", Body=b"x", SessionId="close-sess-1")
    assert answer["ClosedSessionId"] == "sess-1"


def test_a_model_error_is_a_424_model_error_in_aws_shape_naming_the_log_group(runtime: Any) -> None:
    with pytest.raises(ClientError) as raised:
        runtime.invoke_endpoint(EndpointName="lrt-iris", Body=b"1,2", ContentType="text/csv")

    response = raised.value.response
    assert response["Error"]["Code"] == "ModelError"
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert response["OriginalStatusCode"] == 400
    assert "Row 1 must hold exactly 4 numbers" in response["OriginalMessage"]
    assert response["LogStreamArn"] == "arn:aws:logs:us-east-1:123456789012:log-group:/aws/sagemaker/Endpoints/lrt-iris"
    assert "Received client error (400) from primary" in response["Error"]["Message"]
    assert (
        "#logEventViewer:group=/aws/sagemaker/Endpoints/lrt-iris in account 123456789012"
        in response["Error"]["Message"]
    )


def test_a_model_error_carries_aws_error_code_on_the_wire(backend: Any, realtime: dict[str, Any]) -> None:
    # botocore's service model has no ErrorCode member on ModelError, so it is read from the raw answer.
    status, headers, document = send_signed(
        backend, "/endpoints/lrt-iris/invocations", b"1,2", {"Content-Type": "text/csv"}
    )

    assert (status, headers["x-amzn-ErrorType"]) == (424, "ModelError")
    assert document["ErrorCode"] == "CLIENT_ERROR_FROM_MODEL"
    assert document["OriginalStatusCode"] == 400
    assert document["LogStreamArn"].endswith(":log-group:/aws/sagemaker/Endpoints/lrt-iris")


def test_a_model_slower_than_the_scaled_60_second_limit_is_a_model_error(runtime: Any) -> None:
    with pytest.raises(ClientError, match="timed out while waiting for a response") as raised:
        runtime.invoke_endpoint(
            EndpointName="lrt-iris", Body=IRIS_ROW, ContentType="text/csv", CustomAttributes="sleep=1"
        )

    assert raised.value.response["Error"]["Code"] == "ModelError"


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("TargetVariant", "bad_variant", "Value 'bad_variant' at 'targetVariant' failed to satisfy constraint"),
        ("SessionId", "a b", "at 'sessionId' failed to satisfy constraint: Member must satisfy regular expression"),
        ("InferenceId", "x" * 65, "at 'inferenceId' failed to satisfy constraint: Member must have length less"),
        ("CustomAttributes", "é", "Value at 'customAttributes' failed to satisfy constraint"),
    ],
)
def test_the_service_validates_every_field_with_the_service_models_rules(
    unvalidated_runtime: Any, field: str, value: str, expected: str
) -> None:
    with pytest.raises(ClientError, match=expected) as raised:
        unvalidated_runtime.invoke_endpoint(EndpointName="lrt-recorder", Body=b"x", **{field: value})

    assert raised.value.response["Error"]["Code"] == "ValidationError"


def test_a_body_over_the_real_time_limit_is_a_validation_error_that_does_not_echo_it(unvalidated_runtime: Any) -> None:
    with pytest.raises(ClientError, match="Member must have length less than or equal to 6291456") as raised:
        unvalidated_runtime.invoke_endpoint(EndpointName="lrt-recorder", Body=b"s" * 6_291_457)

    assert "sss" not in str(raised.value)


def test_an_unknown_variant_or_inference_component_is_a_validation_error(runtime: Any) -> None:
    with pytest.raises(ClientError, match="variant Blue does not exist"):
        runtime.invoke_endpoint(EndpointName="lrt-recorder", Body=b"x", TargetVariant="Blue")
    with pytest.raises(ClientError, match="Inference component ic not found"):
        runtime.invoke_endpoint_with_response_stream(
            EndpointName="lrt-recorder", Body=b"x", InferenceComponentName="ic"
        )


def test_unsigned_real_time_requests_are_refused(backend: Any, realtime: dict[str, Any]) -> None:
    for path in ("/endpoints/lrt-iris/invocations", "/endpoints/lrt-text/invocations-response-stream"):
        status, headers, _ = send(backend, path, IRIS_ROW, {"Content-Type": "text/csv"})
        assert status == 403, path
        assert headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"


def test_an_unknown_endpoint_is_not_found_on_both_operations(runtime: Any) -> None:
    with pytest.raises(ClientError, match="Endpoint lrt-nowhere of account 123456789012 not found"):
        runtime.invoke_endpoint(EndpointName="lrt-nowhere", Body=b"x")
    with pytest.raises(ClientError, match="Endpoint lrt-nowhere of account 123456789012 not found"):
        runtime.invoke_endpoint_with_response_stream(EndpointName="lrt-nowhere", Body=b"x")


def test_async_and_real_time_endpoints_refuse_each_others_operations(runtime: Any, iris: Any) -> None:
    with pytest.raises(ClientError, match="invoke it with InvokeEndpointAsync"):
        runtime.invoke_endpoint(EndpointName=iris.name, Body=IRIS_ROW)
    with pytest.raises(ClientError, match="invoke it with InvokeEndpointAsync"):
        runtime.invoke_endpoint_with_response_stream(EndpointName=iris.name, Body=IRIS_ROW)
    with pytest.raises(ClientError, match="not configured for asynchronous inference") as raised:
        runtime.invoke_endpoint_async(EndpointName="lrt-iris", Body=IRIS_ROW)
    assert raised.value.response["Error"]["Code"] == "ValidationError"


def test_the_stream_is_decoded_by_botocore_part_by_part_as_the_model_emits_them(runtime: Any) -> None:
    started = time.monotonic()
    answer = runtime.invoke_endpoint_with_response_stream(
        EndpointName="lrt-text", Body=b"hello", CustomAttributes="tokens=4,delay=0.12"
    )
    arrivals, parts = [], []
    for event in answer["Body"]:
        arrivals.append(time.monotonic() - started)
        parts.append(event["PayloadPart"]["Bytes"])

    assert parts == generate("hello", 4)
    assert answer["ContentType"] == "text/plain; charset=utf-8"
    assert answer["InvokedProductionVariant"] == "AllTraffic"
    assert arrivals[0] < arrivals[-1] - 0.25  # the first part came well before the last: streamed, not buffered


def test_a_broken_model_stream_is_a_model_stream_error_after_the_parts_sent(runtime: Any) -> None:
    answer = runtime.invoke_endpoint_with_response_stream(
        EndpointName="lrt-text", Body=b"hello", CustomAttributes="tokens=8,fail_after=3,delay=0"
    )
    parts: list[bytes] = []

    def consume() -> None:
        parts.extend(event["PayloadPart"]["Bytes"] for event in answer["Body"])

    with pytest.raises(EventStreamError) as raised:
        consume()
    answer["Body"].close()

    assert parts == generate("hello", 8)[:3]
    assert raised.value.response["Error"]["Code"] == "ModelStreamError"


def test_a_stream_past_the_scaled_time_limit_ends_with_model_invocation_time_exceeded(runtime: Any) -> None:
    answer = runtime.invoke_endpoint_with_response_stream(
        EndpointName="lrt-text", Body=b"hello", CustomAttributes="tokens=20,delay=0.1"
    )  # 2 s of tokens; the 60 s limit is 0.6 s at the tests' time_scale 0.01

    events = list(read_events(answer["Body"]))
    answer["Body"].close()

    assert 2 <= len(events) - 1 <= 8
    assert (events[-1].error_type, events[-1].error_code) == ("ModelStreamError", "ModelInvocationTimeExceeded")


def test_a_model_error_before_the_stream_is_a_model_error(runtime: Any) -> None:
    with pytest.raises(ClientError) as raised:
        runtime.invoke_endpoint_with_response_stream(EndpointName="lrt-text", Body=b"x", CustomAttributes="status=500")

    assert raised.value.response["Error"]["Code"] == "ModelError"
    assert raised.value.response["OriginalStatusCode"] == 500


def test_the_text_model_answers_invoke_endpoint_at_once(runtime: Any) -> None:
    answer = runtime.invoke_endpoint(
        EndpointName="lrt-text", Body=b'{"inputs": "hi", "parameters": {"max_new_tokens": 3}}'
    )

    assert answer["Body"].read() == b"".join(generate("hi", 3))


def test_a_25_mib_chunk_arrives_as_payload_parts_of_at_most_16_mib_that_botocore_parses(
    backend: Any, runtime: Any
) -> None:
    size = 25 * 1024 * 1024
    backend.time_scale = 1.0  # 25 MiB within the model's unscaled 60 s, however loaded the machine
    try:
        answer = runtime.invoke_endpoint_with_response_stream(
            EndpointName="lrt-text", Body=b"big", CustomAttributes=f"tokens=1,token_bytes={size},delay=0"
        )
        parts = [event["PayloadPart"]["Bytes"] for event in answer["Body"]]
    finally:
        backend.time_scale = TIME_SCALE

    assert b"".join(parts) == generate("big", 1, size)[0]
    assert [len(part) for part in parts] == [MAX_PAYLOAD_PART_BYTES, size - MAX_PAYLOAD_PART_BYTES]
    assert MAX_PAYLOAD_PART_BYTES < MAX_MESSAGE_BYTES == 16 * 1024 * 1024
