"""
Cold starts explained: the endpoint's instance count at submission, and why a request at zero instances waits.

An asynchronous endpoint may scale in to zero instances (Application Auto Scaling with ``MinCapacity`` 0).
A request that arrives then is queued until the endpoint scales up again, and AWS starts that scale-up from
zero only on a step-scaling policy (its CloudWatch alarm on ``HasBacklogWithoutCapacity``), or, without one,
once the backlog exceeds a target-tracking policy's target value. Without either the requests wait until their
``RequestTTLSeconds`` pass and expire: the task looks like it hangs. This module reads, once per submission
(cached a short while per endpoint in the worker process):

1. ``DescribeEndpoint``: the sum of ``ProductionVariants[].CurrentInstanceCount`` (``None`` when unknown);
2. when that is 0, ``DescribeScalingPolicies`` (Application Auto Scaling, namespace ``sagemaker``, resource
   ``endpoint/<name>/variant/<variant>``, dimension ``sagemaker:variant:DesiredInstanceCount``) for each variant:
   is there a step-scaling policy (the scale-from-zero policy)?

and logs what it found in plain words, once per task: at zero instances, that requests queue until the
endpoint scales up, and whether the scale-from-zero policy is there. A missing permission (``AccessDenied``)
or any other error of these calls is never an error of the task: one log line says the check was skipped and
why, and the count is ``None``.

It does I/O through boto3 clients built by the amazon provider's ``AwsBaseHook`` (the task's four AWS
parameters), so it is not one of the I/O-free cores. IAM: ``sagemaker:DescribeEndpoint`` and
``application-autoscaling:DescribeScalingPolicies``, both optional.

.. seealso::
    - https://docs.aws.amazon.com/sagemaker/latest/dg/async-inference-autoscale.html (the
      ``HasBacklogWithoutCapacity`` step-scaling policy: "Optional: Define a scaling policy that scales up from
      zero for new requests")
    - :external+boto3:py:meth:`SageMaker.Client.describe_endpoint`
    - :external+boto3:py:meth:`ApplicationAutoScaling.Client.describe_scaling_policies`
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Final

from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
from botocore.exceptions import BotoCoreError, ClientError

__all__ = [
    "AUTOSCALE_DOC",
    "CACHE_SECONDS",
    "SCALABLE_DIMENSION",
    "EndpointCapacity",
    "capacity_from_description",
    "check_endpoint_capacity",
    "clear_cache",
    "log_capacity",
    "scale_from_zero_policy",
]

#: AWS's page on autoscaling an asynchronous endpoint, at its section on the scale-from-zero policy.
AUTOSCALE_DOC: Final = (
    "https://docs.aws.amazon.com/sagemaker/latest/dg/async-inference-autoscale.html#async-inference-autoscale-scale-up"
)
#: Seconds a worker process reuses what it read about an endpoint (count, policy, or why the check was skipped).
CACHE_SECONDS: Final = 30.0
#: Application Auto Scaling's scalable dimension of a SageMaker production variant.
SCALABLE_DIMENSION: Final = "sagemaker:variant:DesiredInstanceCount"

_cache: dict[tuple[Any, ...], tuple[float, EndpointCapacity]] = {}
_cache_lock = threading.Lock()


@dataclass(frozen=True)
class EndpointCapacity:
    """
    What the worker learnt about an endpoint's instances at submission.

    :param endpoint_name: the endpoint.
    :param instances: the sum of ``CurrentInstanceCount`` over its production variants; ``None`` when unknown
        (the check was skipped, or the endpoint does not say, e.g. while ``Creating``).
    :param variants: the production variants' names (for the scaling policy's resource id).
    :param scale_from_zero_policy: at zero instances: ``True`` when a step-scaling policy is attached to a
        variant, ``False`` when none is, ``None`` when not looked up (not at zero, or not allowed).
    :param skipped: why (part of) the check was skipped, e.g. ``"DescribeEndpoint: AccessDeniedException
        (...)"``; ``None`` when nothing was.
    """

    endpoint_name: str
    instances: int | None
    variants: tuple[str, ...] = ()
    scale_from_zero_policy: bool | None = None
    skipped: str | None = None


def _reason(operation: str, error: BaseException) -> str:
    if isinstance(error, ClientError):
        details = error.response.get("Error", {})
        code = details.get("Code") or type(error).__name__
        message = details.get("Message") or ""
        return f"{operation} answered {code}" + (f" ({message})" if message else "")
    return f"{operation} failed: {error!r}"


def capacity_from_description(endpoint_name: str, description: dict[str, Any]) -> EndpointCapacity:
    """
    Read the instance count out of a ``DescribeEndpoint`` answer (no I/O).

    :param description: the answer of :external+boto3:py:meth:`SageMaker.Client.describe_endpoint`.
    :return: ``instances`` is the sum of ``ProductionVariants[].CurrentInstanceCount``, ``None`` when no variant
        has one (an endpoint being created, or serverless variants).
    """
    variants = description.get("ProductionVariants") or []
    counts = [variant["CurrentInstanceCount"] for variant in variants if "CurrentInstanceCount" in variant]
    return EndpointCapacity(
        endpoint_name=endpoint_name,
        instances=sum(int(count) for count in counts) if counts else None,
        variants=tuple(str(variant["VariantName"]) for variant in variants if variant.get("VariantName")),
    )


def scale_from_zero_policy(autoscaling: Any, endpoint_name: str, variants: tuple[str, ...]) -> bool:
    """
    Tell whether a step-scaling policy is attached to one of the endpoint's variants.

    AWS scales an asynchronous endpoint up from zero for a single new request only through a step-scaling
    policy whose CloudWatch alarm watches ``HasBacklogWithoutCapacity``; the alarm itself is not read (that
    would need ``cloudwatch:DescribeAlarms``), so any step-scaling policy on the variant counts.

    :param autoscaling: a boto3 ``application-autoscaling`` client.
    :raises botocore.exceptions.ClientError: e.g. ``AccessDeniedException``.

    .. seealso:: :external+boto3:py:meth:`ApplicationAutoScaling.Client.describe_scaling_policies`
    """
    for variant in variants:
        answer = autoscaling.describe_scaling_policies(
            ServiceNamespace="sagemaker",
            ResourceId=f"endpoint/{endpoint_name}/variant/{variant}",
            ScalableDimension=SCALABLE_DIMENSION,
        )
        if any(policy.get("PolicyType") == "StepScaling" for policy in answer.get("ScalingPolicies", [])):
            return True
    return False


def check_endpoint_capacity(
    endpoint_name: str,
    hook_parameters: dict[str, Any],
    *,
    description: dict[str, Any] | None = None,
    use_cache: bool = True,
) -> EndpointCapacity:
    """
    Return the endpoint's instance count (and, at zero, whether it has a scale-from-zero policy); never raises.

    Cached :data:`CACHE_SECONDS` per endpoint and AWS parameters in this process. Airflow 3 runs each task
    instance in a process of its own, so a mapped task of N instances still makes N DescribeEndpoint calls;
    a throttled call (SageMaker's control-plane limits) only skips the check.

    :param endpoint_name: the endpoint.
    :param hook_parameters: the task's ``aws_conn_id``, ``region_name``, ``verify``, ``botocore_config``
        (``AwsBaseOperator._hook_parameters``).
    :param description: a ``DescribeEndpoint`` answer the caller already has (the batch operator): not called again.
    :param use_cache: read and fill the process cache, default ``True``.
    :return: the :class:`EndpointCapacity`; a call that failed (``AccessDenied``, throttling, a network error)
        leaves ``skipped`` set and what it would have told unknown (``None``).
    """
    key = (endpoint_name, *sorted((name, repr(value)) for name, value in hook_parameters.items()))
    now = time.monotonic()
    if use_cache and description is None:
        with _cache_lock:
            cached = _cache.get(key)
        if cached is not None and now - cached[0] < CACHE_SECONDS:
            return cached[1]
    try:
        if description is None:
            sagemaker: Any = AwsBaseHook(client_type="sagemaker", **hook_parameters).conn
            description = sagemaker.describe_endpoint(EndpointName=endpoint_name)
        capacity = capacity_from_description(endpoint_name, description)
    except (ClientError, BotoCoreError) as error:
        capacity = EndpointCapacity(endpoint_name, None, skipped=_reason("DescribeEndpoint", error))
    if capacity.instances == 0:
        try:
            autoscaling: Any = AwsBaseHook(client_type="application-autoscaling", **hook_parameters).conn
            policy = scale_from_zero_policy(autoscaling, endpoint_name, capacity.variants)
            capacity = EndpointCapacity(endpoint_name, 0, capacity.variants, scale_from_zero_policy=policy)
        except (ClientError, BotoCoreError) as error:
            capacity = EndpointCapacity(
                endpoint_name, 0, capacity.variants, skipped=_reason("DescribeScalingPolicies", error)
            )
    if use_cache:
        with _cache_lock:
            _cache[key] = (now, capacity)
    return capacity


def clear_cache() -> None:
    """Forget every cached :class:`EndpointCapacity` (tests; a process that knows an endpoint changed)."""
    with _cache_lock:
        _cache.clear()


def log_capacity(log: Any, capacity: EndpointCapacity, *, request_ttl_seconds: int | None = None) -> None:
    """
    Log what ``capacity`` means for the requests just submitted: nothing when the endpoint has instances.

    At most two lines: the cold start (at zero instances), and, when a call was refused, that the check
    was skipped and why.

    :param log: the task's logger.
    :param request_ttl_seconds: the requests' ``RequestTTLSeconds``, for the "until they expire" advice;
        default SageMaker's 21600.
    """
    name = capacity.endpoint_name
    if capacity.instances == 0:
        ttl = request_ttl_seconds or 21600
        if capacity.scale_from_zero_policy is True:
            advice = (
                "It has a step-scaling policy (the scale-from-zero policy, on HasBacklogWithoutCapacity), so it "
                "should start an instance within minutes; the wait includes that cold start."
            )
        elif capacity.scale_from_zero_policy is False:
            advice = (
                "It has NO step-scaling policy to scale up from zero (HasBacklogWithoutCapacity): unless a "
                "target-tracking policy's backlog target is exceeded, it stays at zero and the requests expire "
                f"after their RequestTTLSeconds ({ttl} s). Add the policy: {AUTOSCALE_DOC}"
            )
        else:
            advice = (
                "Whether it has a scale-from-zero policy (a step-scaling policy on HasBacklogWithoutCapacity) is "
                f"unknown; without one the requests expire after their RequestTTLSeconds ({ttl} s). See {AUTOSCALE_DOC}"
            )
        log.warning(
            "Cold start: endpoint %s has 0 instances now; the requests queue until it scales up. %s", name, advice
        )
    if capacity.skipped:
        log.info(
            "Endpoint capacity check (cold starts) skipped for %s: %s. It is optional; grant "
            "sagemaker:DescribeEndpoint and application-autoscaling:DescribeScalingPolicies to have it.",
            name,
            capacity.skipped,
        )
