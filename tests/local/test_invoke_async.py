from __future__ import annotations

import json
import re
import uuid

import pytest
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from airflow_sagemaker_async.local import InvocationStatus
from tests.local.conftest import IRIS_ROW, object_exists, read_object, record, wait_final

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def invoke(backend, endpoint_name, **kwargs):
    kwargs.setdefault("ContentType", "text/csv")
    if "InputLocation" not in kwargs:
        kwargs.setdefault("Body", IRIS_ROW)
    return backend.client("sagemaker-runtime").invoke_endpoint_async(EndpointName=endpoint_name, **kwargs)


def test_invoke_endpoint_async_answers_202_with_inference_id_and_both_locations(backend, iris):
    answer = invoke(backend, iris.name)

    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert re.fullmatch(UUID, answer["InferenceId"])
    output = re.fullmatch(rf"s3://sagemaker-async-local/local-iris/output/({UUID})\.out", answer["OutputLocation"])
    failure = re.fullmatch(
        rf"s3://sagemaker-async-local/local-iris/failure/({UUID})-error\.out", answer["FailureLocation"]
    )
    assert output
    assert failure
    assert output[1] == failure[1], "output and failure objects share one uuid"
    assert output[1] != answer["InferenceId"], "the object uuid is not the inference id, as on SageMaker"


@pytest.mark.asyncio
async def test_aiobotocore_invoke_endpoint_async_answers_202_and_the_output_appears(backend, iris):
    async with get_session().create_client(
        "sagemaker-runtime", **backend.client_kwargs("sagemaker-runtime")
    ) as runtime:
        answer = await runtime.invoke_endpoint_async(
            EndpointName=iris.name, Body=IRIS_ROW, ContentType="text/csv", InferenceId="aio-1"
        )
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert answer["InferenceId"] == "aio-1"
    final = wait_final(backend, iris.name, "aio-1")
    assert final.status is InvocationStatus.COMPLETED
    assert object_exists(backend, answer["OutputLocation"])


def test_output_object_holds_the_model_answer_with_the_model_content_type(backend, iris):
    answer = invoke(backend, iris.name, Body=b"5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3")
    assert wait_final(backend, iris.name, answer["InferenceId"]).status is InvocationStatus.COMPLETED

    body, content_type = read_object(backend, answer["OutputLocation"])
    assert content_type == "application/json"
    labels = [p["label"] for p in json.loads(body)["predictions"]]
    assert labels == ["setosa", "virginica"]
    assert not object_exists(backend, answer["FailureLocation"])


def test_json_instances_are_classified(backend, iris):
    answer = invoke(
        backend, iris.name, Body=json.dumps({"instances": [[6.0, 2.9, 4.5, 1.5]]}), ContentType="application/json"
    )
    assert wait_final(backend, iris.name, answer["InferenceId"]).status is InvocationStatus.COMPLETED
    body, _ = read_object(backend, answer["OutputLocation"])
    assert json.loads(body)["predictions"][0]["label"] == "versicolor"


def test_caller_inference_id_is_answered_and_recorded_exactly_once(backend, iris):
    inference_id = f"mine-{uuid.uuid4()}"
    answer = invoke(backend, iris.name, InferenceId=inference_id)

    assert answer["InferenceId"] == inference_id
    matches = [r for r in backend.invocations(iris.name) if r.inference_id == inference_id]
    assert len(matches) == 1
    assert matches[0].output_location == answer["OutputLocation"]
    assert matches[0].failure_location == answer["FailureLocation"]


def test_input_location_s3_uri_is_read_from_s3(backend, iris):
    backend.client("s3").put_object(Bucket="sagemaker-async-local", Key="inputs/row.csv", Body=IRIS_ROW)
    answer = invoke(backend, iris.name, InputLocation="s3://sagemaker-async-local/inputs/row.csv")

    final = wait_final(backend, iris.name, answer["InferenceId"])
    assert final.status is InvocationStatus.COMPLETED
    assert final.input_location == "s3://sagemaker-async-local/inputs/row.csv"
    assert json.loads(read_object(backend, answer["OutputLocation"])[0])["predictions"][0]["label"] == "setosa"


def test_input_location_https_s3_url_is_read_from_s3(backend, iris):
    backend.client("s3").put_object(Bucket="sagemaker-async-local", Key="inputs/https.csv", Body=IRIS_ROW)
    answer = invoke(
        backend, iris.name, InputLocation="https://sagemaker-async-local.s3.us-east-1.amazonaws.com/inputs/https.csv"
    )
    assert wait_final(backend, iris.name, answer["InferenceId"]).status is InvocationStatus.COMPLETED


def test_missing_input_object_fails_and_writes_a_failure_object(backend, iris):
    answer = invoke(backend, iris.name, InputLocation="s3://sagemaker-async-local/inputs/absent.csv")

    final = wait_final(backend, iris.name, answer["InferenceId"])
    assert final.status is InvocationStatus.FAILED
    assert "Could not read the input at s3://sagemaker-async-local/inputs/absent.csv" in final.failure_reason
    assert json.loads(read_object(backend, answer["FailureLocation"])[0])["message"] == final.failure_reason


def test_filename_and_s3_output_path_extension_shape_both_object_keys(backend, iris):
    answer = invoke(backend, iris.name, S3OutputPathExtension="runs/2024-01-01", Filename="result.json")

    assert answer["OutputLocation"] == "s3://sagemaker-async-local/local-iris/output/runs/2024-01-01/result.json"
    assert answer["FailureLocation"] == (
        "s3://sagemaker-async-local/local-iris/failure/runs/2024-01-01/result.json-error.out"
    )
    assert wait_final(backend, iris.name, answer["InferenceId"]).status is InvocationStatus.COMPLETED
    assert object_exists(backend, answer["OutputLocation"])


def test_s3_output_path_extension_alone_keeps_the_generated_name(backend, iris):
    answer = invoke(backend, iris.name, S3OutputPathExtension="batch-7")
    assert re.fullmatch(rf"s3://sagemaker-async-local/local-iris/output/batch-7/{UUID}\.out", answer["OutputLocation"])


def test_model_client_error_writes_the_model_error_body_to_the_failure_location(backend, iris):
    answer = invoke(backend, iris.name, Body=b"1,2")

    final = wait_final(backend, iris.name, answer["InferenceId"])
    assert final.status is InvocationStatus.FAILED
    assert final.failure_reason.startswith("ClientError: Received client error (400) from model")
    body, content_type = read_object(backend, answer["FailureLocation"])
    assert json.loads(body) == {"message": "Row 1 must hold exactly 4 numbers, got ['1', '2'].", "status": "error"}
    assert content_type == "application/json"
    assert not object_exists(backend, answer["OutputLocation"])


def test_model_server_error_writes_the_failure_object(backend, iris):
    answer = invoke(backend, iris.name, CustomAttributes="status=500")

    final = wait_final(backend, iris.name, answer["InferenceId"])
    assert final.status is InvocationStatus.FAILED
    assert final.failure_reason.startswith("ClientError: Received server error (500) from model")
    assert json.loads(read_object(backend, answer["FailureLocation"])[0])["status"] == "error"


def test_unknown_endpoint_answers_validation_error_and_records_nothing(backend, iris):
    before = len(backend.invocations())
    with pytest.raises(ClientError) as raised:
        invoke(backend, "no-such-endpoint")

    error = raised.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert error["Error"]["Code"] == "ValidationError"
    assert error["Error"]["Message"] == "Endpoint no-such-endpoint of account 123456789012 not found."
    assert len(backend.invocations()) == before


@pytest.mark.asyncio
async def test_aiobotocore_unknown_endpoint_answers_validation_error(backend, iris):
    async with get_session().create_client(
        "sagemaker-runtime", **backend.client_kwargs("sagemaker-runtime")
    ) as runtime:
        with pytest.raises(ClientError) as raised:
            await runtime.invoke_endpoint_async(EndpointName="no-such-endpoint", Body=IRIS_ROW)
    assert raised.value.response["Error"]["Code"] == "ValidationError"


def test_invoke_endpoint_sync_on_an_async_endpoint_answers_validation_error(backend, iris):
    runtime = backend.client("sagemaker-runtime")
    with pytest.raises(runtime.exceptions.ValidationError) as raised:
        runtime.invoke_endpoint(EndpointName=iris.name, Body=IRIS_ROW, ContentType="text/csv")
    assert "InvokeEndpointAsync" in raised.value.response["Error"]["Message"]
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_custom_attributes_reach_the_model_verbatim_and_are_recorded(backend, iris):
    answer = invoke(backend, iris.name, CustomAttributes="trace=abc; sleep=0")
    final = wait_final(backend, iris.name, answer["InferenceId"])
    assert final.status is InvocationStatus.COMPLETED
    assert final.custom_attributes == "trace=abc; sleep=0"
    assert record(backend, iris.name, answer["InferenceId"]).started_time is not None
