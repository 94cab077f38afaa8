"""The package's public surface: exact exports, one version, provider registration, light imports."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import airflow_sagemaker_async

PACKAGE_DIR = Path(airflow_sagemaker_async.__file__).parent
EXPECTED = {
    "AsyncInferenceSubmission",
    "SageMakerAsyncBatchFailed",
    "SageMakerAsyncBatchInferenceTrigger",
    "SageMakerInvokeEndpointAsyncBatchOperator",
    "SageMakerAsyncError",
    "SageMakerAsyncInferenceError",
    "SageMakerAsyncInferenceSensor",
    "SageMakerAsyncInferenceTimeout",
    "SageMakerAsyncInferenceTrigger",
    "SageMakerAsyncOutputDecodeError",
    "SageMakerAsyncOutputError",
    "SageMakerAsyncOutputMissing",
    "SageMakerAsyncOutputTooLarge",
    "SageMakerAsyncParameterError",
    "SageMakerEndpointReadTimeout",
    "SageMakerInvokeEndpointAsyncOperator",
    "SageMakerInvokeEndpointOperator",
    "SageMakerInvokeEndpointWithResponseStreamOperator",
    "SageMakerModelError",
    "SageMakerResponseStreamError",
    "SageMakerRuntimeHook",
    "__version__",
}


def test_all_is_exactly_the_public_names_and_each_resolves() -> None:
    assert set(airflow_sagemaker_async.__all__) == EXPECTED
    assert len(airflow_sagemaker_async.__all__) == len(EXPECTED)
    for name in EXPECTED:
        assert getattr(airflow_sagemaker_async, name) is not None


def test_version_has_one_source() -> None:
    assert importlib.metadata.version("airflow-sagemaker-async") == airflow_sagemaker_async.__version__


def test_importing_the_package_or_its_local_backend_does_not_import_airflow() -> None:
    code = (
        "import sys, airflow_sagemaker_async, airflow_sagemaker_async.local; "
        "print(sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert result.stdout.strip() == "[]"


def test_the_plugin_never_imports_the_local_backend() -> None:
    for path in PACKAGE_DIR.glob("*.py"):
        tree = ast.parse(path.read_text())
        imported = [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)] + [
            alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
        ]
        assert not [m for m in imported if ".local" in m], path.name


def test_trigger_module_has_no_blocking_calls() -> None:
    source = (PACKAGE_DIR / "triggers.py").read_text()
    tree = ast.parse(source)
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}

    assert not {"boto3", "time", "requests"} & imported
    assert "time.sleep" not in source
    assert "open(" not in source
    assert ".conn." not in source  # the sync boto3 client of a hook


def test_airflow_lists_the_provider() -> None:
    env = {**os.environ, "AIRFLOW__LOGGING__LOGGING_LEVEL": "ERROR"}
    result = subprocess.run(
        [sys.executable, "-m", "airflow", "providers", "list", "--output", "json"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )

    start = result.stdout.index("[")
    providers = {p["package_name"]: p for p in json.loads(result.stdout[start:])}
    assert providers["airflow-sagemaker-async"]["version"] == airflow_sagemaker_async.__version__
