"""The runtime's direct S3 calls (:mod:`~airflow_sagemaker_async.local.moto_direct`) store and fail as moto's server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from airflow_sagemaker_async.local.moto_direct import DirectS3

BODY = b'{"prediction": "setosa", "scores": [0.98, 0.01, 0.01]}'


def _stored(s3: Any, bucket: str, key: str) -> dict[str, Any]:
    """What a reader of the object sees: head (with the checksum), body, ACL, tags."""
    head = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    seen = {name: head.get(name) for name in ("ContentType", "ContentLength", "ETag", "ChecksumCRC32", "Metadata")}
    seen["StorageClass"] = head.get("StorageClass", "STANDARD")
    seen["ChecksumType"] = head.get("ChecksumType")
    seen["Body"] = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    seen["Grants"] = s3.get_object_acl(Bucket=bucket, Key=key)["Grants"]
    seen["Tags"] = s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]
    return seen


async def _http_put(backend: Any, **kwargs: Any) -> None:
    config = AioConfig(s3={"addressing_style": "path"}, max_pool_connections=4, retries={"max_attempts": 3})
    async with get_session().create_client("s3", config=config, **backend.client_kwargs("s3")) as http:
        await http.put_object(**kwargs)


async def _both(backend: Any, calls: list[tuple[str, dict[str, Any]]]) -> list[tuple[Any, Any]]:
    """Run each (method, kwargs) through the runtime's former aiobotocore client and through DirectS3."""
    config = AioConfig(s3={"addressing_style": "path"}, max_pool_connections=4, retries={"max_attempts": 3})
    direct = DirectS3(backend.account_id)
    answers: list[tuple[Any, Any]] = []
    async with get_session().create_client("s3", config=config, **backend.client_kwargs("s3")) as http:
        for method, kwargs in calls:
            pair: list[Any] = []
            for client in (http, direct):
                try:
                    answer = await getattr(client, method)(**kwargs)
                    if "Body" in answer:
                        async with answer["Body"] as stream:
                            answer = (answer["ContentType"], answer["ContentLength"], await stream.read())
                    else:
                        answer = answer["ETag"]
                except ClientError as error:
                    answer = (str(error), error.response["ResponseMetadata"]["HTTPStatusCode"])
                pair.append(answer)
            answers.append((pair[0], pair[1]))
    return answers


def test_a_put_stores_the_object_moto_s_server_stores_and_a_get_reads_it_back(sagemaker_async_backend: Any) -> None:
    backend = sagemaker_async_backend
    s3 = backend.client("s3")
    bucket = "moto-direct"
    s3.create_bucket(Bucket=bucket)
    for key in ("http.out", "direct.out"):
        s3.delete_object(Bucket=bucket, Key=key)
    put = {"Bucket": bucket, "Body": BODY, "ContentType": "application/json"}
    answers = asyncio.run(
        _both(
            backend,
            [
                ("put_object", {**put, "Key": "http.out"}),
                ("get_object", {"Bucket": bucket, "Key": "http.out"}),
            ],
        )
    )
    (put_http, put_direct), (get_http, get_direct) = answers
    assert put_http == put_direct  # the same ETag
    assert get_http == get_direct == ("application/json", len(BODY), BODY)
    # both wrote http.out above: now one object through each path alone
    asyncio.run(_http_put(backend, **put, Key="http.out"))
    asyncio.run(DirectS3(backend.account_id).put_object(**put, Key="direct.out"))
    assert _stored(s3, bucket, "direct.out") == _stored(s3, bucket, "http.out")


@pytest.mark.parametrize(
    ("method", "where"),
    [
        ("get_object", {"Bucket": "moto-direct", "Key": "missing/key.csv"}),
        ("get_object", {"Bucket": "no-such-bucket-direct", "Key": "a.csv"}),
        ("put_object", {"Bucket": "no-such-bucket-direct", "Key": "a.out", "Body": b"x", "ContentType": "text/csv"}),
    ],
)
def test_an_error_is_the_client_error_moto_s_server_answers(
    sagemaker_async_backend: Any, method: str, where: dict[str, Any]
) -> None:
    sagemaker_async_backend.client("s3").create_bucket(Bucket="moto-direct")
    ((http, direct),) = asyncio.run(_both(sagemaker_async_backend, [(method, where)]))
    assert isinstance(http, tuple)  # an error, not an answer
    assert direct == http


def test_the_backend_s_runtime_uses_it(sagemaker_async_backend: Any) -> None:
    assert isinstance(sagemaker_async_backend._running_runtime()._context.s3, DirectS3)
