"""Triggers share one S3 client per event loop and connection: counted, cancelled, across loops."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from airflow_sagemaker_async.common.clients import SharedClients, client_key, shared_s3_clients
from tests.test_triggers import collect, make_trigger


class CountingManager:
    """An async context manager around a plain object that counts enters and exits."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def __aenter__(self) -> object:
        await asyncio.sleep(0.01)
        self.log.append("open")
        return object()

    async def __aexit__(self, *exc: object) -> None:
        self.log.append("close")


@pytest.mark.asyncio
async def test_fifty_triggers_on_one_connection_open_one_client_and_close_it(
    s3: Any, bucket: str, moto_url: str, aws_connection: Any
) -> None:
    aws_connection(moto_url)
    for i in range(50):
        s3.put_object(Bucket=bucket, Key=f"out/{i}.out", Body=b"x")
    opened, closed = shared_s3_clients.opened, shared_s3_clients.closed
    triggers = [
        make_trigger(bucket, inference_id=f"i{i}", output_location=f"s3://{bucket}/out/{i}.out") for i in range(50)
    ]

    results = await asyncio.gather(*(collect(t) for t in triggers))

    assert all(r[0]["status"] == "Completed" for r in results)
    assert shared_s3_clients.opened - opened == 1
    assert shared_s3_clients.closed - closed == 1
    assert shared_s3_clients.active() == 0


@pytest.mark.asyncio
async def test_cancelled_triggers_leave_the_shared_client_to_the_others(
    s3: Any, bucket: str, moto_url: str, aws_connection: Any
) -> None:
    aws_connection(moto_url)
    opened, closed = shared_s3_clients.opened, shared_s3_clients.closed
    waiting = [asyncio.ensure_future(collect(make_trigger(bucket, inference_id=f"c{i}"))) for i in range(10)]
    await asyncio.sleep(0.3)
    for task in waiting[:5]:
        task.cancel()
    await asyncio.gather(*waiting[:5], return_exceptions=True)
    assert shared_s3_clients.active() == 1

    await asyncio.to_thread(s3.put_object, Bucket=bucket, Key="out/abc.out", Body=b"x")
    results = await asyncio.gather(*waiting[5:])

    assert [r[0]["status"] for r in results] == ["Completed"] * 5
    assert shared_s3_clients.opened - opened == 1
    assert shared_s3_clients.closed - closed == 1
    assert shared_s3_clients.active() == 0


@pytest.mark.asyncio
async def test_different_connections_get_different_clients() -> None:
    registry, log = SharedClients(), []

    async def opener() -> CountingManager:
        return CountingManager(log)

    async with (
        registry.acquire(client_key("a", None, None, None), opener) as first,
        registry.acquire(client_key("a", None, None, None), opener) as same,
        registry.acquire(client_key("a", "eu-west-1", None, None), opener) as other_region,
        registry.acquire(client_key("a", None, None, {"retries": {"max_attempts": 2}}), opener) as other_config,
    ):
        assert first is same
        assert len({id(first), id(other_region), id(other_config)}) == 3
        assert registry.active() == 3

    assert log.count("open") == log.count("close") == 3
    assert registry.active() == 0


@pytest.mark.asyncio
async def test_a_waiter_cancelled_while_the_client_opens_does_not_break_the_others() -> None:
    registry, log = SharedClients(), []

    async def opener() -> CountingManager:
        return CountingManager(log)

    async def use() -> object:
        async with registry.acquire(("k",), opener) as client:
            await asyncio.sleep(0.05)
            return client

    first = asyncio.ensure_future(use())
    second = asyncio.ensure_future(use())
    await asyncio.sleep(0)  # both wait for the opening
    first.cancel()

    client = await second

    assert client is not None
    assert first.cancelled()
    assert log == ["open", "close"]


@pytest.mark.asyncio
async def test_a_failed_open_reaches_every_waiter_and_the_next_user_retries() -> None:
    registry, attempts = SharedClients(), []

    async def failing() -> CountingManager:
        attempts.append(1)
        await asyncio.sleep(0.01)
        raise ConnectionError("no credentials yet")

    async def use() -> None:
        async with registry.acquire(("k",), failing):
            pass

    results = await asyncio.gather(use(), use(), return_exceptions=True)

    assert [type(r) for r in results] == [ConnectionError, ConnectionError]
    assert len(attempts) == 1
    with pytest.raises(ConnectionError):
        await use()
    assert len(attempts) == 2
    assert registry.active() == 0


def test_a_closed_loop_and_a_new_one_each_get_their_own_client(
    s3: Any, bucket: str, moto_url: str, aws_connection: Any
) -> None:
    aws_connection(moto_url)
    s3.put_object(Bucket=bucket, Key="out/abc.out", Body=b"x")
    opened = shared_s3_clients.opened

    first = asyncio.run(collect(make_trigger(bucket)))
    second = asyncio.run(collect(make_trigger(bucket)))

    assert first[0]["status"] == second[0]["status"] == "Completed"
    assert shared_s3_clients.opened - opened == 2


@pytest.mark.asyncio
async def test_requests_in_flight_never_exceed_the_shared_clients_pool(
    s3: Any, bucket: str, s3_proxy: Any, aws_connection: Any
) -> None:
    pool = {"max_pool_connections": 3}
    aws_connection(s3_proxy.url)
    for i in range(30):
        s3.put_object(Bucket=bucket, Key=f"out/{i}.out", Body=b"x")
    s3_proxy.delay = 0.05
    triggers = [
        make_trigger(bucket, inference_id=f"p{i}", output_location=f"s3://{bucket}/out/{i}.out", botocore_config=pool)
        for i in range(30)
    ]

    results = await asyncio.gather(*(collect(t) for t in triggers))

    assert all(r[0]["status"] == "Completed" for r in results)
    assert len(s3_proxy.requests("HEAD")) == 30  # one check each: nobody re-checked while queued
    assert 1 < s3_proxy.max_in_flight <= 3


@pytest.mark.asyncio
async def test_the_shared_clients_semaphore_is_sized_like_its_connection_pool(
    moto_url: str, aws_connection: Any
) -> None:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    aws_connection(moto_url)
    config = {"max_pool_connections": 3}
    hook = S3Hook(aws_conn_id="aws_default", config=config)

    async with shared_s3_clients.acquire(client_key("aws_default", None, None, config), hook.get_async_conn) as shared:
        for _ in range(3):
            await shared.limit.acquire()
        assert shared.limit.locked()
        for _ in range(3):
            shared.limit.release()
