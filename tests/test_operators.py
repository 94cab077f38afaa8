"""
The operator against the local backend: real InvokeEndpointAsync over HTTP (seen at a recording proxy),
a real iris model, real S3 objects, the real trigger for the deferred half.

The task instance in the context is a small stand-in (the operator reads its ids and pushes link
XComs); ``test_dags.py`` runs the same operator under a real Airflow with ``airflow dags test``.
"""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
from airflow.sdk.exceptions import TaskDeferred
from botocore.exceptions import ClientError

from airflow_sagemaker_async.common.exceptions import (
    SageMakerAsyncInferenceError,
    SageMakerAsyncInferenceTimeout,
    SageMakerAsyncOutputTooLarge,
    SageMakerAsyncParameterError,
)
from airflow_sagemaker_async.common.submission import default_inference_id
from airflow_sagemaker_async.inference.operators import SageMakerInvokeEndpointAsyncOperator

if TYPE_CHECKING:
    from pathlib import Path

CSV_ROWS = "5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n"  # a setosa and a virginica from the iris dataset
FAST = {"poll_interval": 0.1, "max_poll_interval": 0.5}
INVOKE_PATH = "/endpoints/op-iris/async-invocations"

pytestmark = pytest.mark.usefixtures("endpoints", "backend_connection")


@dataclass
class StandInTaskInstance:
    dag_id: str = "dag"
    task_id: str = "task"
    run_id: str = "manual__2026-11-21"
    map_index: int = -1
    try_number: int = 1
    xcom: dict[str, Any] = field(default_factory=dict)

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


async def _events(trigger: Any) -> list[dict[str, Any]]:
    return [event.payload async for event in trigger.run()]


def run(op: SageMakerInvokeEndpointAsyncOperator, ti: StandInTaskInstance | None = None) -> dict[str, Any]:
    """Execute the operator; when it defers, run its trigger to the event and resume, as Airflow would."""
    context: Any = {"ti": ti or StandInTaskInstance(task_id=op.task_id)}
    try:
        return op.execute(context)
    except TaskDeferred as deferred:
        events = asyncio.run(asyncio.wait_for(_events(deferred.trigger), 60))
        assert len(events) == 1
        return getattr(op, deferred.method_name)(context, event=events[0])


def operator(**kwargs: Any) -> SageMakerInvokeEndpointAsyncOperator:
    params: dict[str, Any] = {"task_id": "predict", "endpoint_name": "op-iris", **FAST, **kwargs}
    return SageMakerInvokeEndpointAsyncOperator(**params)


def test_every_api_field_reaches_the_http_request(s3: Any, runtime_proxy: Any) -> None:
    s3.put_object(Bucket="sagemaker-async-local", Key="in/rows.csv", Body=CSV_ROWS.encode())
    op = operator(
        input_location="s3://sagemaker-async-local/in/rows.csv",
        content_type="text/csv",
        accept="application/json",
        custom_attributes="trace=abc",
        inference_id="my-id-1",
        s3_output_path_extension="daily/2026-11-21",
        filename="result.json",
        request_ttl_seconds=120,
        invocation_timeout_seconds=30,
        wait_for_completion=False,
    )

    record = run(op)

    (request,) = runtime_proxy.requests("POST", INVOKE_PATH)
    headers = {k.lower(): v for k, v in request.headers.items()}
    assert headers["x-amzn-sagemaker-inputlocation"] == "s3://sagemaker-async-local/in/rows.csv"
    assert headers["x-amzn-sagemaker-content-type"] == "text/csv"
    assert headers["x-amzn-sagemaker-accept"] == "application/json"
    assert headers["x-amzn-sagemaker-custom-attributes"] == "trace=abc"
    assert headers["x-amzn-sagemaker-inference-id"] == "my-id-1"
    assert headers["x-amzn-sagemaker-s3outputpathextension"] == "daily/2026-11-21"
    assert headers["x-amzn-sagemaker-filename"] == "result.json"
    assert headers["x-amzn-sagemaker-requestttlseconds"] == "120"
    assert headers["x-amzn-sagemaker-invocationtimeoutseconds"] == "30"
    assert request.body == b""
    assert record["inference_id"] == "my-id-1"
    assert record["status"] == "InProgress"
    assert record["output_location"].endswith("/daily/2026-11-21/result.json")


def test_json_input_data_is_sent_inline_as_application_json(runtime_proxy: Any) -> None:
    instances = {"instances": [[5.1, 3.5, 1.4, 0.2]]}

    outcome = run(operator(input_data=instances, output_format="json"))

    (request,) = runtime_proxy.requests("POST", INVOKE_PATH)
    assert json.loads(request.body) == instances
    assert request.headers["X-Amzn-SageMaker-Content-Type"] == "application/json"
    assert "X-Amzn-SageMaker-InputLocation" not in request.headers
    assert outcome["output"]["predictions"][0]["label"] == "setosa"


def test_input_data_over_128000_bytes_is_uploaded_under_a_key_from_the_inference_id(
    s3: Any, runtime_proxy: Any
) -> None:
    rows = "\n".join(["5.1,3.5,1.4,0.2"] * 9000)  # 144,000 bytes
    assert len(rows) > 128_000

    outcome = run(
        operator(
            input_data=rows,
            content_type="text/csv",
            input_s3_prefix="s3://sagemaker-async-local/uploads/",
            inference_id="big-1",
            output_format="json",
        )
    )

    (request,) = runtime_proxy.requests("POST", INVOKE_PATH)
    assert request.headers["X-Amzn-SageMaker-InputLocation"] == "s3://sagemaker-async-local/uploads/big-1/input"
    assert request.body == b""
    stored = s3.get_object(Bucket="sagemaker-async-local", Key="uploads/big-1/input")["Body"].read()
    assert stored == rows.encode()
    assert len(outcome["output"]["predictions"]) == 9000


def test_deferrable_and_worker_waits_give_the_same_outcome() -> None:
    deferred = run(operator(input_data=CSV_ROWS, content_type="text/csv", output_format="json", inference_id="d-1"))
    on_worker = run(
        operator(
            input_data=CSV_ROWS, content_type="text/csv", output_format="json", inference_id="w-1", deferrable=False
        )
    )

    assert deferred["status"] == on_worker["status"] == "Completed"
    assert deferred["output"] == on_worker["output"]
    assert [p["label"] for p in deferred["output"]["predictions"]] == ["setosa", "virginica"]
    assert set(deferred) == set(on_worker)
    for outcome in (deferred, on_worker):
        assert outcome["endpoint_name"] == "op-iris"
        assert outcome["output_location"].startswith("s3://sagemaker-async-local/op-iris/output/")
        assert outcome["failure_location"].startswith("s3://sagemaker-async-local/op-iris/failure/")
        assert outcome["submitted_at"] <= outcome["detected_at"]
        assert outcome["completed_at"] is not None


def test_outcome_is_json_serialisable_for_xcom() -> None:
    outcome = run(operator(input_data=CSV_ROWS, content_type="text/csv"))

    assert json.loads(json.dumps(outcome)) == outcome
    assert "output" not in outcome  # output_format="location" downloads nothing


def test_default_inference_id_is_deterministic_and_sent(runtime_proxy: Any) -> None:
    ti = StandInTaskInstance(dag_id="iris_dag", task_id="predict", run_id="scheduled__2026-11-21", map_index=3)

    outcome = run(operator(input_data=CSV_ROWS, content_type="text/csv"), ti)

    expected = default_inference_id("iris_dag", "predict", "scheduled__2026-11-21", 3)
    assert outcome["inference_id"] == expected
    assert expected.startswith("iris_dag.predict.3-")
    assert len(expected) <= 64
    (request,) = runtime_proxy.requests("POST", INVOKE_PATH)
    assert request.headers["X-Amzn-SageMaker-Inference-Id"] == expected


def test_default_inference_ids_differ_between_runs_and_map_indexes_only() -> None:
    ids = {
        default_inference_id("d", "t", "r1", -1),
        default_inference_id("d", "t", "r2", -1),
        default_inference_id("d", "t", "r1", 0),
        default_inference_id("d", "t2", "r1", -1),
    }

    assert len(ids) == 4
    assert default_inference_id("d", "t", "r1", -1) == default_inference_id("d", "t", "r1", -1)
    long_id = default_inference_id("d" * 200, "t" * 200, "r", 12345)
    assert len(long_id) == 64
    assert long_id.isprintable()


@pytest.mark.parametrize("deferrable", [True, False])
def test_model_error_raises_with_the_models_message_and_the_failed_outcome(deferrable: bool) -> None:
    op = operator(input_data="not,a,number,row\n", content_type="text/csv", inference_id=f"bad-{deferrable}")
    op.deferrable = deferrable

    with pytest.raises(SageMakerAsyncInferenceError) as info:
        run(op)

    message = str(info.value)
    outcome = info.value.outcome
    assert "op-iris" in message
    assert f"bad-{deferrable}" in message
    assert outcome["failure_location"] in message
    model_error = json.loads(outcome["failure_reason"])
    assert model_error["status"] == "error"
    assert "4 numbers" in model_error["message"]
    assert model_error["message"] in message  # the model's own words
    assert outcome["status"] == "Failed"


def test_fail_on_model_error_false_returns_the_failed_outcome() -> None:
    outcome = run(operator(input_data="1,2\n", content_type="text/csv", fail_on_model_error=False))

    assert outcome["status"] == "Failed"
    assert "4" in json.loads(outcome["failure_reason"])["message"]  # the model asks for 4 features
    assert outcome["completed_at"] is not None


def test_output_format_text_and_bytes_decode_the_same_object() -> None:
    text = run(operator(input_data=CSV_ROWS, content_type="text/csv", output_format="text", inference_id="t-1"))
    raw = run(operator(input_data=CSV_ROWS, content_type="text/csv", output_format="bytes", inference_id="b-1"))

    assert isinstance(text["output"], str)
    assert base64.b64decode(raw["output"]).decode() == text["output"]
    assert json.loads(text["output"])["predictions"][1]["label"] == "virginica"
    assert text["output_content_type"] == "application/json"


def test_output_larger_than_max_output_bytes_is_a_clear_error() -> None:
    with pytest.raises(SageMakerAsyncOutputTooLarge) as info:
        run(operator(input_data=CSV_ROWS, content_type="text/csv", output_format="json", max_output_bytes=10))

    message = str(info.value)
    assert "max_output_bytes=10" in message
    assert "s3://sagemaker-async-local/op-iris/output/" in message
    assert " bytes" in message


def test_no_object_by_max_wait_seconds_is_a_timeout_naming_both_locations() -> None:
    op = operator(input_data=CSV_ROWS, content_type="text/csv", custom_attributes="sleep=10", max_wait_seconds=0.5)

    with pytest.raises(SageMakerAsyncInferenceTimeout) as info:
        run(op)

    message = str(info.value)
    assert "expired in its queue" in message
    assert "s3://sagemaker-async-local/op-iris/output/" in message
    assert "s3://sagemaker-async-local/op-iris/failure/" in message
    assert "deadline" in message
    assert info.value.outcome["status"] == "TimedOut"


def test_endpoint_without_failure_path_gives_none_failure_location() -> None:
    outcome = run(operator(endpoint_name="op-iris-nofail", input_data=CSV_ROWS, content_type="text/csv"))

    assert outcome["status"] == "Completed"
    assert outcome["failure_location"] is None


def test_validation_error_from_the_service_fails_at_once_without_retry(runtime_proxy: Any) -> None:
    op = operator(endpoint_name="no-such-endpoint", input_data=CSV_ROWS, content_type="text/csv")

    with pytest.raises(ClientError) as info:
        run(op)

    assert info.value.response["Error"]["Code"] == "ValidationError"
    assert "no-such-endpoint" in str(info.value)
    assert len(runtime_proxy.requests("POST")) == 1


def test_rendered_bad_value_is_refused_before_any_request(runtime_proxy: Any) -> None:
    op = operator(input_data=CSV_ROWS, content_type="text/csv", request_ttl_seconds="{{ params.ttl }}")
    op.request_ttl_seconds = "30"  # what the template rendered to

    with pytest.raises(SageMakerAsyncParameterError) as info:
        run(op)

    assert info.value.parameter == "request_ttl_seconds"
    assert runtime_proxy.requests() == []


def test_links_are_persisted_for_the_endpoint_and_output_object() -> None:
    ti = StandInTaskInstance()

    outcome = run(operator(input_data=CSV_ROWS, content_type="text/csv"), ti)

    assert ti.xcom["sagemaker_endpoint"]["endpoint_name"] == "op-iris"
    assert ti.xcom["sagemaker_endpoint"]["region_name"] == "us-east-1"
    link = ti.xcom["sagemaker_async_output"]
    assert f"s3://{link['bucket']}/{link['key']}" == outcome["output_location"]


def test_deferral_passes_no_kwargs_so_the_event_alone_resumes_the_task(tmp_path: Path) -> None:
    # dag.test() of Airflow 3.3.2 resumes with the event only (apache/airflow#69942). The model answers only once
    # the test releases it, so the worker's check before deferring finds nothing however slow the machine.
    release = tmp_path / "release"
    op = operator(
        input_data=CSV_ROWS, content_type="text/csv", inference_id="no-kwargs", custom_attributes=f"wait_for={release}"
    )
    context: Any = {"ti": StandInTaskInstance()}

    try:
        with pytest.raises(TaskDeferred) as info:
            op.execute(context)
    finally:
        release.touch()  # free the endpoint's slot for the next tests

    assert not info.value.kwargs
    assert info.value.method_name == "execute_complete"
    assert info.value.trigger.serialize()[1]["endpoint_name"] == "op-iris"
