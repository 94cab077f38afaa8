"""
SageMakerInvokeEndpointWithResponseStreamOperator against the local backend: real
InvokeEndpointWithResponseStream over HTTP (event-stream framing, seen at a recording proxy), the bundled
streaming text model, real S3 multipart uploads in moto.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest
from botocore.exceptions import ClientError, EventStreamError

from airflow_sagemaker_async.common.exceptions import (
    SageMakerAsyncOutputTooLarge,
    SageMakerAsyncParameterError,
    SageMakerEndpointReadTimeout,
    SageMakerModelError,
    SageMakerResponseStreamError,
)
from airflow_sagemaker_async.common.rules import INVOKE_ENDPOINT_WITH_RESPONSE_STREAM, field_rules
from airflow_sagemaker_async.local.eventstream import CONTENT_TYPE, encode_exception, encode_payload_part
from airflow_sagemaker_async.local.text_container import generate, read_prompt
from airflow_sagemaker_async.realtime.events import read_events
from airflow_sagemaker_async.realtime.sinks import MIN_MULTIPART_PART_BYTES
from airflow_sagemaker_async.realtime.streaming import SageMakerInvokeEndpointWithResponseStreamOperator
from tests.proxy import Fault
from tests.test_realtime import RECORDER_COMMAND, StandInTaskInstance

if TYPE_CHECKING:
    from pathlib import Path

STREAM_PATH = "/invocations-response-stream"
PROMPT = {"inputs": "Tell me about Airflow", "parameters": {"max_new_tokens": 6}}

pytestmark = pytest.mark.usefixtures("streaming_endpoints", "backend_connection")


@pytest.fixture(scope="session")
def streaming_endpoints(sagemaker_async_backend: Any) -> dict[str, Any]:
    """Real-time endpoints: ``st-text`` (the streaming text model) and ``st-recorder`` (streams what it received)."""
    return {
        "st-text": sagemaker_async_backend.create_endpoint("st-text", model="text", async_inference=False),
        "st-recorder": sagemaker_async_backend.create_endpoint(
            "st-recorder", container_command=RECORDER_COMMAND, async_inference=False
        ),
    }


def run(op: SageMakerInvokeEndpointWithResponseStreamOperator) -> dict[str, Any]:
    context: Any = {"ti": StandInTaskInstance(task_id=op.task_id)}
    return dict(op.execute(context))


def operator(**kwargs: Any) -> SageMakerInvokeEndpointWithResponseStreamOperator:
    params = {"task_id": "generate", "endpoint_name": "st-text", "input_data": PROMPT, **kwargs}
    return SageMakerInvokeEndpointWithResponseStreamOperator(**params)


def expected_text(document: dict[str, Any] = PROMPT, tokens: int | None = None) -> bytes:
    prompt, count = read_prompt(json.dumps(document).encode())
    return b"".join(generate(prompt, tokens or count or 16))


EVERY_FIELD: dict[str, str] = {
    "content_type": "text/plain",
    "accept": "application/json",
    "custom_attributes": "trace=abc",
    "target_variant": "AllTraffic",
    "target_container_hostname": "primary",
    "inference_id": "st-id-1",
    "session_id": "sess-42",
    "prefix_aware_id": "prefix-7",
}


def test_the_fields_cover_every_request_field_of_the_service_model() -> None:
    fields = set(field_rules(INVOKE_ENDPOINT_WITH_RESPONSE_STREAM)) - {"endpoint_name", "body"}
    assert fields == set(EVERY_FIELD) | {"inference_component_name"}


def test_every_field_reaches_the_service_and_the_models_own_fields_reach_the_container(runtime_proxy: Any) -> None:
    outcome = run(operator(endpoint_name="st-recorder", input_data="hello", output_format="json", **EVERY_FIELD))

    [request] = runtime_proxy.requests("POST", "/endpoints/st-recorder" + STREAM_PATH)
    rules = field_rules(INVOKE_ENDPOINT_WITH_RESPONSE_STREAM)
    for name, value in EVERY_FIELD.items():
        assert request.headers[rules[name].wire_name] == value, name
    assert request.headers["X-Amzn-SageMaker-Accept"] == "application/json"  # Accept's wire name when streaming
    seen = outcome["output"]
    assert seen["body"] == "hello"
    assert seen["headers"]["Accept"] == "application/json"
    for header in ("Content-Type", "X-Amzn-SageMaker-Custom-Attributes", "X-Amzn-SageMaker-Inference-Id"):
        assert seen["headers"][header] == request.headers[header], header
    assert seen["headers"]["X-Amzn-SageMaker-Session-Id"] == "sess-42"
    assert outcome["parts"] == 3
    assert outcome["content_type"] == "application/json"
    assert outcome["custom_attributes"] == "reply=trace=abc"
    assert outcome["invoked_production_variant"] == "AllTraffic"


def test_the_text_model_is_collected_into_the_outcome_part_by_part() -> None:
    outcome = run(operator())

    assert outcome["output"] == expected_text().decode()
    assert outcome["parts"] == 6
    assert outcome["output_bytes"] == len(expected_text())
    assert 0 <= outcome["time_to_first_part_seconds"] < 5
    assert outcome["output_location"] is None
    assert json.loads(json.dumps(outcome)) == outcome


def test_a_model_error_mid_stream_keeps_the_parts_received_in_a_partial_file_never_at_the_path(tmp_path: Path) -> None:
    target = tmp_path / "out" / "generation.txt"
    partial = tmp_path / "out" / "generation.txt.partial"

    with pytest.raises(SageMakerResponseStreamError) as raised:
        run(operator(custom_attributes="tokens=10,fail_after=4", output_file=str(target)))

    error = raised.value
    assert (error.error_type, error.error_code, error.parts) == ("ModelStreamError", "StreamBroken", 4)
    assert not target.exists()  # nothing at the final path looks like a whole answer
    assert error.location == str(partial)
    assert partial.read_bytes() == expected_text(tokens=10)[: error.bytes_received]
    assert partial.read_bytes().count(b" ") == 4
    assert "StreamBroken" in str(error)
    assert f"kept at {partial} (incomplete); {target} was not written" in str(error)


def test_a_whole_stream_to_a_file_is_at_the_path_with_no_partial_left(tmp_path: Path) -> None:
    target = tmp_path / "generation.txt"
    (tmp_path / "generation.txt.partial").write_bytes(b"left by an earlier, broken try")

    outcome = run(operator(output_file=str(target)))

    assert target.read_bytes() == expected_text()
    assert outcome["output_location"] == str(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["generation.txt"]


def test_a_model_error_mid_stream_keeps_the_parts_received_in_a_partial_s3_object(s3: Any, bucket: str) -> None:
    with pytest.raises(SageMakerResponseStreamError) as raised:
        run(operator(custom_attributes="tokens=10,fail_after=3", output_location=f"s3://{bucket}/gen.txt"))

    assert raised.value.parts == 3
    assert raised.value.location == f"s3://{bucket}/gen.txt.partial"
    assert f"s3://{bucket}/gen.txt was not written" in str(raised.value)
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])] == ["gen.txt.partial"]
    body = s3.get_object(Bucket=bucket, Key="gen.txt.partial")["Body"].read()
    assert body == expected_text(tokens=10)[: raised.value.bytes_received]
    assert body.count(b" ") == 3


def test_a_model_error_mid_stream_in_memory_keeps_the_parts_on_the_error() -> None:
    with pytest.raises(SageMakerResponseStreamError) as raised:
        run(operator(custom_attributes="tokens=10,fail_after=2"))

    assert raised.value.received == expected_text(tokens=10)[: raised.value.bytes_received]
    assert raised.value.location is None
    assert raised.value.parts == 2


def test_a_stream_larger_than_one_multipart_part_is_uploaded_in_parts(s3: Any, bucket: str) -> None:
    token_bytes, tokens = 64 * 1024, 180  # 11.25 MiB: two 5 MiB parts and a last, shorter one
    outcome = run(
        operator(
            custom_attributes=f"tokens={tokens},token_bytes={token_bytes},delay=0",
            output_location=f"s3://{bucket}/big.txt",
            multipart_part_bytes=MIN_MULTIPART_PART_BYTES,
        )
    )

    head = s3.head_object(Bucket=bucket, Key="big.txt")
    assert head["ContentLength"] == tokens * token_bytes == outcome["output_bytes"]
    assert head["ContentType"].startswith("text/plain")
    assert outcome["parts"] == tokens
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["big.txt"]  # .partial deleted


def test_a_broken_stream_past_one_part_completes_the_multipart_upload_at_the_partial_key(s3: Any, bucket: str) -> None:
    token_bytes = 64 * 1024
    with pytest.raises(SageMakerResponseStreamError) as raised:
        run(
            operator(
                custom_attributes=f"tokens=120,token_bytes={token_bytes},delay=0,fail_after=90",
                output_location=f"s3://{bucket}/partial.txt",
                multipart_part_bytes=MIN_MULTIPART_PART_BYTES,
            )
        )

    head = s3.head_object(Bucket=bucket, Key="partial.txt.partial")
    assert raised.value.parts == 90
    assert head["ContentLength"] == 90 * token_bytes
    assert head["ETag"].strip('"').endswith("-2")
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["partial.txt.partial"]
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_internal_stream_failure_is_typed_and_keeps_the_parts(runtime_proxy: Any, tmp_path: Path) -> None:
    body = encode_payload_part(b"one ") + encode_payload_part(b"two ")
    body += encode_exception("InternalStreamFailure", {"Message": "The stream failed inside SageMaker."})
    runtime_proxy.add_fault(
        Fault(
            match=lambda seen: seen.path.endswith(STREAM_PATH),
            status=200,
            body=body,
            headers={"Content-Type": CONTENT_TYPE, "X-Amzn-SageMaker-Content-Type": "text/plain"},
        )
    )

    with pytest.raises(SageMakerResponseStreamError, match="InternalStreamFailure after 2 parts") as raised:
        run(operator(output_file=str(tmp_path / "out.txt")))

    assert (raised.value.error_type, raised.value.error_code) == ("InternalStreamFailure", None)
    assert (tmp_path / "out.txt.partial").read_bytes() == b"one two "
    assert not (tmp_path / "out.txt").exists()


def test_model_error_before_the_stream_is_a_model_error() -> None:
    with pytest.raises(SageMakerModelError) as raised:
        run(operator(custom_attributes="status=503"))

    assert raised.value.original_status_code == 503
    assert "status=503 knob" in (raised.value.original_message or "")


def test_collecting_more_than_max_output_bytes_closes_the_stream_with_a_clear_error() -> None:
    with pytest.raises(SageMakerAsyncOutputTooLarge, match="max_output_bytes=20"):
        run(operator(max_output_bytes=20))


def test_progress_is_logged_at_a_bounded_rate(capfd: pytest.CaptureFixture[str]) -> None:
    run(operator(custom_attributes="tokens=30,delay=0.01", progress_interval=3600))

    lines = [line for line in capfd.readouterr().out.splitlines() if "Stream of endpoint st-text" in line]
    assert len(lines) == 2, lines  # the first part, the end; nothing in between at one line per hour
    assert "first part after" in lines[0]
    assert "30 parts" in lines[1]


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"session_id": "NEW_SESSION"}, "session_id"),  # the streaming API cannot open a session
        ({"multipart_part_bytes": 1024}, "multipart_part_bytes"),
        ({"output_file": "/tmp/x", "output_location": "s3://b/k"}, "output_location"),
        ({"output_location": "s3://b/k", "output_format": "text"}, "output_format"),
        ({"output_location": "s3://only-a-bucket"}, "output_location"),
    ],
)
def test_a_bad_parameter_is_refused_at_construction(kwargs: dict[str, Any], parameter: str) -> None:
    with pytest.raises(SageMakerAsyncParameterError) as error:
        operator(**kwargs)

    assert error.value.parameter == parameter


def test_a_rendered_bad_value_is_refused_before_any_request(runtime_proxy: Any) -> None:
    op = operator(target_variant="{{ params.variant }}")
    op.target_variant = "bad_variant"

    with pytest.raises(SageMakerAsyncParameterError, match="target_variant"):
        run(op)

    assert runtime_proxy.requests() == []


def test_unknown_endpoint_is_the_services_validation_error() -> None:
    with pytest.raises(ClientError, match="Endpoint st-nowhere of account 123456789012 not found"):
        run(operator(endpoint_name="st-nowhere"))


@pytest.mark.usefixtures("endpoints")
def test_async_endpoint_streamed_is_a_validation_error() -> None:
    with pytest.raises(ClientError, match="invoke it with InvokeEndpointAsync") as error:
        run(operator(endpoint_name="op-iris"))

    assert error.value.response["Error"]["Code"] == "ValidationError"


class _RawStream:
    """Stands in for the urllib3 response botocore's ``EventStream`` reads: ``stream()`` and ``close()``."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.closed = False

    def stream(self) -> Any:
        yield from self.chunks

    def close(self) -> None:
        self.closed = True


def _botocore_event_stream(chunks: list[bytes]) -> Any:
    """botocore's own ``EventStream`` for InvokeEndpointWithResponseStream's ``Body``, reading ``chunks``."""
    import botocore.session
    from botocore.eventstream import EventStream
    from botocore.parsers import EventStreamJSONParser

    model = botocore.session.get_session().get_service_model("sagemaker-runtime")
    operation = model.operation_model("InvokeEndpointWithResponseStream")
    shape = operation.output_shape.members["Body"]
    return EventStream(_RawStream(chunks), shape, EventStreamJSONParser(), operation.name)


STREAM_ERROR = {"Message": "the model died", "ErrorCode": "StreamBroken"}


def test_read_events_keeps_the_error_code_through_botocores_event_stream_and_event_stream_buffer() -> None:
    # Pins what read_events relies on in botocore: EventStream keeps the HTTP body in ``_raw_stream`` (a private
    # attribute) with a ``stream()`` of byte chunks, and EventStreamBuffer yields messages with ``headers`` and
    # ``payload``. Frames are cut mid-message to check the buffer joins them. A botocore upgrade that changes
    # either fails here, not in a user's DAG.
    frames = (
        encode_payload_part(b"one ") + encode_payload_part(b"two ") + encode_exception("ModelStreamError", STREAM_ERROR)
    )
    chunks = [frames[i : i + 7] for i in range(0, len(frames), 7)]

    events = list(read_events(_botocore_event_stream(chunks)))

    assert [event.data for event in events] == [b"one ", b"two ", None]
    assert (events[-1].error_type, events[-1].error_code, events[-1].message) == (
        "ModelStreamError",
        "StreamBroken",
        "the model died",
    )


def test_botocore_still_drops_the_error_code_so_read_events_is_still_needed() -> None:
    # botocore parses a ModelStreamError into EventStreamError.response["Error"] = {Code, Message} only. If a
    # botocore release starts keeping ErrorCode there, this fails: read_events could then use the public
    # iteration instead of ``_raw_stream``.
    stream = _botocore_event_stream([encode_payload_part(b"x"), encode_exception("ModelStreamError", STREAM_ERROR)])

    with pytest.raises(EventStreamError) as raised:
        list(stream)

    assert raised.value.response["Error"] == {"Code": "ModelStreamError", "Message": "the model died"}
    assert "StreamBroken" not in json.dumps(raised.value.response, default=str)


def test_a_stream_not_started_within_the_read_timeout_is_invoked_once_and_says_what_to_set(runtime_proxy: Any) -> None:
    runtime_proxy.delay = 1.6  # the answer starts 0.6 s after the client gave up
    with pytest.raises(SageMakerEndpointReadTimeout, match=r"read_timeout of 1 s") as raised:
        run(
            operator(
                botocore_config={"read_timeout": 1, "retries": {"mode": "standard", "max_attempts": 5}},
            )
        )

    assert "botocore_config={'read_timeout': 70}" in str(raised.value)
    assert len(runtime_proxy.requests("POST", STREAM_PATH)) == 1


def test_a_model_pausing_past_the_read_timeout_mid_stream_keeps_the_parts_in_a_partial_file(
    sagemaker_async_backend: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    connection = sagemaker_async_backend.airflow_connection()  # straight to the runtime: parts arrive as sent
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DIRECT", json.dumps(connection))
    target = tmp_path / "slow.txt"

    with pytest.raises(SageMakerResponseStreamError) as raised:
        run(
            operator(
                custom_attributes="tokens=2,delay=1.6",  # a part, then 1.6 s of silence
                output_file=str(target),
                aws_conn_id="aws_direct",
                botocore_config={"read_timeout": 1},
            )
        )

    assert raised.value.error_type == "ReadTimeout"
    assert "read_timeout" in str(raised.value)
    assert not target.exists()
    assert raised.value.location == f"{target}.partial"
    assert (tmp_path / "slow.txt.partial").read_bytes() == expected_text(tokens=2)[: raised.value.bytes_received]
