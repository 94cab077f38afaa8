"""A local, offline SageMaker asynchronous inference backend for tests and demos.

moto serves S3, SNS, SQS and the SageMaker control plane; our server answers ``InvokeEndpointAsync`` as
SageMaker does and runs model containers as local processes. See ``README.md`` beside this file.

Importing this package is cheap (names are loaded on first use), so that the pytest plugin it ships
costs nothing to test suites that do not use it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_sagemaker_async.local.backend import (
        DEFAULT_PATH,
        LocalBackendError,
        LocalEndpoint,
        LocalSageMakerAsyncBackend,
    )
    from airflow_sagemaker_async.local.containers import IRIS_IMAGE
    from airflow_sagemaker_async.local.control_plane import BackendAlreadyRunningError
    from airflow_sagemaker_async.local.records import InvocationRecord, InvocationStatus

__all__ = [
    "DEFAULT_PATH",
    "IRIS_IMAGE",
    "BackendAlreadyRunningError",
    "InvocationRecord",
    "InvocationStatus",
    "LocalBackendError",
    "LocalEndpoint",
    "LocalSageMakerAsyncBackend",
]

_WHERE = {
    "DEFAULT_PATH": "backend",
    "LocalBackendError": "backend",
    "LocalEndpoint": "backend",
    "LocalSageMakerAsyncBackend": "backend",
    "IRIS_IMAGE": "containers",
    "BackendAlreadyRunningError": "control_plane",
    "InvocationRecord": "records",
    "InvocationStatus": "records",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
