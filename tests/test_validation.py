"""Bad input is refused with the parameter, the rule and the value named, before any side effect."""

from __future__ import annotations

from typing import Any

import botocore.session
import pytest

from airflow_sagemaker_async.common import validation as v
from airflow_sagemaker_async.common.exceptions import SageMakerAsyncParameterError
from airflow_sagemaker_async.common.rules import INVOKE_ENDPOINT_ASYNC, FieldRule, field_rule
from airflow_sagemaker_async.inference.operators import SageMakerInvokeEndpointAsyncOperator
from airflow_sagemaker_async.inference.sensors import SageMakerAsyncInferenceSensor

GOOD = {"endpoint_name": "iris", "input_location": "s3://bucket/in.csv", "task_id": "t"}


@pytest.mark.parametrize(
    ("parameter", "value"),
    [
        ("endpoint_name", ""),
        ("endpoint_name", "a" * 64),
        ("endpoint_name", "-starts-with-hyphen"),
        ("endpoint_name", "has_underscore"),
        ("endpoint_name", "arn:aws:sagemaker:us-east-1:123:endpoint/x"),
        ("inference_id", ""),
        ("inference_id", "x" * 65),
        ("inference_id", " leading-space"),
        ("inference_id", "tab\tinside"),
        ("inference_id", "non-ascii-é"),
        ("custom_attributes", "x" * 1025),
        ("custom_attributes", "newline\ninside"),
        ("content_type", "x" * 1025),
        ("content_type", "text/csv; é"),
        ("accept", "x" * 1025),
        ("input_location", "bucket/key"),
        ("input_location", "s3:///no-bucket"),
        ("input_location", "ftp://host/key"),
        ("input_location", "s3://b/" + "k" * 1024),
        ("s3_output_path_extension", ""),
        ("s3_output_path_extension", "s3://bucket/x"),
        ("s3_output_path_extension", "has space"),
        ("s3_output_path_extension", "x" * 513),
        ("filename", ""),
        ("filename", "x" * 33),
        ("filename", "two.dots.json"),
        ("filename", ".hidden"),
        ("filename", "sla/sh"),
        ("request_ttl_seconds", 59),
        ("request_ttl_seconds", 21601),
        ("request_ttl_seconds", "soon"),
        ("request_ttl_seconds", True),
        ("invocation_timeout_seconds", 0),
        ("invocation_timeout_seconds", 3601),
        ("invocation_timeout_seconds", 1.5),
    ],
)
def test_static_bad_api_field_is_refused_at_construction_naming_parameter_and_value(parameter: str, value: Any) -> None:
    with pytest.raises(SageMakerAsyncParameterError) as info:
        SageMakerInvokeEndpointAsyncOperator(**{**GOOD, parameter: value})

    assert info.value.parameter == parameter
    message = str(info.value)
    assert message.startswith(f"{parameter}=")
    if parameter != "custom_attributes":
        assert repr(value)[:40] in message


def test_custom_attributes_value_is_redacted_in_the_error() -> None:
    secret = "token=abcd\n" + "s" * 1100

    with pytest.raises(SageMakerAsyncParameterError) as info:
        SageMakerInvokeEndpointAsyncOperator(**GOOD, custom_attributes=secret)

    assert "token=abcd" not in str(info.value)
    assert "redacted" in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "parameter", "rule"),
    [
        ({"input_location": None}, "input_data", "neither"),
        ({"input_data": "1,2,3,4"}, "input_data", "both"),
        ({"input_location": None, "input_data": {"x": {1, 2}}}, "input_data", "JSON"),
        ({"input_location": None, "input_data": float("nan")}, "input_data", "JSON"),
        ({"input_location": None, "input_data": b"x" * 128_001}, "input_data", "input_s3_prefix"),
        (
            {"input_location": None, "input_data": b"x", "input_s3_prefix": "bucket/prefix"},
            "input_s3_prefix",
            "s3://",
        ),
        ({"max_output_bytes": 0}, "max_output_bytes", "greater than 0"),
        ({"max_output_bytes": -1}, "max_output_bytes", "greater than 0"),
        ({"poll_interval": 0}, "poll_interval", "greater than 0"),
        ({"max_poll_interval": -1}, "max_poll_interval", "greater than 0"),
        ({"poll_interval": 10, "max_poll_interval": 5}, "max_poll_interval", "ceiling"),
        ({"output_format": "xml"}, "output_format", "one of"),
        ({"max_wait_seconds": 0}, "max_wait_seconds", "greater than 0"),
    ],
)
def test_operator_refuses_bad_combinations(kwargs: dict[str, Any], parameter: str, rule: str) -> None:
    with pytest.raises(SageMakerAsyncParameterError) as info:
        SageMakerInvokeEndpointAsyncOperator(**{**GOOD, **kwargs})

    if not v.INLINE_BODY and rule == "input_s3_prefix":
        parameter = "input_s3_prefix"  # botocore < 1.43.29: every input_data needs it (tests/test_botocore_range.py)
    assert info.value.parameter == parameter
    assert rule in str(info.value)


def test_templated_values_are_not_checked_at_construction() -> None:
    op = SageMakerInvokeEndpointAsyncOperator(
        task_id="t",
        endpoint_name="{{ params.endpoint }}",
        input_location="{{ ti.xcom_pull('upload') }}",
        request_ttl_seconds="{{ params.ttl }}",
        filename="{{ ds_nodash }}.json",
    )

    assert op.endpoint_name == "{{ params.endpoint }}"


def test_large_payload_with_input_s3_prefix_is_accepted() -> None:
    op = SageMakerInvokeEndpointAsyncOperator(
        task_id="t", endpoint_name="iris", input_data=b"x" * 200_000, input_s3_prefix="s3://bucket/inputs"
    )

    assert op.input_s3_prefix == "s3://bucket/inputs"


def test_sensor_without_output_location_is_refused() -> None:
    with pytest.raises(SageMakerAsyncParameterError) as info:
        SageMakerAsyncInferenceSensor(task_id="s")

    assert info.value.parameter == "output_location"


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"output_location": "not-a-uri"}, "output_location"),
        ({"output_location": "s3://b/k", "failure_location": "https://x/y"}, "failure_location"),
        ({"output_location": "s3://b/k", "inference_id": " x"}, "inference_id"),
        ({"output_location": "s3://b/k", "output_format": "yaml"}, "output_format"),
        ({"output_location": "s3://b/k", "poke_interval": 0}, "poll_interval"),
    ],
)
def test_sensor_refuses_bad_input(kwargs: dict[str, Any], parameter: str) -> None:
    with pytest.raises(SageMakerAsyncParameterError) as info:
        SageMakerAsyncInferenceSensor(task_id="s", **kwargs)

    assert info.value.parameter == parameter


def _one_over(rule: FieldRule) -> Any:
    """A value one step past the service model's maximum of ``rule``."""
    assert rule.maximum is not None
    if rule.type_name == "integer":
        return rule.maximum + 1
    return "a" * (rule.maximum + 1)


@pytest.mark.parametrize("parameter", sorted(set(v.INVOKE_CHECKS) - {"input_location"}))
def test_every_checked_field_takes_its_limit_from_the_installed_service_model(parameter: str) -> None:
    rule = field_rule(INVOKE_ENDPOINT_ASYNC, parameter)

    with pytest.raises(SageMakerAsyncParameterError) as info:
        v.INVOKE_CHECKS[parameter](_one_over(rule))

    assert info.value.parameter == parameter
    assert str(rule.maximum) in str(info.value)


def test_input_location_limit_comes_from_the_service_model() -> None:
    rule = field_rule(INVOKE_ENDPOINT_ASYNC, "input_location")
    assert rule.maximum is not None
    longest = "s3://b/" + "k" * (rule.maximum - len("s3://b/"))

    assert v.check_input_location(longest) == longest
    with pytest.raises(SageMakerAsyncParameterError):
        v.check_input_location(longest + "k")


def test_inline_body_limit_is_the_service_models() -> None:
    model = botocore.session.get_session().get_service_model("sagemaker-runtime")
    body = model.operation_model("InvokeEndpointAsync").input_shape.members.get("Body")

    if body is None:  # botocore < 1.43.29 (MWAA 3.2.1): no inline Body, every payload goes through S3
        assert (v.INLINE_BODY, v.MAX_INLINE_BODY_BYTES) == (False, 0)
    else:
        assert v.INLINE_BODY
        assert body.metadata["max"] == v.MAX_INLINE_BODY_BYTES


@pytest.mark.parametrize(
    ("parameter", "value", "ok"),
    [
        ("endpoint_name", "iris", True),
        ("endpoint_name", "a--b", True),
        ("endpoint_name", "a-", False),
        ("filename", "x.json", True),
        ("filename", "a.b.c", False),
        ("filename", ".x", False),
        ("filename", "9-_", True),
        ("s3_output_path_extension", "daily/2026", True),
        ("s3_output_path_extension", "A!*'()", True),
        ("s3_output_path_extension", "s3:/x", False),
        ("s3_output_path_extension", "a b", False),
        ("input_location", "https://h/p", True),
        ("input_location", "s3://b", True),
        ("input_location", "s3://", False),
        ("input_location", "ftp://x/y", False),
    ],
)
def test_the_service_models_patterns_decide(parameter: str, value: str, ok: bool) -> None:
    if ok:
        assert v.INVOKE_CHECKS[parameter](value) == value
    else:
        with pytest.raises(SageMakerAsyncParameterError):
            v.INVOKE_CHECKS[parameter](value)
