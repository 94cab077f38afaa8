from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from airflow_sagemaker_async.local.sigv4 import SignatureError, verify_sigv4
from tests.local.conftest import IRIS_ROW
from tests.local.signing import send, send_signed, signed_headers


def path(iris) -> str:
    return f"/endpoints/{iris.name}/async-invocations"


def test_correctly_signed_hand_made_request_is_accepted(backend, iris):
    status, headers, body = send_signed(backend, path(iris), IRIS_ROW, {"X-Amzn-SageMaker-Content-Type": "text/csv"})
    assert status == 202
    assert body["InferenceId"]
    assert headers["X-Amzn-SageMaker-OutputLocation"].startswith("s3://sagemaker-async-local/local-iris/output/")


def test_unsigned_request_answers_403_and_is_not_queued(backend, iris):
    before = len(backend.invocations(iris.name))
    status, headers, body = send(backend, path(iris), IRIS_ROW, {})
    assert status == 403
    assert headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
    assert body == {"message": "Missing Authentication Token"}
    assert len(backend.invocations(iris.name)) == before


def test_request_signed_with_the_wrong_secret_answers_403(backend, iris):
    runtime = backend.client("sagemaker-runtime")
    import boto3

    wrong = boto3.client(
        "sagemaker-runtime",
        endpoint_url=backend.runtime_url,
        region_name=backend.region_name,
        aws_access_key_id=backend.aws_access_key_id,
        aws_secret_access_key="not-the-secret",
    )
    with pytest.raises(ClientError) as raised:
        wrong.invoke_endpoint_async(EndpointName=iris.name, Body=IRIS_ROW)
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert raised.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert runtime.invoke_endpoint_async(EndpointName=iris.name, Body=IRIS_ROW)["InferenceId"]


def test_request_signed_with_an_unknown_access_key_answers_403(backend, iris):
    status, headers, _ = send_signed(backend, path(iris), IRIS_ROW, access_key="AKIDSOMEONEELSE")
    assert status == 403
    assert headers["x-amzn-ErrorType"] == "UnrecognizedClientException"


def test_body_changed_after_signing_answers_403(backend, iris):
    headers = signed_headers(backend, path(iris), IRIS_ROW)
    status, answered, _ = send(backend, path(iris), b"6.7,3.0,5.2,2.3", headers)
    assert status == 403
    assert answered["x-amzn-ErrorType"] == "InvalidSignatureException"


def test_signed_header_changed_after_signing_answers_403(backend, iris):
    headers = signed_headers(backend, path(iris), IRIS_ROW, {"X-Amzn-SageMaker-Custom-Attributes": "a=1"})
    headers["X-Amzn-SageMaker-Custom-Attributes"] = "a=2"
    status, _, _ = send(backend, path(iris), IRIS_ROW, headers)
    assert status == 403


@pytest.mark.parametrize(
    ("signing", "message"),
    [
        ({"service": "s3"}, "Credential should be scoped to correct service: 'sagemaker'."),
        ({"region": "eu-west-1"}, "Credential should be scoped to a valid region"),
    ],
    ids=["wrong-service", "wrong-region"],
)
def test_signature_scoped_to_another_service_or_region_answers_403(backend, iris, signing, message):
    status, headers, body = send_signed(backend, path(iris), IRIS_ROW, **signing)
    assert status == 403
    assert headers["x-amzn-ErrorType"] == "InvalidSignatureException"
    assert body["message"].startswith(message)


def test_sync_invoke_endpoint_also_requires_a_signature(backend, iris):
    status, _, _ = send(backend, f"/endpoints/{iris.name}/invocations", IRIS_ROW, {})
    assert status == 403


def _botocore_signed(url: str, body: bytes, headers: dict[str, str]) -> AWSRequest:
    request = AWSRequest(method="POST", url=url, data=body, headers=headers)
    SigV4Auth(Credentials("AKID", "SECRET"), "sagemaker", "us-east-1").add_auth(request)
    return request


def test_verify_accepts_what_botocore_signs_including_query_and_spaced_header_values():
    request = _botocore_signed(
        "http://127.0.0.1:9/endpoints/a-b/async-invocations?x=1&a=b%20c",
        b"payload",
        {"X-Amzn-SageMaker-Custom-Attributes": "  a=1   b=2 ", "Host": "127.0.0.1:9"},
    )
    verify_sigv4(
        method="POST",
        url=request.url,
        headers=dict(request.headers.items()),
        body=b"payload",
        access_key="AKID",
        secret_key="SECRET",
        region_name="us-east-1",
    )
    with pytest.raises(SignatureError):
        verify_sigv4(
            method="POST",
            url=request.url.replace("x=1", "x=2"),
            headers=dict(request.headers.items()),
            body=b"payload",
            access_key="AKID",
            secret_key="SECRET",
            region_name="us-east-1",
        )


def test_verify_refuses_a_signature_older_than_15_minutes():
    request = _botocore_signed("http://127.0.0.1:9/endpoints/e/async-invocations", b"", {"Host": "127.0.0.1:9"})
    signed_at = datetime.strptime(request.headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    with pytest.raises(SignatureError, match="Signature expired"):
        verify_sigv4(
            method="POST",
            url=request.url,
            headers=dict(request.headers.items()),
            body=b"",
            access_key="AKID",
            secret_key="SECRET",
            region_name="us-east-1",
            now=signed_at + timedelta(minutes=16),
        )
