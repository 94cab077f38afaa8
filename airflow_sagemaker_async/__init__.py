"""
Apache Airflow operators, sensor and trigger for Amazon SageMaker inference: asynchronous, real-time, streaming.

The public names are exported lazily (PEP 562), so ``import airflow_sagemaker_async.local`` or
reading ``__version__`` does not import Airflow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "SageMakerRuntimeHook": "common.hooks",
    "AsyncInferenceSubmission": "common.hooks",
    "SageMakerInvokeEndpointAsyncOperator": "inference.operators",
    "SageMakerInvokeEndpointOperator": "realtime.operators",
    "SageMakerInvokeEndpointWithResponseStreamOperator": "realtime.streaming",
    "SageMakerModelError": "common.exceptions",
    "SageMakerEndpointReadTimeout": "common.exceptions",
    "SageMakerResponseStreamError": "common.exceptions",
    "SageMakerInvokeEndpointAsyncBatchOperator": "batch.operators",
    "SageMakerAsyncBatchInferenceTrigger": "batch.triggers",
    "SageMakerAsyncBatchFailed": "common.exceptions",
    "SageMakerAsyncInferenceSensor": "inference.sensors",
    "SageMakerAsyncInferenceTrigger": "inference.triggers",
    "SageMakerAsyncError": "common.exceptions",
    "SageMakerAsyncParameterError": "common.exceptions",
    "SageMakerAsyncInferenceError": "common.exceptions",
    "SageMakerAsyncInferenceTimeout": "common.exceptions",
    "SageMakerAsyncOutputError": "common.exceptions",
    "SageMakerAsyncOutputTooLarge": "common.exceptions",
    "SageMakerAsyncOutputMissing": "common.exceptions",
    "SageMakerAsyncOutputDecodeError": "common.exceptions",
}

__all__ = [
    "AsyncInferenceSubmission",
    "SageMakerAsyncBatchFailed",
    "SageMakerAsyncBatchInferenceTrigger",
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
    "SageMakerInvokeEndpointAsyncBatchOperator",
    "SageMakerInvokeEndpointAsyncOperator",
    "SageMakerInvokeEndpointOperator",
    "SageMakerInvokeEndpointWithResponseStreamOperator",
    "SageMakerModelError",
    "SageMakerResponseStreamError",
    "SageMakerRuntimeHook",
    "__version__",
]

if TYPE_CHECKING:
    from airflow_sagemaker_async.batch.operators import SageMakerInvokeEndpointAsyncBatchOperator
    from airflow_sagemaker_async.batch.triggers import SageMakerAsyncBatchInferenceTrigger
    from airflow_sagemaker_async.common.exceptions import (
        SageMakerAsyncBatchFailed,
        SageMakerAsyncError,
        SageMakerAsyncInferenceError,
        SageMakerAsyncInferenceTimeout,
        SageMakerAsyncOutputDecodeError,
        SageMakerAsyncOutputError,
        SageMakerAsyncOutputMissing,
        SageMakerAsyncOutputTooLarge,
        SageMakerAsyncParameterError,
        SageMakerEndpointReadTimeout,
        SageMakerModelError,
        SageMakerResponseStreamError,
    )
    from airflow_sagemaker_async.common.hooks import AsyncInferenceSubmission, SageMakerRuntimeHook
    from airflow_sagemaker_async.inference.operators import SageMakerInvokeEndpointAsyncOperator
    from airflow_sagemaker_async.inference.sensors import SageMakerAsyncInferenceSensor
    from airflow_sagemaker_async.inference.triggers import SageMakerAsyncInferenceTrigger
    from airflow_sagemaker_async.realtime.operators import SageMakerInvokeEndpointOperator
    from airflow_sagemaker_async.realtime.streaming import SageMakerInvokeEndpointWithResponseStreamOperator


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
