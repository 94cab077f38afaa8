"""
1,000 inferences through the local backend, one in ten malformed: every submission gets exactly one outcome.

Submitted through the hook (the operator's code path), watched by 1,000 triggers on one event loop (as in a
triggerer), finished by the shared outcome code; then the outcomes, the S3 objects and the backend's own
invocation records are counted against each other. Prints the counts.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from airflow_sagemaker_async.common.exceptions import SageMakerAsyncInferenceError
from airflow_sagemaker_async.common.hooks import SageMakerRuntimeHook
from airflow_sagemaker_async.common.outcome import finish
from airflow_sagemaker_async.common.watch import isoformat, utcnow
from airflow_sagemaker_async.inference.triggers import SageMakerAsyncInferenceTrigger

N = 1000
FAILING_EVERY = 10
GOOD_ROW = b"5.1,3.5,1.4,0.2\n"
BAD_ROW = b"not,a,valid,row\n"


async def _watch_all(submissions: list[Any]) -> list[dict[str, Any]]:
    deadline = isoformat(utcnow() + timedelta(minutes=5))

    async def one(submission: Any) -> dict[str, Any]:
        trigger = SageMakerAsyncInferenceTrigger(
            inference_id=submission.inference_id,
            output_location=submission.output_location,
            failure_location=submission.failure_location,
            deadline=deadline,
            poll_interval=0.5,
            max_poll_interval=2,
        )
        events = [event.payload async for event in trigger.run()]
        assert len(events) == 1
        return events[0]

    return await asyncio.gather(*(one(s) for s in submissions))


def _keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


@pytest.mark.slow
def test_a_thousand_inferences_each_get_exactly_one_outcome(
    sagemaker_async_backend: Any, backend_connection: str, s3: Any
) -> None:
    sagemaker_async_backend.create_endpoint("load-iris", max_concurrent_invocations_per_instance=50)
    hook = SageMakerRuntimeHook(aws_conn_id=backend_connection)
    submissions = [
        hook.invoke_endpoint_async(
            endpoint_name="load-iris",
            body=BAD_ROW if i % FAILING_EVERY == 0 else GOOD_ROW,
            content_type="text/csv",
            inference_id=f"load-{i:04d}",
        )
        for i in range(N)
    ]

    events = asyncio.run(_watch_all(submissions))
    outcomes: list[dict[str, Any]] = []
    for event in events:
        try:
            outcomes.append(
                finish(
                    event,
                    s3_client=s3,
                    output_format="location",
                    max_output_bytes=1024,
                    fail_on_model_error=True,
                )
            )
        except SageMakerAsyncInferenceError as error:
            outcomes.append(error.outcome)

    statuses = Counter(o["status"] for o in outcomes)
    outputs = _keys(s3, "sagemaker-async-local", "load-iris/output/")
    failures = _keys(s3, "sagemaker-async-local", "load-iris/failure/")
    records = sagemaker_async_backend.invocations("load-iris")
    print(
        f"\nsubmitted={N} outcomes={len(outcomes)} completed={statuses['Completed']} failed={statuses['Failed']} "
        f"output_objects={len(outputs)} failure_objects={len(failures)} backend_invocations={len(records)}"
    )
    expected_failed = len(range(0, N, FAILING_EVERY))
    assert len(outcomes) == N
    assert len({o["inference_id"] for o in outcomes}) == N
    assert statuses == Counter({"Completed": N - expected_failed, "Failed": expected_failed})
    assert all((o["status"] == "Failed") == (int(o["inference_id"][-4:]) % FAILING_EVERY == 0) for o in outcomes)
    assert len(outputs) == N - expected_failed
    assert len(failures) == expected_failed
    assert len(records) == N
    assert len({r.inference_id for r in records}) == N
