"""Provider metadata read by Airflow's ProvidersManager (entry point ``apache_airflow_provider``)."""

from __future__ import annotations

from typing import Any


def get_provider_info() -> dict[str, Any]:
    """
    Return the provider description ``airflow providers list`` shows.

    The shape is Airflow's provider info schema (``airflow/provider_info.schema.json``).
    """
    from airflow_sagemaker_async import __version__

    return {
        "package-name": "airflow-sagemaker-async",
        "name": "Amazon SageMaker Asynchronous Inference",
        "description": "Operator, sensor and deferrable trigger for Amazon SageMaker asynchronous inference "
        "(InvokeEndpointAsync), watching the request's S3 output and failure locations.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Amazon SageMaker Asynchronous Inference",
                "external-doc-url": "https://docs.aws.amazon.com/sagemaker/latest/dg/async-inference.html",
                "tags": ["aws"],
            }
        ],
        "operators": [
            {
                "integration-name": "Amazon SageMaker Asynchronous Inference",
                "python-modules": [
                    "airflow_sagemaker_async.inference.operators",
                    "airflow_sagemaker_async.realtime.operators",
                    "airflow_sagemaker_async.realtime.streaming",
                    "airflow_sagemaker_async.batch.operators",
                ],
            }
        ],
        "sensors": [
            {
                "integration-name": "Amazon SageMaker Asynchronous Inference",
                "python-modules": ["airflow_sagemaker_async.inference.sensors"],
            }
        ],
        "hooks": [
            {
                "integration-name": "Amazon SageMaker Asynchronous Inference",
                "python-modules": ["airflow_sagemaker_async.common.hooks"],
            }
        ],
        "triggers": [
            {
                "integration-name": "Amazon SageMaker Asynchronous Inference",
                "python-modules": [
                    "airflow_sagemaker_async.inference.triggers",
                    "airflow_sagemaker_async.batch.triggers",
                    "airflow_sagemaker_async.assets.watcher",
                ],
            }
        ],
        "extra-links": [
            "airflow_sagemaker_async.common.links.SageMakerEndpointLink",
            "airflow_sagemaker_async.common.links.SageMakerAsyncOutputLink",
            "airflow_sagemaker_async.ui.links.BatchProgressLink",
        ],
    }
