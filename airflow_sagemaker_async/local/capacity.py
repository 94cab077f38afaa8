"""Scale-to-zero of an async endpoint, emulated: instance count, idle scale-in, backlog, cold start (opt-in).

Off unless the backend is given a :class:`ScaleToZero` (``LocalSageMakerAsyncBackend(scale_to_zero=...)``, or
the attribute of the same name set before an endpoint is created): then each async endpoint created from then
on gets a :class:`CapacityController`, a task on the runtime's event loop that every ``tick_seconds``:

- reads Application Auto Scaling from moto (in this process): the scalable target
  ``endpoint/<name>/variant/<variant>`` (dimension ``sagemaker:variant:DesiredInstanceCount``) and the
  scaling policies on it (``RegisterScalableTarget``, ``PutScalingPolicy`` through boto3 against the moto URL);
- **scales in to 0** when the target's ``MinCapacity`` is 0 and no request has been queued or running for
  ``scale_in_idle_seconds``;
- at 0 instances, lets requests **queue** (InvokeEndpointAsync still answers 202; nothing runs; each request
  still expires after its ``RequestTTLSeconds`` x ``time_scale``, with an ``Expired`` notification);
- **scales up from 0** only if a **step-scaling policy** is attached to the target: AWS starts the scale-up on
  the CloudWatch alarm of that policy (metric ``HasBacklogWithoutCapacity``); the local backend evaluates no
  alarm, so any step-scaling policy on the target counts as the scale-from-zero policy. One instance starts
  ``cold_start_seconds`` after the first queued request is seen, then the backlog drains. Without the policy the
  endpoint stays at 0 and the requests expire: the hang the plugin's cold-start log line explains;
- keeps moto's ``DescribeEndpoint`` true: ``ProductionVariants[0].CurrentInstanceCount`` is the emulated count,
  ``DesiredInstanceCount`` the count being started (1 during a cold start).

The containers themselves keep running: only the workers that feed them are held (the instance count is what
the plugin can observe; a process restart would only make tests slower).

Where AWS documents nothing, the shape hardest for the plugin (see the README, "Scale to zero"): AWS also scales
up from zero without the step policy once the backlog exceeds a target-tracking policy's target value; that path
is not emulated (the endpoint stays at 0); scale-in follows an idle period, not CloudWatch alarms.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from airflow_sagemaker_async.local.records import InvocationStatus

if TYPE_CHECKING:
    from airflow_sagemaker_async.local.endpoints import EndpointRuntime

log = logging.getLogger(__name__)

#: Application Auto Scaling's scalable dimension of a SageMaker production variant.
SCALABLE_DIMENSION: Final = "sagemaker:variant:DesiredInstanceCount"


@dataclass(frozen=True)
class ScaleToZero:
    """Settings of the scale-to-zero emulation (wall-clock seconds; ``time_scale`` does not apply).

    :param cold_start_seconds: from the first request queued at 0 instances (with a step-scaling policy) to the
        instance serving, default 5 (on AWS: minutes).
    :param scale_in_idle_seconds: with ``MinCapacity`` 0, scale in after this long without a queued or running
        request, default 60.
    :param tick_seconds: how often the controller looks, default 0.05.
    :raises ValueError: a negative value, or a tick that is not positive.
    """

    cold_start_seconds: float = 5.0
    scale_in_idle_seconds: float = 60.0
    tick_seconds: float = 0.05

    def __post_init__(self) -> None:
        if self.cold_start_seconds < 0 or self.scale_in_idle_seconds < 0 or not self.tick_seconds > 0:
            raise ValueError(
                "ScaleToZero needs cold_start_seconds >= 0, scale_in_idle_seconds >= 0 and tick_seconds > 0; "
                f"got {self}."
            )


def resource_id(endpoint_name: str, variant_name: str) -> str:
    """Application Auto Scaling's resource id of a production variant: ``endpoint/<name>/variant/<variant>``."""
    return f"endpoint/{endpoint_name}/variant/{variant_name}"


def _autoscaling_backend(account_id: str, region_name: str) -> Any:
    from moto.applicationautoscaling.models import applicationautoscaling_backends

    return applicationautoscaling_backends[account_id][region_name]


def min_capacity(account_id: str, region_name: str, resource: str) -> int | None:
    """Return the registered scalable target's ``MinCapacity``, or ``None`` when no target is registered."""
    target = _autoscaling_backend(account_id, region_name).targets.get(SCALABLE_DIMENSION, {}).get(resource)
    return None if target is None or target.min_capacity is None else int(target.min_capacity)


def has_step_scaling_policy(account_id: str, region_name: str, resource: str) -> bool:
    """Tell whether a step-scaling policy is attached to the target (the emulation's scale-from-zero policy)."""
    policies = list(_autoscaling_backend(account_id, region_name).policies.values())
    return any(
        policy.resource_id == resource
        and policy.scalable_dimension == SCALABLE_DIMENSION
        and policy.step_scaling_policy_configuration is not None
        for policy in policies
    )


class CapacityController:
    """Emulate one endpoint's instance count (see the module doc); runs on the runtime's event loop.

    :param runtime: the endpoint (its workers wait on :attr:`gate` while the count is 0).
    :param settings: the emulation's timings.
    :param account_id: moto's account of the endpoint.
    :param region_name: its region.
    """

    def __init__(self, runtime: EndpointRuntime, settings: ScaleToZero, account_id: str, region_name: str) -> None:
        self.runtime = runtime
        self.settings = settings
        self.account_id = account_id
        self.region_name = region_name
        self.resource = resource_id(runtime.spec.endpoint_name, runtime.spec.variant_name)
        self.instances = runtime.spec.instance_count
        self.gate = asyncio.Event()
        self.gate.set()
        self._idle_since = time.monotonic()
        self._cold_start_at: float | None = None

    def start(self) -> None:
        """Hold the runtime's workers on :attr:`gate` and start the controller's task (cancelled with the workers)."""
        self.runtime.capacity_gate = self.gate
        self.runtime._workers.append(  # cancelled and awaited with the workers on stop()
            asyncio.create_task(self._run(), name=f"capacity-{self.runtime.spec.endpoint_name}")
        )

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.tick_seconds)
            try:
                self.step(time.monotonic())
            except Exception:  # a moto detail changed: keep the endpoint serving, say why once a tick
                log.exception("%s: scale-to-zero emulation step failed", self.runtime.spec.endpoint_name)

    def step(self, now: float) -> None:
        """Look once: scale in after the idle period, start a cold start on a backlog, end it after its length."""
        statuses = [invocation.status for invocation in self.runtime.invocations]
        backlog = sum(status is InvocationStatus.QUEUED for status in statuses)
        if backlog or any(status is InvocationStatus.IN_PROGRESS for status in statuses):
            self._idle_since = now
        name = self.runtime.spec.endpoint_name
        if self.instances > 0:
            if (
                min_capacity(self.account_id, self.region_name, self.resource) == 0
                and now - self._idle_since >= self.settings.scale_in_idle_seconds
            ):
                self.instances = 0
                self.gate.clear()
                self._publish(current=0, desired=0)
                log.info("%s scaled in to 0 instances (MinCapacity 0, idle %gs)", name, now - self._idle_since)
            return
        if self._cold_start_at is None:
            if backlog and has_step_scaling_policy(self.account_id, self.region_name, self.resource):
                self._cold_start_at = now
                self._publish(current=0, desired=1)
                log.info(
                    "%s cold start: %d request(s) queued at 0 instances; one instance in %gs",
                    name,
                    backlog,
                    self.settings.cold_start_seconds,
                )
            return
        if now - self._cold_start_at >= self.settings.cold_start_seconds:
            self._cold_start_at = None
            self.instances = 1
            self._idle_since = now
            self._publish(current=1, desired=1)
            self.gate.set()
            log.info("%s scaled up from 0 to 1 instance; the backlog drains", name)

    def _publish(self, *, current: int, desired: int) -> None:
        """Write the counts where moto's DescribeEndpoint reads them (the first production variant)."""
        from airflow_sagemaker_async.local.control_plane import sagemaker_backend

        endpoint = sagemaker_backend(self.account_id, self.region_name).endpoints.get(self.runtime.spec.endpoint_name)
        if endpoint is None or not endpoint.production_variants:
            return
        variant = endpoint.production_variants[0]
        variant["CurrentInstanceCount"] = current
        variant["DesiredInstanceCount"] = desired
