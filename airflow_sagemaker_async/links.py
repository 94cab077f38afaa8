"""Console links shown on the task: the endpoint in the SageMaker console, the output in the S3 console."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from airflow.providers.amazon.aws.links.base_aws import BASE_AWS_CONSOLE_LINK, BaseAwsLink

__all__ = ["SageMakerAsyncOutputLink", "SageMakerEndpointLink"]


class SageMakerEndpointLink(BaseAwsLink):
    """Link to the endpoint's page in the SageMaker console (monitoring, async config, CloudWatch metrics)."""

    name = "SageMaker Endpoint"
    key = "sagemaker_endpoint"
    format_str = BASE_AWS_CONSOLE_LINK + "/sagemaker/home?region={region_name}#/endpoints/{endpoint_name}"


class SageMakerAsyncOutputLink(BaseAwsLink):
    """Link to the request's output object in the S3 console (persisted as ``bucket`` and ``key``)."""

    name = "S3 Output Object"
    key = "sagemaker_async_output"
    format_str = "https://s3.console.{aws_domain}/s3/object/{bucket}?region={region_name}&prefix={key}"

    def format_link(self, **kwargs: Any) -> str:
        """Format the link with the key URL-quoted (keys may hold ``/``, ``=`` or spaces)."""
        if "key" in kwargs:
            kwargs = {**kwargs, "key": quote(kwargs["key"], safe="/")}
        return super().format_link(**kwargs)
