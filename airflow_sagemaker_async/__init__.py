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
    "SageMakerRuntimeHook": "hooks",
    "AsyncInferenceSubmission": "hooks",
    "SageMakerInvokeEndpointAsyncOperator": "operators",
    "SageMakerInvokeEndpointOperator": "realtime",
    "SageMakerInvokeEndpointWithResponseStreamOperator": "streaming",
    "SageMakerModelError": "exceptions",
    "SageMakerEndpointReadTimeout": "exceptions",
    "SageMakerResponseStreamError": "exceptions",
    "SageMakerInvokeEndpointAsyncBatchOperator": "batch_operator",
    "SageMakerAsyncBatchInferenceTrigger": "batch_trigger",
    "SageMakerAsyncBatchFailed": "exceptions",
    "SageMakerAsyncInferenceSensor": "sensors",
    "SageMakerAsyncInferenceTrigger": "triggers",
    "SageMakerAsyncError": "exceptions",
    "SageMakerAsyncParameterError": "exceptions",
    "SageMakerAsyncInferenceError": "exceptions",
    "SageMakerAsyncInferenceTimeout": "exceptions",
    "SageMakerAsyncOutputError": "exceptions",
    "SageMakerAsyncOutputTooLarge": "exceptions",
    "SageMakerAsyncOutputMissing": "exceptions",
    "SageMakerAsyncOutputDecodeError": "exceptions",
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
    from airflow_sagemaker_async.batch_operator import SageMakerInvokeEndpointAsyncBatchOperator
    from airflow_sagemaker_async.batch_trigger import SageMakerAsyncBatchInferenceTrigger
    from airflow_sagemaker_async.exceptions import (
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
    from airflow_sagemaker_async.hooks import AsyncInferenceSubmission, SageMakerRuntimeHook
    from airflow_sagemaker_async.operators import SageMakerInvokeEndpointAsyncOperator
    from airflow_sagemaker_async.realtime import SageMakerInvokeEndpointOperator
    from airflow_sagemaker_async.sensors import SageMakerAsyncInferenceSensor
    from airflow_sagemaker_async.streaming import SageMakerInvokeEndpointWithResponseStreamOperator
    from airflow_sagemaker_async.triggers import SageMakerAsyncInferenceTrigger


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
