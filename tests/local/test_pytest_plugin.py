from __future__ import annotations

import os
import subprocess
import sys
import textwrap

USER_TESTS = """
import json
import os


def test_my_dag_gets_a_prediction(sagemaker_async_backend, sagemaker_async_iris_endpoint, sagemaker_async_airflow_conn):
    connection = json.loads(os.environ["AIRFLOW_CONN_AWS_DEFAULT"])
    assert connection["extra"]["endpoint_url"] == sagemaker_async_backend.endpoint_url
    runtime = sagemaker_async_backend.client("sagemaker-runtime")
    runtime.invoke_endpoint_async(
        EndpointName=sagemaker_async_iris_endpoint.endpoint_name, Body=b"5.1,3.5,1.4,0.2", ContentType="text/csv"
    )
    sagemaker_async_backend.wait_idle(timeout=30)
    assert [r.status.value for r in sagemaker_async_backend.invocations("iris-endpoint")] == ["Completed"]


def test_time_scale_comes_from_the_ini_option(sagemaker_async_backend):
    assert sagemaker_async_backend.time_scale == 0.5
"""


def test_fixtures_work_in_a_users_test_suite_through_the_entry_point(tmp_path):
    (tmp_path / "test_user.py").write_text(textwrap.dedent(USER_TESTS))
    (tmp_path / "pytest.ini").write_text("[pytest]\nsagemaker_async_local_time_scale = 0.5\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_user.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_loading_the_plugin_imports_neither_the_backend_nor_airflow():
    code = (
        "import sys, airflow_sagemaker_async.local.pytest_plugin\n"
        "heavy = [m for m in ('moto', 'aiohttp', 'aiobotocore', 'boto3', 'sklearn', 'airflow') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
