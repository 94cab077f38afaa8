from __future__ import annotations

import json

from airflow_sagemaker_async.local import InvocationStatus
from tests.local.conftest import IRIS_ROW, wait_final


def test_airflow_connection_has_the_documented_shape(backend):
    assert backend.airflow_connection() == {
        "conn_type": "aws",
        "login": backend.aws_access_key_id,
        "password": backend.aws_secret_access_key,
        "extra": {
            "region_name": "us-east-1",
            "endpoint_url": backend.endpoint_url,
            "service_config": {"sagemaker-runtime": {"endpoint_url": backend.runtime_url}},
        },
    }
    assert json.loads(backend.airflow_connection_env()) == backend.airflow_connection()


def test_airflow_aws_hooks_built_from_the_connection_reach_moto_and_the_runtime(
    backend, iris, sagemaker_async_airflow_conn
):
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    runtime = AwsBaseHook(aws_conn_id=sagemaker_async_airflow_conn, client_type="sagemaker-runtime").get_conn()
    s3 = AwsBaseHook(aws_conn_id=sagemaker_async_airflow_conn, client_type="s3").get_conn()

    answer = runtime.invoke_endpoint_async(EndpointName=iris.name, Body=IRIS_ROW, ContentType="text/csv")
    assert wait_final(backend, iris.name, answer["InferenceId"]).status is InvocationStatus.COMPLETED
    bucket, key = answer["OutputLocation"].removeprefix("s3://").split("/", 1)
    assert b"setosa" in s3.get_object(Bucket=bucket, Key=key)["Body"].read()
