from __future__ import annotations

import subprocess
import sys

import airflow_sagemaker_async.local as local


def test_public_names_are_exactly_the_documented_ones():
    assert sorted(local.__all__) == sorted(
        [
            "DEFAULT_PATH",
            "IRIS_IMAGE",
            "BackendAlreadyRunningError",
            "InvocationRecord",
            "InvocationStatus",
            "LocalBackendError",
            "LocalEndpoint",
            "LocalSageMakerAsyncBackend",
        ]
    )
    for name in local.__all__:
        assert getattr(local, name) is not None


def test_the_whole_local_package_runs_without_importing_airflow():
    code = (
        "import sys\n"
        "from airflow_sagemaker_async.local import LocalSageMakerAsyncBackend\n"
        "import airflow_sagemaker_async.local.cli, airflow_sagemaker_async.local.iris_container\n"
        "with LocalSageMakerAsyncBackend(region_name='ap-south-1') as backend:\n"
        "    backend.client('s3').list_buckets()\n"
        "print(sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.strip() == "[]"
