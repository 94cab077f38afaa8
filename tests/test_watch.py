"""The poll schedule and deadline of one wait, and the synchronous shell against a real moto S3."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from airflow_sagemaker_async.common.layout import DEADLINE_MARGIN_SECONDS, compute_deadline
from airflow_sagemaker_async.common.watch import (
    BACKOFF_FACTOR,
    JITTER_LOW,
    Probe,
    ProbeResult,
    Watch,
    utcnow,
    watch_sync,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def make_watch(inference_id: str = "a", deadline: datetime | None = None, **kwargs: Any) -> Watch:
    return Watch(
        inference_id=inference_id,
        output_location="s3://b/out/x.out",
        failure_location="s3://b/fail/x-error.out",
        deadline=deadline or T0 + timedelta(days=1),
        **kwargs,
    )


def delays(watch: Watch, n: int) -> list[float]:
    return [watch.next_delay(T0) or 0.0 for _ in range(n)]


def test_interval_backs_off_from_poll_interval_to_the_ceiling() -> None:
    got = delays(make_watch(poll_interval=2, max_poll_interval=30), 12)

    expected = [min(2 * BACKOFF_FACTOR**i, 30) for i in range(12)]
    for delay, nominal in zip(got, expected, strict=True):
        assert nominal * JITTER_LOW <= delay <= nominal
    assert max(got) <= 30
    assert got[-1] >= 30 * JITTER_LOW


def test_jitter_differs_between_requests_but_not_between_rebuilds() -> None:
    first = delays(make_watch("request-1"), 8)
    rebuilt = delays(make_watch("request-1"), 8)
    other = delays(make_watch("request-2"), 8)

    assert first == rebuilt
    assert first != other


def test_a_thousand_waits_started_together_spread_their_polls() -> None:
    fifth_poll = [delays(make_watch(f"r{i}"), 5)[-1] for i in range(1000)]

    assert max(fifth_poll) - min(fifth_poll) > 0.15 * max(fifth_poll)
    assert len({round(d, 3) for d in fifth_poll}) > 500


def test_sleep_never_passes_the_deadline_and_stops_after_it() -> None:
    watch = make_watch(deadline=T0 + timedelta(seconds=1), poll_interval=10, max_poll_interval=10)

    assert watch.next_delay(T0) == pytest.approx(1.0)
    assert watch.next_delay(T0 + timedelta(seconds=1)) is None


def test_default_deadline_is_ttl_plus_invocation_timeout_plus_margin() -> None:
    assert compute_deadline(T0, request_ttl_seconds=None, invocation_timeout_seconds=None, max_wait_seconds=None) == (
        T0 + timedelta(seconds=21600 + 900 + DEADLINE_MARGIN_SECONDS)
    )
    assert compute_deadline(T0, request_ttl_seconds=120, invocation_timeout_seconds=60, max_wait_seconds=None) == (
        T0 + timedelta(seconds=180 + DEADLINE_MARGIN_SECONDS)
    )


def test_max_wait_seconds_overrides_the_default_deadline() -> None:
    assert compute_deadline(T0, request_ttl_seconds=120, invocation_timeout_seconds=60, max_wait_seconds=5) == (
        T0 + timedelta(seconds=5)
    )


def test_sync_shell_finds_the_failure_object(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="f/x-error.out", Body=b"boom")
    watch = Watch(
        inference_id="x",
        output_location=f"s3://{bucket}/o/x.out",
        failure_location=f"s3://{bucket}/f/x-error.out",
        deadline=utcnow() + timedelta(seconds=10),
    )

    event = watch_sync(watch, s3, sleep=lambda _: None)

    assert event["status"] == "Failed"
    assert event["location"] == f"s3://{bucket}/f/x-error.out"


def test_sync_shell_times_out_at_the_deadline(s3: Any, bucket: str) -> None:
    slept: list[float] = []
    watch = Watch(
        inference_id="x",
        output_location=f"s3://{bucket}/o/x.out",
        failure_location=None,
        deadline=utcnow() + timedelta(seconds=0.3),
        poll_interval=0.05,
        max_poll_interval=0.1,
    )

    started = time.monotonic()
    event = watch_sync(watch, s3, sleep=lambda s: (slept.append(s), time.sleep(s)))
    elapsed = time.monotonic() - started

    assert event["status"] == "TimedOut"
    # Not before the deadline, and never a sleep that overshoots it (however slow each HEAD is on a loaded
    # machine: slow checks only leave less to sleep).
    assert elapsed >= 0.25
    assert sum(slept) <= 0.35
    assert event["checks"] == len(slept) + 1


def test_timeout_error_names_both_locations_the_deadline_and_the_403_when_seen() -> None:
    from airflow_sagemaker_async.common.outcome import timeout_error
    from airflow_sagemaker_async.common.watch import FORBIDDEN_HINT

    watch = make_watch("late", endpoint_name="iris", submitted_at="2026-01-01T00:00:00+00:00")
    watch.forbidden_seen = True

    error = timeout_error(watch.timeout_event())

    message = str(error)
    assert "s3://b/out/x.out" in message
    assert "s3://b/fail/x-error.out" in message
    assert "2026-01-02T00:00:00+00:00" in message  # the deadline
    assert "expired in its queue" in message
    assert FORBIDDEN_HINT in message
    assert error.outcome["status"] == "TimedOut"
    assert error.outcome["endpoint_name"] == "iris"
    assert FORBIDDEN_HINT not in str(timeout_error(make_watch("late").timeout_event()))


def test_a_final_event_is_held_until_not_before_and_no_longer() -> None:
    watch = make_watch(not_before=T0 + timedelta(seconds=10))

    assert watch.hold(now=T0) == 10
    assert watch.hold(now=T0 + timedelta(seconds=4)) == 6
    assert watch.hold(now=T0 + timedelta(seconds=11)) == 0
    assert make_watch().hold(now=T0) == 0


@pytest.mark.parametrize("failure_location", ["s3://b/fail/x-error.out", None])
def test_safety_checks_take_one_location_in_turn_and_count_once_each(failure_location: str | None) -> None:
    watch = Watch(inference_id="a", output_location="s3://b/out/x.out", failure_location=failure_location, deadline=T0)
    seen = []
    for _ in range(5):
        (target,) = watch.safety_targets()
        seen.append(target.kind)
        assert watch.observe(target, ProbeResult(Probe.ABSENT)) is None

    assert seen == (["output", "failure"] * 3)[:5] if failure_location else ["output"] * 5
    assert watch.checks == 5
