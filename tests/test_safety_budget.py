"""The safety checks' budget: one event loop's push waits make at most ``checks_per_second`` HEADs per second."""

from __future__ import annotations

import asyncio
import math
import random
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest

from airflow_sagemaker_async.common.watch import (
    DEFAULT_PUSH_MAX_POLL_INTERVAL,
    DEFAULT_SAFETY_CHECKS_PER_SECOND,
    PollSchedule,
    SafetyBudget,
    isoformat,
    safety_ceiling,
    utcnow,
)
from airflow_sagemaker_async.inference.triggers import SageMakerAsyncInferenceTrigger, safety_budget


def steady_rate(waits: int, budget: SafetyBudget, base: float = DEFAULT_PUSH_MAX_POLL_INTERVAL) -> float:
    """HEADs per second of ``waits`` safety schedules at the budget's ceiling, phases spread, over two ceilings.

    Each wait's schedule is the real :class:`PollSchedule` (seeded jitter), its ceiling set from the budget
    before each delay as the trigger does; each check is one HEAD (a safety check).
    """
    for _ in range(waits):
        budget.join()
    ceiling = budget.ceiling(base)
    start = utcnow()
    window_from, window_to = ceiling, 3 * ceiling  # after one ceiling every phase has checked once
    phases = random.Random(waits)  # a spread of phases, not cryptography
    checks = 0
    for index in range(waits):
        schedule = PollSchedule(f"wait-{index}", start + timedelta(days=365), ceiling, ceiling)
        now = phases.uniform(0, ceiling)
        while now < window_to:
            checks += window_from <= now
            schedule.set_ceiling(budget.ceiling(base))
            delay = schedule.next_delay(start + timedelta(seconds=now))
            assert delay is not None
            now += delay
    return checks / (window_to - window_from)


@pytest.mark.parametrize("waits", [1, 100, 5_000])
def test_few_waits_keep_their_own_ceiling(waits: int) -> None:
    budget = SafetyBudget()
    for _ in range(waits):
        budget.join()
    assert budget.ceiling(300.0) == 300.0
    assert budget.ceiling(45.0) == max(45.0, waits / (0.9 * DEFAULT_SAFETY_CHECKS_PER_SECOND))


@pytest.mark.parametrize("waits", [10_000, 30_000])
def test_the_head_rate_stays_under_the_cap_as_waits_grow(waits: int) -> None:
    budget = SafetyBudget(DEFAULT_SAFETY_CHECKS_PER_SECOND)
    rate = steady_rate(waits, budget)
    assert budget.ceiling(300.0) > 300.0  # stretched
    assert rate <= DEFAULT_SAFETY_CHECKS_PER_SECOND * 1.05, rate  # 5 %: the sampling error of a 2-ceiling window
    assert rate >= DEFAULT_SAFETY_CHECKS_PER_SECOND * 0.85, rate  # stretched just enough, not more


def test_without_the_budget_the_rate_grows_with_the_waits() -> None:
    """The same simulation without a cap: 10,000 waits at 300 s make about 37 HEADs per second."""
    rate = steady_rate(10_000, SafetyBudget(math.inf))
    assert rate > DEFAULT_SAFETY_CHECKS_PER_SECOND * 1.5, rate


def test_the_ceiling_follows_the_waits_held_and_the_documented_formula() -> None:
    budget = SafetyBudget(20.0)
    for _ in range(10_000):
        budget.join()
    assert budget.ceiling(300.0) == pytest.approx(555.6, abs=0.1)
    assert 2 * budget.ceiling(300.0) == pytest.approx(1111.1, abs=0.1)  # the documented worst case at 10,000
    for _ in range(6_000):
        budget.leave()
    assert budget.ceiling(300.0) == 300.0
    for _ in range(5_000):
        budget.leave()
    assert budget.waits == 0
    assert budget.ceiling(300.0) == 300.0
    assert safety_ceiling(300.0, 100_000, 20.0) == pytest.approx(5555.6, abs=0.1)


@pytest.mark.parametrize("value", [0, -1, math.nan])
def test_a_cap_that_is_not_positive_is_refused_naming_the_setting(value: float) -> None:
    with pytest.raises(ValueError, match=r"safety_checks_per_second must be > 0.*\[sagemaker_async\]"):
        SafetyBudget(value)


def test_each_event_loop_has_its_own_budget_with_the_configured_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    async def budget() -> SafetyBudget:
        return safety_budget()

    async def twice() -> tuple[SafetyBudget, SafetyBudget]:
        return safety_budget(), safety_budget()

    first, again = asyncio.run(twice())
    assert first is again
    assert first.checks_per_second == DEFAULT_SAFETY_CHECKS_PER_SECOND
    monkeypatch.setenv("AIRFLOW__SAGEMAKER_ASYNC__SAFETY_CHECKS_PER_SECOND", "7.5")
    other = asyncio.run(budget())
    assert other is not first
    assert other.checks_per_second == 7.5
    monkeypatch.setenv("AIRFLOW__SAGEMAKER_ASYNC__SAFETY_CHECKS_PER_SECOND", "0")
    with pytest.raises(ValueError, match="safety_checks_per_second"):
        asyncio.run(budget())


@pytest.mark.asyncio
async def test_push_waits_on_one_loop_share_the_cap_against_real_servers(
    sagemaker_async_backend: Any,
    bucket: str,
    s3_proxy: Any,
    aws_connection: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Four push waits with a 0.2 s ceiling and a cap of 4 HEADs/s: their safety checks stretch to about 1.1 s.

    Without the budget they would make about 80 HEADs in the 4 s window (4 waits / 0.18 s); the cap allows 16.
    A loaded machine only makes fewer.
    """
    monkeypatch.setenv("AIRFLOW__SAGEMAKER_ASYNC__SAFETY_CHECKS_PER_SECOND", "4")
    aws_connection(s3_proxy.url)
    queue_url = sagemaker_async_backend.client("sqs").create_queue(QueueName=f"budget-{uuid.uuid4().hex[:10]}")[
        "QueueUrl"
    ]
    triggers = [
        SageMakerAsyncInferenceTrigger(
            inference_id=f"budget-{index}",
            output_location=f"s3://{bucket}/out/budget-{index}.out",
            failure_location=f"s3://{bucket}/fail/budget-{index}-error.out",
            deadline=isoformat(utcnow() + timedelta(hours=1)),
            notification_queue_url=queue_url,
            poll_interval=0.2,
            max_poll_interval=0.2,
        )
        for index in range(4)
    ]

    async def run(trigger: SageMakerAsyncInferenceTrigger) -> None:
        async for _ in trigger.run():
            raise AssertionError("no result was written: the wait must go on")

    tasks = [asyncio.create_task(run(trigger)) for trigger in triggers]
    try:
        for _ in range(600):  # the first checks (two HEADs each), however loaded the machine
            if len(s3_proxy.requests("HEAD")) >= 8:
                break
            await asyncio.sleep(0.1)
        assert safety_budget().waits == 4
        assert safety_budget().ceiling(0.2) == pytest.approx(4 / (0.9 * 4))
        await asyncio.sleep(3)  # the intervals grow 1.5x per check from 0.2 s to the stretched 1.1 s
        before, started = len(s3_proxy.requests("HEAD")), time.monotonic()
        await asyncio.sleep(4)
        heads, window = len(s3_proxy.requests("HEAD")) - before, time.monotonic() - started
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert heads <= 4 * window * 1.6, f"{heads} HEADs in {window:.1f} s"
    assert safety_budget().waits == 0  # each wait left the budget, also when cancelled
