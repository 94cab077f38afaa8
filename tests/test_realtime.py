"""
SageMakerInvokeEndpointOperator against the local backend's real-time endpoints: real InvokeEndpoint over
HTTP (seen at a recording proxy in front of the runtime), real model containers, real boto3 parsing.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from airflow_sagemaker_async.common.exceptions import (
    SageMakerAsyncOutputTooLarge,
    SageMakerAsyncParameterError,
    SageMakerEndpointReadTimeout,
    SageMakerModelError,
)
from airflow_sagemaker_async.common.hooks import MODEL_READ_TIMEOUT_SECONDS, SageMakerRuntimeHook, no_retry_once_sent
from airflow_sagemaker_async.common.links import cloudwatch_logs_url
from airflow_sagemaker_async.common.rules import INVOKE_ENDPOINT, field_rules
from airflow_sagemaker_async.common.validation import MAX_REALTIME_BODY_BYTES
from airflow_sagemaker_async.inference.operators import SageMakerInvokeEndpointAsyncOperator
from airflow_sagemaker_async.realtime.operators import SageMakerInvokeEndpointOperator
from tests.proxy import Fault

RECORDER_COMMAND = [sys.executable, str(Path(__file__).with_name("recording_container.py"))]
INVOKE_PATH = "/endpoints/rt-recorder/invocations"

pytestmark = pytest.mark.usefixtures("realtime_endpoints", "backend_connection")


@pytest.fixture(scope="session")
def realtime_endpoints(sagemaker_async_backend: Any) -> dict[str, Any]:
    """Real-time endpoints: ``rt-iris`` (the iris model) and ``rt-recorder`` (answers with what it received)."""
    return {
        "rt-iris": sagemaker_async_backend.create_endpoint("rt-iris", async_inference=False),
        "rt-recorder": sagemaker_async_backend.create_endpoint(
            "rt-recorder", container_command=RECORDER_COMMAND, async_inference=False
        ),
    }


@dataclass
class StandInTaskInstance:
    dag_id: str = "dag"
    task_id: str = "task"
    run_id: str = "manual__2026-11-22"
    map_index: int = -1
    try_number: int = 1
    xcom: dict[str, Any] = field(default_factory=dict)

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


def run(op: SageMakerInvokeEndpointOperator) -> dict[str, Any]:
    context: Any = {"ti": StandInTaskInstance(task_id=op.task_id)}
    return dict(op.execute(context))


def operator(**kwargs: Any) -> SageMakerInvokeEndpointOperator:
    return SageMakerInvokeEndpointOperator(**{"task_id": "score", "endpoint_name": "rt-recorder", **kwargs})


EVERY_FIELD: dict[str, str] = {
    "content_type": "text/plain",
    "accept": "application/json",
    "custom_attributes": "trace=abc",
    "target_model": "model-a.tar.gz",
    "target_variant": "AllTraffic",
    "target_container_hostname": "primary",
    "inference_id": "rt-id-1",
    "enable_explanations": "`true`",
    "session_id": "NEW_SESSION",
    "prefix_aware_id": "prefix-7",
}


def test_the_fields_cover_every_request_field_of_the_service_model() -> None:
    assert set(field_rules(INVOKE_ENDPOINT)) - {"endpoint_name", "body"} == set(EVERY_FIELD) | {
        "inference_component_name"
    }


def test_every_field_reaches_the_service_and_the_models_own_fields_reach_the_container(runtime_proxy: Any) -> None:
    outcome = run(operator(input_data="hello", output_format="json", **EVERY_FIELD))

    [request] = runtime_proxy.requests("POST", INVOKE_PATH)
    rules = field_rules(INVOKE_ENDPOINT)
    for name, value in EVERY_FIELD.items():
        assert request.headers[rules[name].wire_name] == value, name
    assert request.body == b"hello"
    seen = outcome["output"]
    assert seen["body"] == "hello"
    for name in ("content_type", "accept", "custom_attributes", "target_model", "inference_id", "session_id"):
        assert seen["headers"][rules[name].wire_name] == EVERY_FIELD[name], name
    assert seen["headers"]["X-Amzn-SageMaker-Prefix-Aware-Id"] == "prefix-7"


def test_the_outcome_carries_the_response_headers() -> None:
    outcome = run(operator(input_data="x", custom_attributes="a=1", session_id="NEW_SESSION"))

    assert outcome["content_type"] == "application/json"
    assert outcome["invoked_production_variant"] == "AllTraffic"
    assert outcome["custom_attributes"] == "reply=a=1"
    assert outcome["new_session_id"].startswith("sess-1")
    assert outcome["closed_session_id"] is None
    assert json.loads(json.dumps(outcome)) == outcome  # XCom-serialisable


def test_closing_a_session_is_reported() -> None:
    outcome = run(operator(input_data="x", session_id="close-sess-9"))

    assert outcome["closed_session_id"] == "sess-9"


def test_inference_component_name_reaches_the_service(runtime_proxy: Any) -> None:
    with pytest.raises(ClientError, match="Inference component ic-1 not found"):
        run(operator(input_data="x", inference_component_name="ic-1"))

    [request] = runtime_proxy.requests("POST", INVOKE_PATH)
    assert request.headers["X-Amzn-SageMaker-Inference-Component"] == "ic-1"


def test_iris_prediction_from_json_input_data() -> None:
    outcome = run(
        operator(endpoint_name="rt-iris", input_data={"instances": [[5.1, 3.5, 1.4, 0.2]]}, output_format="json")
    )

    assert outcome["output"]["predictions"][0]["label"] == "setosa"
    assert outcome["output_location"] is None
    assert outcome["output_bytes"] > 0


def test_payload_from_s3_and_answer_written_to_s3(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="in/row.csv", Body=b"6.7,3.0,5.2,2.3", ContentType="text/csv")

    outcome = run(
        operator(
            endpoint_name="rt-iris",
            input_location=f"s3://{bucket}/in/row.csv",
            output_location=f"s3://{bucket}/out/answer.json",
        )
    )

    written = s3.get_object(Bucket=bucket, Key="out/answer.json")
    assert json.loads(written["Body"].read())["predictions"][0]["label"] == "virginica"
    assert written["ContentType"] == "application/json"
    assert outcome["output_location"] == f"s3://{bucket}/out/answer.json"
    assert "output" not in outcome


def test_input_location_over_the_real_time_limit_is_refused_before_invoking(
    s3: Any, bucket: str, runtime_proxy: Any
) -> None:
    s3.put_object(Bucket=bucket, Key="big", Body=b"x" * (MAX_REALTIME_BODY_BYTES + 1))

    with pytest.raises(SageMakerAsyncParameterError, match=r"6291457 bytes .* more than the 6291456") as error:
        run(operator(input_location=f"s3://{bucket}/big"))

    assert error.value.parameter == "input_location"
    assert runtime_proxy.requests("POST") == []


def test_input_data_over_the_real_time_limit_is_refused_at_construction() -> None:
    with pytest.raises(SageMakerAsyncParameterError, match="SageMakerInvokeEndpointAsyncOperator"):
        operator(input_data=b"x" * (MAX_REALTIME_BODY_BYTES + 1))


@pytest.mark.parametrize(
    ("parameter", "value", "rule"),
    [
        ("target_variant", "bad_variant", "TargetVariant must be 0-63 ASCII characters"),
        ("session_id", "two words", "SessionId must be 0-256"),
        ("target_model", " leading-space", "TargetModel must be 1-1024"),
        ("inference_component_name", "ends-", "InferenceComponentName"),
        ("custom_attributes", "tab\there", "visible US-ASCII"),
    ],
)
def test_a_bad_field_is_refused_at_construction_naming_its_rule(parameter: str, value: str, rule: str) -> None:
    with pytest.raises(SageMakerAsyncParameterError, match=rule) as error:
        operator(input_data="x", **{parameter: value})

    assert error.value.parameter == parameter
    assert str(error.value).startswith(f"{parameter}=")


def test_a_sensitive_value_is_redacted_in_the_message() -> None:
    with pytest.raises(SageMakerAsyncParameterError) as error:
        operator(input_data="x", custom_attributes="token=s3cr3t\n")

    assert "s3cr3t" not in str(error.value)
    assert "<redacted, 13 characters>" in str(error.value)


def test_a_rendered_bad_value_is_refused_before_any_request(runtime_proxy: Any) -> None:
    op = operator(input_data="x", target_variant="{{ params.variant }}")
    op.target_variant = "no_underscores_allowed"  # what rendering would produce

    with pytest.raises(SageMakerAsyncParameterError, match="target_variant"):
        run(op)

    assert runtime_proxy.requests() == []


def test_location_output_format_needs_an_output_location() -> None:
    with pytest.raises(SageMakerAsyncParameterError, match="output_location"):
        operator(input_data="x", output_format="location")


def test_model_error_is_typed_with_the_models_message_sagemakers_message_and_the_log_group_link(
    runtime_proxy: Any,
) -> None:
    with pytest.raises(SageMakerModelError) as raised:
        run(operator(endpoint_name="rt-iris", input_data="not,iris", content_type="text/csv"))

    error = raised.value
    assert error.original_status_code == 400
    assert "Row 1 must hold exactly 4 numbers" in (error.original_message or "")
    assert error.log_stream_arn == "arn:aws:logs:us-east-1:123456789012:log-group:/aws/sagemaker/Endpoints/rt-iris"
    assert error.log_url == (
        "https://us-east-1.console.aws.amazon.com/cloudwatch/home?region=us-east-1#logsV2:log-groups/log-group/"
        "$252Faws$252Fsagemaker$252FEndpoints$252Frt-iris"
    )
    assert "Received client error (400) from primary" in (error.sagemaker_message or "")
    assert "rt-iris" in str(error)
    assert "HTTP 400" in str(error)
    assert error.log_url in str(error)
    assert f"SageMaker said: {error.sagemaker_message}" in str(error)  # AWS's own text and console link kept
    assert len(runtime_proxy.requests("POST")) == 1  # botocore does not retry a ModelError


@pytest.mark.parametrize(
    ("arn", "url"),
    [
        (
            "arn:aws:logs:eu-west-1:1:log-group:/aws/sagemaker/Endpoints/e",
            "https://eu-west-1.console.aws.amazon.com/cloudwatch/home?region=eu-west-1#logsV2:log-groups/log-group/"
            "$252Faws$252Fsagemaker$252FEndpoints$252Fe",
        ),
        (
            "arn:aws:logs:eu-west-1:1:log-group:/aws/sagemaker/Endpoints/e:*",
            "https://eu-west-1.console.aws.amazon.com/cloudwatch/home?region=eu-west-1#logsV2:log-groups/log-group/"
            "$252Faws$252Fsagemaker$252FEndpoints$252Fe",
        ),
        (
            "arn:aws:logs:eu-west-1:1:log-group:/aws/sagemaker/Endpoints/e:log-stream:AllTraffic/i-1",
            "https://eu-west-1.console.aws.amazon.com/cloudwatch/home?region=eu-west-1#logsV2:log-groups/log-group/"
            "$252Faws$252Fsagemaker$252FEndpoints$252Fe/log-events/AllTraffic$252Fi-1",
        ),
        (
            "arn:aws-cn:logs:cn-north-1:1:log-group:/aws/sagemaker/Endpoints/e",
            "https://cn-north-1.console.amazonaws.cn/cloudwatch/home?region=cn-north-1#logsV2:log-groups/log-group/"
            "$252Faws$252Fsagemaker$252FEndpoints$252Fe",
        ),
        ("arn:aws:s3:::bucket/key", None),
        ("arn:aws:logs:eu-west-1:1:log-group:/g:something-else:x", None),
        ("not an arn", None),
    ],
)
def test_cloudwatch_logs_url_opens_the_log_group_or_the_stream(arn: str, url: str | None) -> None:
    assert cloudwatch_logs_url(arn) == url


def test_answer_larger_than_max_output_bytes_is_a_clear_error() -> None:
    with pytest.raises(SageMakerAsyncOutputTooLarge, match="max_output_bytes=10"):
        run(operator(input_data="x" * 100, max_output_bytes=10))


def test_unknown_endpoint_is_the_services_validation_error() -> None:
    with pytest.raises(ClientError, match="Endpoint rt-nowhere of account 123456789012 not found") as error:
        run(operator(endpoint_name="rt-nowhere", input_data="x"))

    assert error.value.response["Error"]["Code"] == "ValidationError"


@pytest.mark.usefixtures("endpoints")
def test_async_endpoint_invoked_in_real_time_is_a_validation_error() -> None:
    with pytest.raises(ClientError, match="invoke it with InvokeEndpointAsync") as error:
        run(operator(endpoint_name="op-iris", input_data="5.1,3.5,1.4,0.2"))

    assert error.value.response["Error"]["Code"] == "ValidationError"


def test_real_time_endpoint_invoked_async_is_a_validation_error() -> None:
    op = SageMakerInvokeEndpointAsyncOperator(
        task_id="submit", endpoint_name="rt-iris", input_data="5.1,3.5,1.4,0.2", wait_for_completion=False
    )

    with pytest.raises(ClientError, match="not configured for asynchronous inference") as error:
        op.execute({"ti": StandInTaskInstance()})  # type: ignore[arg-type]

    assert error.value.response["Error"]["Code"] == "ValidationError"


def test_a_model_answering_just_past_the_read_timeout_is_invoked_once_and_the_error_says_what_to_set(
    runtime_proxy: Any,
) -> None:
    op = operator(
        endpoint_name="rt-iris",
        input_data="5.1,3.5,1.4,0.2",
        content_type="text/csv",
        custom_attributes="sleep=1.6",  # answers 0.6 s after the client gave up
        botocore_config={"read_timeout": 1, "retries": {"mode": "standard", "max_attempts": 5}},
    )

    with pytest.raises(SageMakerEndpointReadTimeout) as raised:
        run(op)

    assert len(runtime_proxy.requests("POST", "/endpoints/rt-iris/invocations")) == 1  # the model ran once
    assert raised.value.read_timeout == 1
    assert "read_timeout of 1 s" in str(raised.value)
    assert "botocore_config={'read_timeout': 70}" in str(raised.value)


def test_read_timeout_defaults_to_70_seconds_and_a_set_one_is_kept() -> None:
    assert SageMakerRuntimeHook().read_timeout == MODEL_READ_TIMEOUT_SECONDS == 70
    assert SageMakerRuntimeHook(config=Config(read_timeout=5, connect_timeout=3)).read_timeout == 5
    assert SageMakerRuntimeHook(config=Config(connect_timeout=3)).conn.meta.config.connect_timeout == 3


def invoke_fault(status: int, error_type: str) -> Fault:
    return Fault(
        match=lambda r: r.method == "POST" and "/invocations" in r.path,
        status=status,
        body=json.dumps({"message": f"injected {error_type}"}).encode(),
        headers={"x-amzn-ErrorType": error_type, "Content-Type": "application/json"},
    )


@pytest.mark.parametrize(
    ("status", "error_type"),
    [(503, "ServiceUnavailable"), (400, "ThrottlingException")],
)
def test_answers_that_prove_the_model_was_not_reached_are_retried(
    runtime_proxy: Any, status: int, error_type: str
) -> None:
    runtime_proxy.add_fault(invoke_fault(status, error_type))

    outcome = run(operator(input_data="x", botocore_config={"retries": {"mode": "standard", "max_attempts": 3}}))

    assert outcome["output_bytes"] > 0
    assert len(runtime_proxy.requests("POST", INVOKE_PATH)) == 2


@pytest.mark.parametrize(
    ("status", "error_type"), [(500, "InternalFailure"), (502, "BadGateway"), (530, "InternalDependencyException")]
)
@pytest.mark.parametrize("mode", ["standard", "legacy", "adaptive"])
def test_a_5xx_that_may_follow_the_model_is_not_retried_in_any_retry_mode(
    runtime_proxy: Any, status: int, error_type: str, mode: str
) -> None:
    runtime_proxy.add_fault(invoke_fault(status, error_type))

    with pytest.raises(ClientError) as raised:
        run(operator(input_data="x", botocore_config={"retries": {"mode": mode, "max_attempts": 3}}))

    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert len(runtime_proxy.requests("POST", INVOKE_PATH)) == 1


def test_no_retry_once_sent_leaves_connection_failures_to_botocore_and_vetoes_read_timeouts() -> None:
    from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError

    assert no_retry_once_sent(caught_exception=EndpointConnectionError(endpoint_url="http://x")) is None
    assert no_retry_once_sent(caught_exception=ConnectTimeoutError(endpoint_url="http://x")) is None
    # Raised, not answered False: botocore before 1.43 reads False as "retry after 0 s" (without end).
    timed_out = ReadTimeoutError(endpoint_url="http://x")
    with pytest.raises(ReadTimeoutError) as raised:
        no_retry_once_sent(caught_exception=timed_out)
    assert raised.value is timed_out
