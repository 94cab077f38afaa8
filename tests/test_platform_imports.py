"""
Every module imports and every operator builds under the installed pins.

Run in every set CI installs: the newest (constraints.txt), the oldest (constraints-oldest.txt), each
platform's own set (make test-platforms: MWAA 3.3.1 and 3.2.1) and Python 3.13. An import that works only
with the newest common-compat, task SDK or botocore fails here first, naming the module.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil
from typing import Any

import pytest

import airflow_sagemaker_async
from airflow_sagemaker_async.batch.operators import SageMakerInvokeEndpointAsyncBatchOperator
from airflow_sagemaker_async.inference.operators import SageMakerInvokeEndpointAsyncOperator
from airflow_sagemaker_async.inference.sensors import SageMakerAsyncInferenceSensor
from airflow_sagemaker_async.realtime.operators import SageMakerInvokeEndpointOperator
from airflow_sagemaker_async.realtime.streaming import SageMakerInvokeEndpointWithResponseStreamOperator

MODULES = sorted(
    module.name for module in pkgutil.walk_packages(airflow_sagemaker_async.__path__, prefix="airflow_sagemaker_async.")
)
# The distributions whose oldest versions the code is written against (pyproject's lower bounds).
PINNED = (
    "apache-airflow",
    "apache-airflow-task-sdk",
    "apache-airflow-providers-amazon",
    "apache-airflow-providers-common-compat",
    "botocore",
    "aiobotocore",
)


def test_the_package_has_modules_to_import() -> None:
    assert "airflow_sagemaker_async.inference.operators" in MODULES
    assert "airflow_sagemaker_async.local.server" in MODULES
    assert len(MODULES) > 30


@pytest.mark.parametrize("module", MODULES)
def test_every_module_imports(module: str) -> None:
    assert importlib.import_module(module).__name__ == module


OPERATORS: list[tuple[type[Any], dict[str, Any]]] = [
    (SageMakerInvokeEndpointAsyncOperator, {"endpoint_name": "iris", "input_location": "s3://bucket/in.csv"}),
    (
        SageMakerInvokeEndpointAsyncOperator,
        {"endpoint_name": "iris", "input_data": {"x": 1}, "input_s3_prefix": "s3://bucket/in"},
    ),
    (
        SageMakerInvokeEndpointAsyncBatchOperator,
        {"endpoint_name": "iris", "input_locations": ["s3://bucket/a.csv", "s3://bucket/b.csv"]},
    ),
    (SageMakerAsyncInferenceSensor, {"output_location": "s3://bucket/out/x.out", "inference_id": "x"}),
    (SageMakerInvokeEndpointOperator, {"endpoint_name": "rt", "input_data": "5.1,3.5,1.4,0.2"}),
    (SageMakerInvokeEndpointWithResponseStreamOperator, {"endpoint_name": "llm", "input_data": {"inputs": "hi"}}),
]


@pytest.mark.parametrize(("operator", "kwargs"), OPERATORS, ids=lambda x: getattr(x, "__name__", ""))
def test_every_operator_builds(operator: type[Any], kwargs: dict[str, Any]) -> None:
    task = operator(task_id="t", **kwargs)

    assert task.task_id == "t"
    assert all(getattr(task, name) == value for name, value in kwargs.items() if name != "input_locations")


def test_the_versions_under_test_are_reported(record_property: Any) -> None:
    versions = {name: importlib.metadata.version(name) for name in PINNED}
    for name, found in versions.items():
        record_property(name, found)
    print("versions under test:", ", ".join(f"{name} {found}" for name, found in versions.items()))
    assert all(versions.values())
