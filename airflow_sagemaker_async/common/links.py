"""
Console links: the endpoint in the SageMaker console, the output in the S3 console, a model's CloudWatch logs.

The first two are shown on the task; the CloudWatch Logs link of a real-time ModelError
(:func:`cloudwatch_logs_url`) is quoted in the error.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import quote

from airflow.providers.amazon.aws.links.base_aws import BASE_AWS_CONSOLE_LINK, BaseAwsLink

__all__ = ["SageMakerAsyncOutputLink", "SageMakerEndpointLink", "cloudwatch_logs_url"]

_CONSOLE_DOMAINS: Final = {"aws-cn": "console.amazonaws.cn", "aws-us-gov": "console.amazonaws-us-gov.com"}


def cloudwatch_logs_url(log_arn: str) -> str | None:
    """
    Return the CloudWatch console link of a ModelError's ``LogStreamArn``, or ``None`` if it is no logs ARN.

    AWS sends the endpoint's log **group**, ``arn:aws:logs:REGION:ACCOUNT:log-group:/aws/sagemaker/Endpoints/NAME``
    (optionally ending ``:*``): the link opens that group, which holds only this endpoint's streams (one per
    variant and instance). A log **stream** ARN (``...:log-group:GROUP:log-stream:STREAM``) opens that stream.
    Path parts are encoded as the console does (URL-encoded twice, ``%`` written ``$``); the domain follows
    the ARN's partition.

    .. seealso::
        - https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_runtime_InvokeEndpoint.html (ModelError)
        - https://docs.aws.amazon.com/sagemaker/latest/dg/logging-cloudwatch.html (the endpoint's log group)
    """
    parts = log_arn.split(":")
    if len(parts) < 7 or parts[0] != "arn" or parts[2] != "logs" or parts[5] != "log-group" or not parts[6]:
        return None
    partition, region, group = parts[1], parts[3], parts[6]
    rest = parts[7:]
    domain = _CONSOLE_DOMAINS.get(partition, "console.aws.amazon.com")
    url = f"https://{region}.{domain}/cloudwatch/home?region={region}#logsV2:log-groups/log-group/{_encode(group)}"
    if rest[:1] == ["log-stream"] and len(rest) > 1:
        return f"{url}/log-events/{_encode(':'.join(rest[1:]))}"
    if rest in ([], ["*"]):
        return url
    return None


def _encode(value: str) -> str:
    """Encode a log group or stream name as the CloudWatch console's URL fragment does."""
    return quote(quote(value, safe=""), safe="").replace("%", "$")


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
