"""
The batch operator and trigger against the local backend: real submissions, real LISTs, real manifests.

Each deferral is carried on as Airflow would: the trigger is rebuilt from its serialised kwargs (never a list
of items in them), run to its event, and the task resumes with ``execute_complete``.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskDeferred

from airflow_sagemaker_async.batch.operators import SageMakerInvokeEndpointAsyncBatchOperator
from airflow_sagemaker_async.batch.triggers import SageMakerAsyncBatchInferenceTrigger
from airflow_sagemaker_async.common.exceptions import SageMakerAsyncBatchFailed, SageMakerAsyncParameterError
from airflow_sagemaker_async.common.layout import split_s3_uri
from airflow_sagemaker_async.common.validation import INLINE_BODY
from tests.test_operators import StandInTaskInstance

GOOD_ROW = "5.1,3.5,1.4,0.2\n"
BAD_ROW = "not,a,valid,row\n"
FAST = {"poll_interval": 0.2, "max_poll_interval": 1.0}

pytestmark = pytest.mark.usefixtures("backend_connection")


@pytest.fixture(scope="module")
def batch_endpoint(sagemaker_async_backend: Any) -> str:
    sagemaker_async_backend.create_endpoint("batch-iris", max_concurrent_invocations_per_instance=50)
    return "batch-iris"


def batch(endpoint: str, **kwargs: Any) -> SageMakerInvokeEndpointAsyncBatchOperator:
    params: dict[str, Any] = {
        "task_id": "score",
        "endpoint_name": endpoint,
        "content_type": "text/csv",
        **FAST,
        **kwargs,
    }
    return SageMakerInvokeEndpointAsyncBatchOperator(**params)


async def _first_event(trigger: SageMakerAsyncBatchInferenceTrigger) -> dict[str, Any]:
    async for event in trigger.run():
        return event.payload
    raise AssertionError("the trigger yielded nothing")


def run_batch(
    op: SageMakerInvokeEndpointAsyncBatchOperator, ti: StandInTaskInstance | None = None, *, stop_after: int = 1000
) -> dict[str, Any]:
    """Execute, and carry every deferral on through a trigger rebuilt from its kwargs, until the task returns."""
    # A fresh run id per call: id(op) recurs once an earlier operator is freed, and a recurring run id is a retry.
    context: Any = {"ti": ti or StandInTaskInstance(task_id=op.task_id, run_id=f"run-{uuid.uuid4().hex}")}
    step: Any = lambda: op.execute(context)  # noqa: E731
    for _ in range(stop_after):
        try:
            return step()
        except TaskDeferred as deferred:
            _, kwargs = deferred.trigger.serialize()
            assert len(json.dumps(kwargs)) < 2000  # small whatever the batch size: no list of items
            event = asyncio.run(asyncio.wait_for(_first_event(SageMakerAsyncBatchInferenceTrigger(**kwargs)), 120))
            method = getattr(op, deferred.method_name)
            step = lambda m=method, e=event: m(context, event=e)  # noqa: E731
    raise AssertionError(f"still deferring after {stop_after} deferrals")


def manifest(s3: Any, summary: dict[str, Any]) -> list[dict[str, Any]]:
    bucket, key = split_s3_uri(summary["manifest_location"])
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    return [json.loads(line) for line in body.splitlines()]


def kwargs_tag(deferred: TaskDeferred) -> str:
    return str(deferred.trigger.serialize()[1]["batch_tag"])


def invocation_ids(backend: Any, endpoint: str, tag: str) -> Counter[str]:
    return Counter(r.inference_id for r in backend.invocations(endpoint) if f"-{tag}-" in r.inference_id)


@pytest.mark.slow
def test_two_thousand_items_a_tenth_malformed_each_once_with_the_right_status(
    sagemaker_async_backend: Any, batch_endpoint: str, s3: Any
) -> None:
    records = [BAD_ROW if i % 10 == 3 else GOOD_ROW for i in range(2000)]
    op = batch(batch_endpoint, input_records=records, max_in_flight=500, max_failed_fraction=0.2)

    summary = run_batch(op)
    lines = manifest(s3, summary)

    print(f"\nbatch summary: {json.dumps(summary)}")
    assert [line["item"] for line in lines] == list(range(2000))
    assert summary["counts"] == {"Completed": 1800, "Failed": 200, "TimedOut": 0}
    assert all((line["status"] == "Failed") == (line["item"] % 10 == 3) for line in lines)
    assert all(line["failure_reason"] for line in lines if line["status"] == "Failed")
    assert all(line["output_location"].endswith(f"{summary['batch_tag']}-{line['item']:07d}.out") for line in lines)
    invoked = invocation_ids(sagemaker_async_backend, batch_endpoint, summary["batch_tag"])
    assert len(invoked) == 2000
    assert set(invoked.values()) == {1}  # no item invoked twice
    assert summary["invocations"] == 2000
    assert summary["resumed_items"] == 0
    # No assertion on deferrals: a fast model keeps the worker sending while it records (issue 21), so whether
    # it defers depends on the machine's load; the deferral path is tested with the 5 s model below.


def test_a_retry_after_the_worker_died_sends_only_the_missing_items(
    sagemaker_async_backend: Any, batch_endpoint: str, s3: Any
) -> None:
    ti = StandInTaskInstance(task_id="score", run_id="retry-after-kill")
    # A 5 s model: the worker's check finds nothing yet, so the first try defers after wave 1.
    first = batch(batch_endpoint, input_records=[GOOD_ROW] * 300, max_in_flight=100, custom_attributes="sleep=5")
    with pytest.raises(TaskDeferred):
        first.execute({"ti": ti})  # wave 1 (100 items) out, then the worker "dies" while deferred
    sagemaker_async_backend.wait_idle(timeout=60)

    ti.try_number = 2
    summary = run_batch(
        batch(batch_endpoint, input_records=[GOOD_ROW] * 300, max_in_flight=100, custom_attributes="sleep=5"), ti
    )

    invoked = invocation_ids(sagemaker_async_backend, batch_endpoint, summary["batch_tag"])
    assert summary["counts"]["Completed"] == 300
    assert len(invoked) == 300
    assert set(invoked.values()) == {1}
    assert [line["item"] for line in manifest(s3, summary)] == list(range(300))


def test_a_retry_after_a_death_before_the_state_was_written_finds_results_by_list(
    sagemaker_async_backend: Any, batch_endpoint: str, s3: Any
) -> None:
    ti = StandInTaskInstance(task_id="score", run_id="retry-lost-state")
    first = batch(batch_endpoint, input_records=[GOOD_ROW] * 150, max_in_flight=100, custom_attributes="sleep=5")
    with pytest.raises(TaskDeferred) as deferred:
        first.execute({"ti": ti})
    sagemaker_async_backend.wait_idle(timeout=60)
    state_uri = deferred.value.trigger.serialize()[1]["state_location"]
    bucket, key = split_s3_uri(state_uri)
    s3.delete_object(Bucket=bucket, Key=key)  # as if the worker died after sending, before recording
    sent_by_first_try = len(invocation_ids(sagemaker_async_backend, batch_endpoint, kwargs_tag(deferred.value)))

    ti.try_number = 2
    summary = run_batch(
        batch(batch_endpoint, input_records=[GOOD_ROW] * 150, max_in_flight=100, custom_attributes="sleep=5"), ti
    )

    invoked = invocation_ids(sagemaker_async_backend, batch_endpoint, summary["batch_tag"])
    assert sent_by_first_try >= 100
    assert summary["resumed_items"] == sent_by_first_try  # found by LIST, not sent again
    assert len(invoked) == 150
    assert set(invoked.values()) == {1}
    assert summary["counts"]["Completed"] == 150


def test_a_trigger_rebuilt_mid_wait_reaches_the_same_result(
    sagemaker_async_backend: Any, batch_endpoint: str, s3: Any
) -> None:
    ti = StandInTaskInstance(task_id="score", run_id="rebuilt-trigger")
    op = batch(batch_endpoint, input_records=[GOOD_ROW] * 40, custom_attributes="sleep=5", max_in_flight=40)
    context: Any = {"ti": ti}
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    _, kwargs = deferred.value.trigger.serialize()

    async def cancelled_then_rebuilt() -> dict[str, Any]:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(_first_event(SageMakerAsyncBatchInferenceTrigger(**kwargs)), 0.5)
        return await asyncio.wait_for(_first_event(SageMakerAsyncBatchInferenceTrigger(**kwargs)), 120)

    event = asyncio.run(cancelled_then_rebuilt())
    summary = op.execute_complete(context, event=event)

    assert event["status"] == "LowWater"
    assert summary["counts"] == {"Completed": 40, "Failed": 0, "TimedOut": 0}


def test_inputs_from_locations_from_a_prefix_and_large_records_through_s3(
    sagemaker_async_backend: Any, batch_endpoint: str, s3: Any, bucket: str
) -> None:
    for i in range(5):
        s3.put_object(Bucket=bucket, Key=f"in/{i}.csv", Body=(BAD_ROW if i == 4 else GOOD_ROW).encode())
    s3.put_object(Bucket=bucket, Key="in/", Body=b"")  # a "directory" marker: skipped
    locations = [f"s3://{bucket}/in/{i}.csv" for i in range(5)]
    large = GOOD_ROW * 9000  # 144,000 bytes: over the inline limit

    by_locations = run_batch(batch(batch_endpoint, input_locations=locations, max_failed_items=1))
    by_prefix = run_batch(batch(batch_endpoint, input_prefix=f"s3://{bucket}/in/", max_failed_items=1))
    by_records = run_batch(
        batch(batch_endpoint, input_records=[GOOD_ROW, large], input_s3_prefix=f"s3://{bucket}/uploads")
    )

    assert [line["input_location"] for line in manifest(s3, by_locations)] == locations
    assert [line["input_location"] for line in manifest(s3, by_prefix)] == locations
    assert by_locations["counts"] == by_prefix["counts"] == {"Completed": 4, "Failed": 1, "TimedOut": 0}
    records_lines = manifest(s3, by_records)
    assert records_lines[0]["input_location"] is None  # sent inline
    assert records_lines[1]["input_location"].startswith(f"s3://{bucket}/uploads/{by_records['batch_tag']}/")
    assert by_records["counts"]["Completed"] == 2


@pytest.mark.parametrize(
    ("policy", "fails"),
    [
        ({"max_failed_items": 2}, False),
        ({"max_failed_items": 1}, True),
        ({"max_failed_fraction": 0.1}, False),
        ({"max_failed_fraction": 0.05}, True),
    ],
)
def test_the_failure_policy_at_and_over_its_limit(
    batch_endpoint: str, s3: Any, policy: dict[str, Any], fails: bool
) -> None:
    records = [BAD_ROW if i in {5, 15} else GOOD_ROW for i in range(20)]
    op = batch(batch_endpoint, input_records=records, **policy)

    if not fails:
        assert run_batch(op)["counts"] == {"Completed": 18, "Failed": 2, "TimedOut": 0}
        return
    with pytest.raises(SageMakerAsyncBatchFailed) as info:
        run_batch(op)
    summary = info.value.summary
    assert "2 failed and 0 timed out of 20" in str(info.value)
    assert summary["manifest_location"] in str(info.value)
    assert len(manifest(s3, summary)) == 20  # written before the task failed


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({}, "input_locations"),
        ({"input_records": ["a"], "input_locations": ["s3://b/k"]}, "input_records"),
        ({"input_records": []}, "input_records"),
        ({"input_locations": ["s3://b/k", "ftp://x/y"]}, "input_locations"),
        # With somewhere to upload to (what a botocore without an inline Body needs), "a" is fine and {1, 2} is not.
        ({"input_records": ["a", {1, 2}], "input_s3_prefix": "s3://b/uploads"}, "input_records"),
        # Too large for the inline Body and nowhere to upload it: the record is named; a botocore without any
        # inline Body (< 1.43.29) already names input_s3_prefix, which every record then needs.
        ({"input_records": ["x" * 128_001]}, "input_records" if INLINE_BODY else "input_s3_prefix"),
        ({"input_records": ["a"], "filename": "x.out"}, "filename"),
        ({"input_records": ["a"], "max_failed_fraction": 1.5}, "max_failed_fraction"),
        ({"input_records": ["a"], "max_in_flight": 0}, "max_in_flight"),
        ({"input_prefix": "bucket/no-scheme"}, "input_prefix"),
    ],
)
def test_bad_input_is_refused_before_any_request(
    batch_endpoint: str, runtime_proxy: Any, kwargs: dict[str, Any], parameter: str
) -> None:
    def build_and_execute() -> None:
        batch(batch_endpoint, **kwargs).execute({"ti": StandInTaskInstance(task_id="score", run_id="bad-input")})

    with pytest.raises(SageMakerAsyncParameterError) as info:
        build_and_execute()

    assert info.value.parameter == parameter
    assert runtime_proxy.requests() == []


def test_with_a_notification_queue_results_wake_the_trigger_long_before_its_next_poll(
    sagemaker_async_backend: Any, s3: Any
) -> None:
    sns, sqs = sagemaker_async_backend.client("sns"), sagemaker_async_backend.client("sqs")
    topics = [sns.create_topic(Name=f"batch-push-{kind}")["TopicArn"] for kind in ("success", "error")]
    sagemaker_async_backend.create_endpoint(
        "batch-push-iris",
        success_topic_arn=topics[0],
        error_topic_arn=topics[1],
        max_concurrent_invocations_per_instance=20,
    )
    queue_url = sqs.create_queue(QueueName="batch-push")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    for topic in topics:
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    records = [BAD_ROW if i == 7 else GOOD_ROW for i in range(40)]
    op = batch(
        "batch-push-iris",
        input_records=records,
        custom_attributes="sleep=5",  # nothing is done at the worker's check: the trigger has to wait
        notification_queue_url=queue_url,
        poll_interval=120,  # the first poll would come after 96-120 s: only a notification ends it sooner
        max_poll_interval=600,
        max_failed_items=1,
    )
    context: Any = {"ti": StandInTaskInstance(task_id="score", run_id="batch-push")}
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    _, kwargs = deferred.value.trigger.serialize()

    event = asyncio.run(asyncio.wait_for(_first_event(SageMakerAsyncBatchInferenceTrigger(**kwargs)), 90))
    summary = op.execute_complete(context, event=event)

    assert kwargs["notification_queue_url"] == queue_url
    assert event["pending"] == 0
    assert summary["counts"] == {"Completed": 39, "Failed": 1, "TimedOut": 0}
