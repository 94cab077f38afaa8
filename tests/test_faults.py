"""
Every failure mode of submitting and watching, each with its outcome, against the local backend.

Faults in front of SageMaker (503, 500, throttling) come from the recording proxy between the client and
the local runtime, so a refused attempt never reaches the backend: the backend's invocation records show
how many inferences really ran.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import jinja2
import pytest
from airflow.providers.common.compat.sdk import redact
from airflow.sdk.exceptions import TaskDeferred
from botocore.exceptions import ClientError

from airflow_sagemaker_async.common.exceptions import (
    SageMakerAsyncInferenceError,
    SageMakerAsyncInferenceTimeout,
    SageMakerAsyncOutputMissing,
)
from airflow_sagemaker_async.common.validation import parse_s3_uri
from tests.proxy import Fault
from tests.test_operators import CSV_ROWS, StandInTaskInstance, operator, run

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.usefixtures("endpoints", "backend_connection")

RETRIES = {"retries": {"max_attempts": 3, "mode": "standard"}}


def invoke_fault(status: int, error_type: str, times: int | None) -> Fault:
    return Fault(
        match=lambda r: r.method == "POST" and r.path.endswith("/async-invocations"),
        status=status,
        body=json.dumps({"message": f"injected {error_type}"}).encode(),
        headers={"x-amzn-ErrorType": error_type, "Content-Type": "application/json"},
        times=times,
    )


def invocations_of(backend: Any, inference_id: str) -> list[Any]:
    return [r for r in backend.invocations("op-iris") if r.inference_id == inference_id]


@pytest.mark.parametrize(
    ("status", "error_type"),
    [(503, "ServiceUnavailable"), (500, "InternalFailure"), (400, "ThrottlingException")],
)
def test_transient_submit_errors_are_retried_with_the_same_inference_id_and_run_once(
    runtime_proxy: Any, sagemaker_async_backend: Any, status: int, error_type: str
) -> None:
    inference_id = f"retry-{error_type}"
    runtime_proxy.add_fault(invoke_fault(status, error_type, times=2))

    outcome = run(
        operator(input_data=CSV_ROWS, content_type="text/csv", inference_id=inference_id, botocore_config=RETRIES)
    )

    attempts = runtime_proxy.requests("POST")
    assert len(attempts) == 3
    assert {a.headers["X-Amzn-SageMaker-Inference-Id"] for a in attempts} == {inference_id}
    assert outcome["status"] == "Completed"
    assert len(invocations_of(sagemaker_async_backend, inference_id)) == 1


def test_submit_failing_after_the_last_attempt_is_a_clear_error_and_nothing_ran(
    runtime_proxy: Any, sagemaker_async_backend: Any
) -> None:
    runtime_proxy.add_fault(invoke_fault(503, "ServiceUnavailable", times=None))

    with pytest.raises(ClientError) as info:
        run(operator(input_data=CSV_ROWS, content_type="text/csv", inference_id="never", botocore_config=RETRIES))

    assert info.value.response["Error"]["Code"] == "ServiceUnavailable"
    assert "max retries" in str(info.value)
    attempts = runtime_proxy.requests("POST")
    assert len(attempts) == 4  # botocore's max_attempts counts retries: 1 + 3
    assert {a.headers["X-Amzn-SageMaker-Inference-Id"] for a in attempts} == {"never"}
    assert invocations_of(sagemaker_async_backend, "never") == []


def test_the_same_trigger_event_twice_gives_one_outcome() -> None:
    op = operator(
        input_data=CSV_ROWS,
        content_type="text/csv",
        output_format="json",
        inference_id="twice",
        custom_attributes="sleep=5",
    )
    context: Any = {"ti": StandInTaskInstance()}
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    event = asyncio.run(_first_event(deferred.value.trigger))

    first = op.execute_complete(context, event=event)
    second = op.execute_complete(context, event=event)

    assert first == second
    assert first["status"] == "Completed"


def test_output_deleted_between_detection_and_download_is_a_clear_error(s3: Any) -> None:
    op = operator(
        input_data=CSV_ROWS,
        content_type="text/csv",
        output_format="json",
        inference_id="deleted",
        custom_attributes="sleep=5",
    )
    context: Any = {"ti": StandInTaskInstance()}
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    event = asyncio.run(_first_event(deferred.value.trigger))
    bucket, key = parse_s3_uri(event["output_location"], "output_location")
    s3.delete_object(Bucket=bucket, Key=key)

    with pytest.raises(SageMakerAsyncOutputMissing) as info:
        op.execute_complete(context, event=event)

    assert event["output_location"] in str(info.value)


def test_model_server_error_surfaces_the_models_body() -> None:
    with pytest.raises(SageMakerAsyncInferenceError) as info:
        run(operator(input_data=CSV_ROWS, content_type="text/csv", custom_attributes="status=500"))

    assert "status=500" in info.value.outcome["failure_reason"]
    assert info.value.outcome["failure_location"] in str(info.value)


def test_invocation_timeout_surfaces_as_a_model_failure() -> None:
    with pytest.raises(SageMakerAsyncInferenceError) as info:
        run(
            operator(
                input_data=CSV_ROWS,
                content_type="text/csv",
                custom_attributes="sleep=3",
                invocation_timeout_seconds=1,
            )
        )

    assert "InvocationTimeoutSeconds" in info.value.outcome["failure_reason"]


@pytest.fixture
def fast_clock(sagemaker_async_backend: Any) -> Iterator[None]:
    before = sagemaker_async_backend.time_scale
    sagemaker_async_backend.time_scale = 0.01  # a 60 s TTL lasts 0.6 s
    yield
    sagemaker_async_backend.time_scale = before


@pytest.mark.usefixtures("fast_clock")
def test_request_expired_in_the_queue_ends_in_a_timeout_that_says_so(sagemaker_async_backend: Any) -> None:
    sagemaker_async_backend.create_endpoint("op-iris-single", max_concurrent_invocations_per_instance=1)
    busy = operator(
        endpoint_name="op-iris-single",
        input_data=CSV_ROWS,
        content_type="text/csv",
        custom_attributes="sleep=2",
        inference_id="busy",
        wait_for_completion=False,
    )
    run(busy)

    with pytest.raises(SageMakerAsyncInferenceTimeout) as info:
        run(
            operator(
                endpoint_name="op-iris-single",
                input_data=CSV_ROWS,
                content_type="text/csv",
                inference_id="expires",
                request_ttl_seconds=60,
                max_wait_seconds=3,
            )
        )

    assert "expired in its queue" in str(info.value)
    (record,) = [r for r in sagemaker_async_backend.invocations("op-iris-single") if r.inference_id == "expires"]
    assert record.status.value == "Expired"


def test_custom_attributes_are_masked_once_rendered() -> None:
    op = operator(input_data=CSV_ROWS, custom_attributes="{{ params.token }}")

    op.render_template_fields({"params": {"token": "token=s3cr3t-value"}}, jinja_env=jinja2.Environment())

    assert op.custom_attributes == "token=s3cr3t-value"
    assert "s3cr3t-value" not in redact(f"calling the model with {op.custom_attributes}")


async def _first_event(trigger: Any) -> dict[str, Any]:
    async for event in trigger.run():
        return dict(event.payload)
    raise AssertionError("the trigger yielded no event")


@pytest.mark.parametrize("deferrable", [True, False])
def test_retry_finds_the_earlier_tries_output_and_does_not_invoke_again(
    runtime_proxy: Any, sagemaker_async_backend: Any, deferrable: bool
) -> None:
    params = {
        "input_data": CSV_ROWS,
        "content_type": "text/csv",
        "inference_id": f"resume-{deferrable}",
        "filename": f"resume-{deferrable}.json",
        "s3_output_path_extension": "retries",
        "output_format": "json",
        "deferrable": deferrable,
    }
    first = run(operator(**params), StandInTaskInstance(try_number=1))
    runtime_proxy.clear()

    second = run(operator(**params), StandInTaskInstance(try_number=2))

    assert runtime_proxy.requests("POST") == []
    assert len(invocations_of(sagemaker_async_backend, f"resume-{deferrable}")) == 1
    assert second["output"] == first["output"]
    assert second["output_location"] == first["output_location"]
    assert second["status"] == "Completed"


def test_retry_finds_the_earlier_tries_failure_and_raises_it_again(
    runtime_proxy: Any, sagemaker_async_backend: Any
) -> None:
    params = {"input_data": "1,2\n", "content_type": "text/csv", "inference_id": "resume-bad", "filename": "bad.json"}
    with pytest.raises(SageMakerAsyncInferenceError):
        run(operator(**params), StandInTaskInstance(try_number=1))
    runtime_proxy.clear()

    with pytest.raises(SageMakerAsyncInferenceError) as info:
        run(operator(**params), StandInTaskInstance(try_number=2))

    assert runtime_proxy.requests("POST") == []
    assert info.value.outcome["failure_location"].endswith("/bad.json-error.out")
    assert len(invocations_of(sagemaker_async_backend, "resume-bad")) == 1


def test_retry_without_an_earlier_result_invokes_again(runtime_proxy: Any) -> None:
    params = {"input_data": CSV_ROWS, "content_type": "text/csv", "inference_id": "fresh", "filename": "fresh.json"}

    outcome = run(operator(**params), StandInTaskInstance(try_number=3))

    assert len(runtime_proxy.requests("POST")) == 1
    assert outcome["status"] == "Completed"


def test_first_try_always_invokes_even_if_an_old_result_exists(runtime_proxy: Any) -> None:
    params = {"input_data": CSV_ROWS, "content_type": "text/csv", "inference_id": "again", "filename": "again.json"}
    run(operator(**params), StandInTaskInstance(try_number=1))
    runtime_proxy.clear()

    run(operator(**params), StandInTaskInstance(try_number=1))

    assert len(runtime_proxy.requests("POST")) == 1
