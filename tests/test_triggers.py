"""The trigger against real S3 objects on a moto server, through aiobotocore (and a fault proxy)."""

from __future__ import annotations

import asyncio
import importlib
from datetime import timedelta
from typing import Any

import pytest

from airflow_sagemaker_async.common.watch import FORBIDDEN_HINT, isoformat, utcnow
from airflow_sagemaker_async.inference.triggers import SageMakerAsyncInferenceTrigger
from tests.proxy import Fault, s3_error

NO_RETRIES = {"retries": {"max_attempts": 1, "mode": "standard"}}


def make_trigger(bucket: str, *, deadline_in: float = 30, **kwargs: Any) -> SageMakerAsyncInferenceTrigger:
    params: dict[str, Any] = {
        "inference_id": "inf-1",
        "output_location": f"s3://{bucket}/out/abc.out",
        "failure_location": f"s3://{bucket}/fail/abc-error.out",
        "deadline": isoformat(utcnow() + timedelta(seconds=deadline_in)),
        "poll_interval": 0.05,
        "max_poll_interval": 0.2,
        **kwargs,
    }
    return SageMakerAsyncInferenceTrigger(**params)


async def collect(trigger: SageMakerAsyncInferenceTrigger, timeout: float = 20) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    return await asyncio.wait_for(run(), timeout)


@pytest.mark.asyncio
async def test_object_at_output_location_yields_one_success_event(
    s3: Any, bucket: str, moto_url: str, aws_connection: Any
) -> None:
    aws_connection(moto_url)
    s3.put_object(Bucket=bucket, Key="out/abc.out", Body=b'{"ok": 1}')

    events = await collect(make_trigger(bucket))

    assert len(events) == 1
    event = events[0]
    assert event["status"] == "Completed"
    assert event["location"] == f"s3://{bucket}/out/abc.out"
    assert event["inference_id"] == "inf-1"
    assert event["completed_at"] is not None
    assert event["s3_forbidden"] is False


@pytest.mark.asyncio
async def test_object_at_failure_location_yields_failure_event(
    s3: Any, bucket: str, moto_url: str, aws_connection: Any
) -> None:
    aws_connection(moto_url)
    s3.put_object(Bucket=bucket, Key="fail/abc-error.out", Body=b'{"message": "bad input"}')

    events = await collect(make_trigger(bucket))

    assert [e["status"] for e in events] == ["Failed"]
    assert events[0]["location"] == f"s3://{bucket}/fail/abc-error.out"


@pytest.mark.asyncio
async def test_object_written_while_waiting_is_detected(
    s3: Any, bucket: str, s3_proxy: Any, aws_connection: Any
) -> None:
    aws_connection(s3_proxy.url)
    trigger = make_trigger(bucket)
    task = asyncio.ensure_future(collect(trigger))
    for _ in range(200):  # until the first check (two HEADs) is done, however loaded the machine
        if len(s3_proxy.requests("HEAD")) >= 2:
            break
        await asyncio.sleep(0.1)
    assert not task.done()
    await asyncio.to_thread(s3.put_object, Bucket=bucket, Key="out/abc.out", Body=b"x")

    events = await task

    assert events[0]["status"] == "Completed"
    assert events[0]["checks"] > 1


@pytest.mark.asyncio
async def test_pending_inference_keeps_waiting_and_cancels_cleanly(
    bucket: str, s3_proxy: Any, aws_connection: Any
) -> None:
    aws_connection(s3_proxy.url)
    task = asyncio.ensure_future(collect(make_trigger(bucket)))
    for _ in range(300):  # two checks of both keys, however loaded the machine (not a fixed sleep)
        if len(s3_proxy.requests("HEAD")) >= 4 or task.done():
            break
        await asyncio.sleep(0.1)

    assert not task.done()
    heads = s3_proxy.requests("HEAD")
    assert len(heads) >= 4  # it kept looking at both keys
    assert {h.path for h in heads} == {f"/{bucket}/out/abc.out", f"/{bucket}/fail/abc-error.out"}
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.asyncio
async def test_no_object_by_the_deadline_yields_timeout_event(bucket: str, moto_url: str, aws_connection: Any) -> None:
    aws_connection(moto_url)
    started = utcnow()

    events = await collect(make_trigger(bucket, deadline_in=1.0))

    assert [e["status"] for e in events] == ["TimedOut"]
    assert (utcnow() - started).total_seconds() >= 0.9
    assert events[0]["location"] is None


@pytest.mark.asyncio
async def test_deadline_already_past_times_out_after_one_check(s3_proxy: Any, bucket: str, aws_connection: Any) -> None:
    aws_connection(s3_proxy.url)

    events = await collect(make_trigger(bucket, deadline_in=-5))

    assert events[0]["status"] == "TimedOut"
    assert len(s3_proxy.requests("HEAD")) == 2


@pytest.mark.asyncio
async def test_without_failure_location_only_the_output_key_is_checked(
    s3_proxy: Any, bucket: str, aws_connection: Any
) -> None:
    aws_connection(s3_proxy.url)

    events = await collect(make_trigger(bucket, deadline_in=0.5, failure_location=None))

    assert events[0]["status"] == "TimedOut"
    assert {h.path for h in s3_proxy.requests("HEAD")} == {f"/{bucket}/out/abc.out"}


@pytest.mark.asyncio
async def test_403_is_explained_once_and_the_wait_goes_on(
    s3: Any, bucket: str, s3_proxy: Any, aws_connection: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    aws_connection(s3_proxy.url)
    forbidden = s3_proxy.add_fault(
        Fault(match=lambda r: r.method == "HEAD", status=403, body=s3_error("AccessDenied", "no"), times=None)
    )
    trigger = make_trigger(bucket)
    task = asyncio.ensure_future(collect(trigger))
    for _ in range(200):  # up to 20 s: a loaded machine may be slow to make the first checks
        if forbidden.hits >= 4:
            break
        await asyncio.sleep(0.1)
    assert not task.done()
    assert forbidden.hits >= 4
    await asyncio.to_thread(s3.put_object, Bucket=bucket, Key="out/abc.out", Body=b"x")
    forbidden.times = 0  # access granted: S3 now answers normally

    events = await task

    assert events[0]["status"] == "Completed"
    assert events[0]["s3_forbidden"] is True
    # The trigger logs through Airflow's structured logger, which writes to the process's stdout.
    logged = "".join(capfd.readouterr())
    assert logged.count(FORBIDDEN_HINT) == 1


@pytest.mark.asyncio
async def test_403_until_the_deadline_is_reported_in_the_timeout_event(
    bucket: str, s3_proxy: Any, aws_connection: Any
) -> None:
    aws_connection(s3_proxy.url)
    s3_proxy.add_fault(Fault(match=lambda r: r.method == "HEAD", status=403, times=None))

    events = await collect(make_trigger(bucket, deadline_in=0.5))

    assert events[0]["status"] == "TimedOut"
    assert events[0]["s3_forbidden"] is True


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(Fault(match=lambda r: r.method == "HEAD", status=503, times=6), id="503-slowdown"),
        pytest.param(Fault(match=lambda r: r.method == "HEAD", status=500, times=6), id="500"),
        pytest.param(Fault(match=lambda r: r.method == "HEAD", reset=True, times=6), id="connection-reset"),
    ],
)
async def test_transient_errors_never_end_the_wait(
    s3: Any, bucket: str, s3_proxy: Any, aws_connection: Any, fault: Fault
) -> None:
    aws_connection(s3_proxy.url, config_kwargs=NO_RETRIES)
    s3.put_object(Bucket=bucket, Key="out/abc.out", Body=b"x")
    s3_proxy.add_fault(fault)

    events = await collect(make_trigger(bucket, botocore_config=NO_RETRIES))

    assert fault.hits == 6
    assert events[0]["status"] == "Completed"


@pytest.mark.asyncio
async def test_unexpected_client_error_propagates_with_its_traceback(
    bucket: str, s3_proxy: Any, aws_connection: Any
) -> None:
    from botocore.exceptions import ClientError

    aws_connection(s3_proxy.url)
    s3_proxy.add_fault(Fault(match=lambda r: r.method == "HEAD", status=400, times=None))

    with pytest.raises(ClientError):
        await collect(make_trigger(bucket))


def test_serialize_round_trip_rebuilds_an_equal_trigger() -> None:
    trigger = make_trigger(
        "b",
        aws_conn_id="my_aws",
        region_name="eu-west-1",
        verify="/etc/ca.pem",
        botocore_config={"retries": {"mode": "standard"}},
    )

    classpath, kwargs = trigger.serialize()
    module, name = classpath.rsplit(".", 1)
    rebuilt = getattr(importlib.import_module(module), name)(**kwargs)

    assert classpath == "airflow_sagemaker_async.inference.triggers.SageMakerAsyncInferenceTrigger"
    assert rebuilt.serialize() == (classpath, kwargs)
    hook = rebuilt.hook()
    assert (hook.aws_conn_id, hook._region_name, hook._verify) == ("my_aws", "eu-west-1", "/etc/ca.pem")
    assert hook._config.retries == {"mode": "standard"}


def test_serialize_leaves_unset_hook_parameters_out() -> None:
    _, kwargs = make_trigger("b").serialize()

    assert "region_name" not in kwargs
    assert "verify" not in kwargs
    assert "botocore_config" not in kwargs
    assert kwargs["aws_conn_id"] == "aws_default"


def test_serialized_kwargs_are_json_primitives() -> None:
    import json

    _, kwargs = make_trigger("b", botocore_config={"retries": {"max_attempts": 2}}).serialize()

    assert json.loads(json.dumps(kwargs)) == kwargs
