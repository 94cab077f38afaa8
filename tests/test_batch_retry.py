"""
Retries, clears and parameter checks of the batch operator against the local backend (issue 17).

A worker's death is a real ``SIGKILL``: the first try runs in a forked child process, which kills itself at an
exact point (before or after an S3 write, after the n-th InvokeEndpointAsync answered); the retry then runs in
the test process, as the next try on another worker would. The model echoes its input (``recording_container``)
and every input object holds its own URI, so each manifest line can be checked against what its inference
really read.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import sys
import threading
import traceback
import uuid
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import jinja2.sandbox
import pytest
from airflow.sdk.exceptions import TaskDeferred

from airflow_sagemaker_async.batch import state as batch_state
from airflow_sagemaker_async.batch.core import BatchNames, batch_tag
from airflow_sagemaker_async.common.exceptions import SageMakerAsyncBatchFailed, SageMakerAsyncParameterError
from airflow_sagemaker_async.common.hooks import SageMakerRuntimeHook
from airflow_sagemaker_async.common.layout import split_s3_uri
from airflow_sagemaker_async.common.validation import INLINE_BODY
from tests.test_batch import BAD_ROW, GOOD_ROW, batch, invocation_ids, manifest, run_batch
from tests.test_operators import StandInTaskInstance

if TYPE_CHECKING:
    from pathlib import Path

    from airflow_sagemaker_async.batch.operators import SageMakerInvokeEndpointAsyncBatchOperator
    from tests.proxy import Proxy

# A model that writes back the body it read (as JSON {"body": ...}); CustomAttributes "gate=<path>" holds every
# answer until that file exists (60 s at most).
ECHO_MODEL = """
import json, os, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.answer(200 if self.path == "/ping" else 404, b"{}")

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        knobs = self.headers.get("X-Amzn-SageMaker-Custom-Attributes") or ""
        waited = 0.0
        gate = knobs[len("gate="):] if knobs.startswith("gate=") else ""
        while gate and not os.path.exists(gate) and waited < 60:
            time.sleep(0.05)
            waited += 0.05
        self.answer(200, json.dumps({"body": body.decode(errors="replace")}).encode())

server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["SAGEMAKER_BIND_TO_PORT"])), Handler)
server.daemon_threads = True
server.serve_forever()
"""


@pytest.fixture(scope="module")
def echo_endpoint(sagemaker_async_backend: Any) -> str:
    sagemaker_async_backend.create_endpoint(
        "batch-echo", container_command=[sys.executable, "-c", ECHO_MODEL], max_concurrent_invocations_per_instance=20
    )
    return "batch-echo"


@pytest.fixture(scope="module")
def iris_endpoint(sagemaker_async_backend: Any) -> str:
    sagemaker_async_backend.create_endpoint("batch-retry-iris", max_concurrent_invocations_per_instance=50)
    return "batch-retry-iris"


def context(ti: StandInTaskInstance) -> Any:
    return {"ti": ti}


def put_inputs(s3: Any, bucket: str, prefix: str, names: list[str]) -> None:
    """Upload one object per name; each holds its own S3 URI, which the echo model writes back."""
    for name in names:
        s3.put_object(Bucket=bucket, Key=f"{prefix}{name}", Body=f"s3://{bucket}/{prefix}{name}".encode())


#: The object whose write makes the pin: the index of chunked locations, or the digest of input_records.
PIN_NAMES = {"inputs.json", "inputs.jsonl"}


def pinned_locations(s3: Any, summary: dict[str, Any]) -> list[str]:
    """Return the batch's pinned input locations, read from its chunks (through the index)."""
    names = BatchNames(summary["batch_tag"], "", summary["output_prefix"], summary["failure_prefix"])
    pinned = batch_state.read_pin(s3, names, content_type=None)
    assert pinned is not None
    return [str(item.location) for item in pinned]


def die_at(point: str, after: int = 0) -> None:
    """In the forked first try: SIGKILL this process at ``point`` (patches the batch state module's writes)."""

    def kill() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    real_put = batch_state.put
    puts: dict[str, int] = defaultdict(int)

    def put(s3: Any, uri: str, body: bytes) -> None:
        name = uri.rsplit("/", 1)[-1]
        if point == "before_pin" and name in PIN_NAMES:
            kill()  # nothing written, nothing sent
        if point == "after_wave" and name == "state.json":
            kill()  # the first wave is sent; the state never written
        real_put(s3, uri, body)
        puts[name] += 1
        if point == "after_pin" and name in PIN_NAMES:
            kill()  # pinned, nothing sent
        if point == "after_state" and name == "state.json" and puts[name] > after:
            kill()

    batch_state.put = put
    if point == "during":
        real_invoke = SageMakerRuntimeHook.invoke_endpoint_async
        calls = [0]

        def invoke(self: Any, **kwargs: Any) -> Any:
            submission = real_invoke(self, **kwargs)
            calls[0] += 1
            if calls[0] >= after:
                kill()  # the other threads may be mid-request: as a real death
            return submission

        SageMakerRuntimeHook.invoke_endpoint_async = invoke  # type: ignore[method-assign]


def _first_try(op: SageMakerInvokeEndpointAsyncBatchOperator, ti: StandInTaskInstance, point: str, after: int) -> None:
    die_at(point, after)
    try:
        op.execute(context(ti))
    except TaskDeferred:
        os._exit(3)  # the try ended deferred: the worker is gone while the trigger waits
    except BaseException:
        traceback.print_exc()
        os._exit(4)
    os._exit(0)


def first_try_dies(
    op: SageMakerInvokeEndpointAsyncBatchOperator, ti: StandInTaskInstance, point: str, after: int
) -> int:
    """Run the first try in a forked process that kills itself at ``point``; return its exit code."""
    child = multiprocessing.get_context("fork").Process(target=_first_try, args=(op, ti, point, after))
    child.start()
    child.join(timeout=180)
    if child.is_alive():
        child.kill()
        child.join()
        raise AssertionError(f"the first try did not end within 180 s (kill point {point})")
    assert child.exitcode is not None
    assert child.exitcode != 4, "the first try failed before its kill point"
    return child.exitcode


def check_every_line_is_true(
    backend: Any, s3: Any, endpoint: str, summary: dict[str, Any], pinned: list[str]
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Assert the manifest pairs every result with the input its inference read; return lines and invocations."""
    lines = manifest(s3, summary)
    assert [line["item"] for line in lines] == list(range(len(pinned)))
    assert [line["input_location"] for line in lines] == pinned
    for line in lines:
        if line["status"] == "Completed":
            bucket, key = split_s3_uri(line["output_location"])
            echoed = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())["body"]
            assert echoed == line["input_location"], line  # what the inference read is what the line names
        else:
            assert line["status"] == "Failed", line
            assert "Could not read the input" in line["failure_reason"]  # only a deleted input can fail
    sent: dict[str, set[str | None]] = defaultdict(set)
    count: dict[str, int] = defaultdict(int)
    for record in backend.invocations(endpoint):
        if f"-{summary['batch_tag']}-" in record.inference_id:
            sent[record.inference_id].add(record.input_location)
            count[record.inference_id] += 1
    by_id = {line["inference_id"]: line for line in lines}
    assert set(sent) == set(by_id)
    for inference_id, locations in sent.items():
        assert locations == {by_id[inference_id]["input_location"]}  # a re-send reads the same input
    return lines, count


# Python 3.12+ warns that forking a process with threads (the test servers') may deadlock the child; the child
# only makes HTTP requests on fresh clients and ends by SIGKILL or os._exit.
FORK_OK = pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
KILL_POINTS = [("before_pin", 0), ("after_pin", 0), ("during", 7), ("after_wave", 0), ("after_state", 0)]


@FORK_OK
@pytest.mark.parametrize(("point", "after"), KILL_POINTS)
def test_a_retry_after_a_sigkill_pairs_every_result_with_its_input_though_the_prefix_changed(
    sagemaker_async_backend: Any,
    echo_endpoint: str,
    s3: Any,
    bucket: str,
    backend_connection: str,
    point: str,
    after: int,
) -> None:
    original = [f"{i:03d}.csv" for i in range(1, 41)]
    put_inputs(s3, bucket, "in/", original)
    ti = StandInTaskInstance(task_id="score", run_id=f"kill-{point}-{uuid.uuid4().hex[:8]}")
    params = {"input_prefix": f"s3://{bucket}/in/", "max_in_flight": 16, "submit_concurrency": 4}

    code = first_try_dies(batch(echo_endpoint, **params), ti, point, after)
    sagemaker_async_backend.wait_idle(timeout=60)
    put_inputs(s3, bucket, "in/", ["000-new.csv"])  # sorts first: a re-listing would shift every index
    s3.delete_object(Bucket=bucket, Key="in/020.csv")
    ti.try_number = 2
    summary = run_batch(batch(echo_endpoint, **params, max_failed_items=1), ti)

    pinned_before = point != "before_pin"
    pinned = [f"s3://{bucket}/in/{name}" for name in (original if pinned_before else ["000-new.csv", *original])]
    if not pinned_before:
        pinned.remove(f"s3://{bucket}/in/020.csv")
    lines, count = check_every_line_is_true(sagemaker_async_backend, s3, echo_endpoint, summary, pinned)
    assert code == -signal.SIGKILL
    assert set(count.values()) == {1}  # every earlier result was found by LIST, nothing sent twice
    if point in {"before_pin", "after_pin"}:
        assert (summary["resumed_items"], summary["invocations"]) == (0, len(pinned))  # nothing was sent
    else:
        assert summary["resumed_items"] >= after  # found by LIST, not sent again
    assert summary["counts"]["Failed"] == (1 if pinned_before else 0)  # the deleted input, if it was pinned
    assert sum(line["status"] == "Completed" for line in lines) == len(pinned) - summary["counts"]["Failed"]


@FORK_OK
def test_random_kill_points_and_prefix_changes_never_pair_a_result_with_the_wrong_input(
    sagemaker_async_backend: Any,
    echo_endpoint: str,
    s3: Any,
    bucket: str,
    backend_connection: str,
    tmp_path: Path,
) -> None:
    rng = random.Random(17)  # seeded: every run tries the same cases
    twice = 0
    gate = tmp_path / "gate"
    real_invoke = SageMakerRuntimeHook.invoke_endpoint_async

    def invoke_then_open(self: Any, **kwargs: Any) -> Any:
        submission = real_invoke(self, **kwargs)
        gate.touch()  # the retry has listed and submits: the first try's held items may end now
        return submission

    for case in range(8):
        prefix = f"case{case}/"
        original = [f"{i:03d}.csv" for i in range(10, 10 + rng.randint(12, 20))]
        put_inputs(s3, bucket, prefix, original)
        # Every point once with results held until the retry submits (items in flight at the kill), then at random.
        first_round = case < len(KILL_POINTS)
        gate.unlink(missing_ok=True)
        point = KILL_POINTS[case][0] if first_round else rng.choice(KILL_POINTS)[0]
        after = rng.randint(1, 12) if point == "during" else rng.randint(0, 2) if point == "after_state" else 0
        params = {
            "input_prefix": f"s3://{bucket}/{prefix}",
            "max_in_flight": rng.choice([8, 64]),
            "custom_attributes": f"gate={gate}" if first_round or rng.random() < 0.5 else "gate=",  # "": no hold
        }
        ti = StandInTaskInstance(task_id="score", run_id=f"property-{case}-{uuid.uuid4().hex[:8]}")
        wait = not first_round and rng.random() < 0.5  # else items of the first try may still be in flight
        description = f"case {case}: kill {point}/{after}, {params}, wait={wait}"

        first_try_dies(batch(echo_endpoint, **params), ti, point, after)
        if wait:
            gate.touch()
            sagemaker_async_backend.wait_idle(timeout=60)
        added = [f"{i:03d}-new.csv" for i in rng.sample(range(40), rng.randint(0, 3))]
        deleted = rng.sample(original, rng.randint(0, 2))
        put_inputs(s3, bucket, prefix, added)
        for name in deleted:
            s3.delete_object(Bucket=bucket, Key=f"{prefix}{name}")
        ti.try_number = 2
        opener = threading.Timer(10, gate.touch)  # a retry that submits nothing (all in flight, recorded)
        opener.start()
        SageMakerRuntimeHook.invoke_endpoint_async = invoke_then_open  # type: ignore[method-assign]
        try:
            summary = run_batch(batch(echo_endpoint, **params, max_failed_items=len(deleted)), ti)
        finally:
            SageMakerRuntimeHook.invoke_endpoint_async = real_invoke  # type: ignore[method-assign]
            opener.cancel()
        gate.touch()
        sagemaker_async_backend.wait_idle(timeout=60)

        bucket_prefix = f"s3://{bucket}/{prefix}"
        pinned = pinned_locations(s3, summary)
        listed_first = sorted(bucket_prefix + name for name in original)
        listed_now = sorted(bucket_prefix + name for name in {*original, *added} - set(deleted))
        assert pinned in (listed_first, listed_now), description
        _lines, count = check_every_line_is_true(sagemaker_async_backend, s3, echo_endpoint, summary, pinned)
        assert max(count.values()) <= 2, description  # at most twice: an item in flight when the try died
        if wait or point in {"before_pin", "after_pin"}:
            assert set(count.values()) == {1}, description  # nothing was in flight: each input scored once
        assert summary["invocations"] + summary["resumed_items"] >= len(pinned), description
        twice += sum(n == 2 for n in count.values())
    assert twice > 0  # the in-flight case did happen: the bound of 2 was tested, not only the bound of 1


@FORK_OK
def test_pinned_locations_win_over_a_changed_upstream_list_and_changed_records_are_refused(
    sagemaker_async_backend: Any, echo_endpoint: str, iris_endpoint: str, s3: Any, bucket: str, backend_connection: str
) -> None:
    put_inputs(s3, bucket, "in/", ["a.csv", "b.csv", "c.csv"])
    first, changed = ([f"s3://{bucket}/in/{n}" for n in names] for names in (["a.csv", "b.csv"], ["c.csv", "a.csv"]))
    located = StandInTaskInstance(task_id="score", run_id=f"pin-loc-{uuid.uuid4().hex[:8]}")
    recorded = StandInTaskInstance(task_id="score", run_id=f"pin-rec-{uuid.uuid4().hex[:8]}")

    first_try_dies(batch(echo_endpoint, input_locations=first), located, "after_pin", 0)
    # input_s3_prefix: where the records go when the installed botocore has no inline Body (< 1.43.29).
    uploads = f"s3://{bucket}/uploads"
    first_try_dies(
        batch(iris_endpoint, input_records=[GOOD_ROW] * 3, input_s3_prefix=uploads), recorded, "after_pin", 0
    )
    located.try_number = recorded.try_number = 2
    summary = run_batch(batch(echo_endpoint, input_locations=changed), located)
    with pytest.raises(SageMakerAsyncParameterError, match="input_records changed between tries") as info:
        run_batch(batch(iris_endpoint, input_records=[GOOD_ROW, GOOD_ROW, BAD_ROW], input_s3_prefix=uploads), recorded)

    check_every_line_is_true(sagemaker_async_backend, s3, echo_endpoint, summary, first)
    assert info.value.parameter == "input_records"
    tag = batch_tag(recorded.dag_id, recorded.task_id, recorded.run_id)
    assert not invocation_ids(sagemaker_async_backend, iris_endpoint, tag)  # refused before any submission


# -- case 2: every check before any request --------------------------------------------------------------


@pytest.fixture
def counted_connection(
    sagemaker_async_backend: Any, runtime_proxy: Proxy, s3_proxy: Proxy, monkeypatch: pytest.MonkeyPatch
) -> tuple[Proxy, Proxy]:
    """Point ``aws_default`` at the backend through two recording proxies: moto (S3, control plane), runtime."""
    connection = sagemaker_async_backend.airflow_connection()
    connection["extra"]["endpoint_url"] = s3_proxy.url
    connection["extra"]["service_config"]["sagemaker-runtime"]["endpoint_url"] = runtime_proxy.url
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(connection))
    return s3_proxy, runtime_proxy


@pytest.mark.parametrize(
    ("kwargs", "parameter", "words"),
    [
        ({"input_records": ["a"], "max_in_flight": 0.5}, "max_in_flight", "whole number"),
        ({"input_records": ["a"], "submit_concurrency": 0.5}, "submit_concurrency", "whole number"),
        ({"input_records": ["a"], "max_in_flight": "10"}, "max_in_flight", "Pass an int"),
        ({"input_records": []}, "input_records", "no inputs"),
        ({"input_locations": []}, "input_locations", "no inputs"),
        ({"input_locations": "[]"}, "input_locations", "no inputs"),
        ({"input_locations": "s3://b/k"}, "input_locations", "must be a list"),
        ({"input_locations": {"s3://b/k": 1}}, "input_locations", "got dict"),
        ({"input_records": 5}, "input_records", "got int"),
        ({"input_locations": ["s3://b/k", "ftp://x/y"]}, "input_locations", "input_locations[1]"),
        ({"input_locations": ["s3://b/k", 7]}, "input_locations", "input_locations[1]"),
        # With somewhere to upload to (what a botocore without an inline Body needs): nothing is uploaded either.
        ({"input_records": ["a", {1, 2}], "input_s3_prefix": "s3://b/uploads"}, "input_records", "input_records[1]"),
        # Too large for the inline Body, nowhere to upload it; without any inline Body (botocore < 1.43.29) the
        # refusal names input_s3_prefix, which every record then needs.
        (
            {"input_records": ["x" * 128_001]},
            "input_records" if INLINE_BODY else "input_s3_prefix",
            "input_s3_prefix",
        ),
        ({"input_prefix": "bucket/no-scheme"}, "input_prefix", "input_prefix"),
    ],
)
def test_every_check_is_made_before_any_request_of_any_kind(
    echo_endpoint: str,
    counted_connection: tuple[Proxy, Proxy],
    kwargs: dict[str, Any],
    parameter: str,
    words: str,
) -> None:
    s3_proxy, runtime_proxy = counted_connection
    s3_proxy.clear()

    with pytest.raises(SageMakerAsyncParameterError) as info:
        batch(echo_endpoint, **kwargs).execute(context(StandInTaskInstance(task_id="score", run_id="checked")))

    assert info.value.parameter == parameter
    assert words in str(info.value)
    assert s3_proxy.count == 0  # no S3, no DescribeEndpoint
    assert runtime_proxy.count == 0


def test_the_proxies_do_count_the_requests_of_a_good_batch(
    echo_endpoint: str, counted_connection: tuple[Proxy, Proxy], bucket: str, s3: Any
) -> None:
    s3_proxy, runtime_proxy = counted_connection
    put_inputs(s3, bucket, "in/", ["a.csv"])

    run_batch(batch(echo_endpoint, input_locations=[f"s3://{bucket}/in/a.csv"]))

    assert s3_proxy.requests("POST")
    assert s3_proxy.requests("PUT")
    assert len(runtime_proxy.requests("POST")) == 1


# -- case 3: a templated list rendered as its Python repr -------------------------------------------------


class _XComTaskInstance(StandInTaskInstance):
    def xcom_pull(self, task_ids: str) -> Any:
        return self.xcom[task_ids]


def render_as_airflow_does(template: str, ti: Any) -> str:
    """Render as Airflow's default (non-native) environment does: a sandboxed Jinja, the value's str()."""
    return jinja2.sandbox.SandboxedEnvironment().from_string(template).render(ti=ti)


def test_a_templated_upstream_list_rendered_as_a_python_repr_is_read_as_the_list(
    echo_endpoint: str, s3: Any, bucket: str, backend_connection: str
) -> None:
    names = ["it's.csv", "b.csv"]  # a quote in a key: repr switches to "..." for it, JSON cannot read it
    put_inputs(s3, bucket, "in/", names)
    ti = _XComTaskInstance(task_id="score", run_id=f"repr-{uuid.uuid4().hex[:8]}")
    ti.xcom["list"] = [f"s3://{bucket}/in/{name}" for name in names]
    rendered = render_as_airflow_does("{{ ti.xcom_pull(task_ids='list') }}", ti)

    summary = run_batch(batch(echo_endpoint, input_locations=rendered), ti)

    assert rendered.startswith("[")
    assert "'" in rendered
    assert [line["input_location"] for line in manifest(s3, summary)] == ti.xcom["list"]
    assert summary["counts"]["Completed"] == 2


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("__import__('os').getpid()", "str (25 characters, \"__import__('os').getpid()\")"),
        ("<airflow.LazyXComSequence object at 0x7f>", "'<airflow.LazyXComSequence"),
        ("{'a': 1}", "str (8 characters"),
    ],
)
def test_an_unparsable_templated_value_is_refused_naming_both_fixes(
    echo_endpoint: str, runtime_proxy: Proxy, value: str, shown: str
) -> None:
    with pytest.raises(SageMakerAsyncParameterError) as info:
        batch(echo_endpoint, input_locations=value).execute(context(StandInTaskInstance(task_id="score")))

    message = str(info.value)
    assert info.value.parameter == "input_locations"
    assert shown in message
    assert ".output" in message
    assert "XComArg" in message
    assert "render_template_as_native_obj=True" in message
    assert runtime_proxy.requests() == []


# -- case 4: a new try looks up TimedOut items again ------------------------------------------------------


def test_a_new_try_finds_the_late_results_of_timed_out_items_and_rewrites_manifest_and_summary(
    sagemaker_async_backend: Any, echo_endpoint: str, s3: Any, bucket: str, backend_connection: str, tmp_path: Path
) -> None:
    put_inputs(s3, bucket, "late/", ["a.csv", "b.csv", "c.csv"])
    locations = [f"s3://{bucket}/late/{name}" for name in ("a.csv", "b.csv", "missing.csv", "c.csv")]
    gate = tmp_path / "gate"  # the model answers once the test opens it: after the items' deadline
    params = {"input_locations": locations, "custom_attributes": f"gate={gate}", "max_wait_seconds": 1}
    ti = StandInTaskInstance(task_id="score", run_id=f"late-{uuid.uuid4().hex[:8]}")

    with pytest.raises(SageMakerAsyncBatchFailed) as first:
        run_batch(batch(echo_endpoint, **params), ti)
    gate.touch()
    sagemaker_async_backend.wait_idle(timeout=60)  # the late results are in S3 now
    ti.try_number = 2
    summary = run_batch(batch(echo_endpoint, **params, max_failed_items=1), ti)

    assert first.value.summary["counts"] == {"Completed": 0, "Failed": 1, "TimedOut": 3}
    assert summary["batch_tag"] == first.value.summary["batch_tag"]
    assert summary["counts"] == {"Completed": 3, "Failed": 1, "TimedOut": 0}
    lines, count = check_every_line_is_true(sagemaker_async_backend, s3, echo_endpoint, summary, locations)
    assert [line["status"] for line in lines] == ["Completed", "Completed", "Failed", "Completed"]
    assert all(line["completed_at"] for line in lines if line["status"] == "Completed")
    assert set(count.values()) == {1}  # looked up by LIST, not sent again; the Failed item kept its verdict


# -- case 5: a clear after a successful try ---------------------------------------------------------------


def test_a_clear_after_success_scores_again_and_a_retry_of_that_goes_on_with_it(
    sagemaker_async_backend: Any, echo_endpoint: str, s3: Any, backend_connection: str, tmp_path: Path
) -> None:
    ti = StandInTaskInstance(task_id="score", run_id=f"clear-{uuid.uuid4().hex[:8]}")
    params = {"input_records": [f"row {i}\n" for i in range(5)]}
    gate = tmp_path / "gate"

    first = run_batch(batch(echo_endpoint, **params), ti)
    ti.try_number = 2  # cleared: Airflow starts a new try
    with pytest.raises(TaskDeferred) as deferred:  # held by the model: the try defers, then its worker dies
        batch(echo_endpoint, **params, custom_attributes=f"gate={gate}").execute(context(ti))
    gate.touch()
    sagemaker_async_backend.wait_idle(timeout=60)
    ti.try_number = 3  # Airflow retries the re-score
    again = run_batch(batch(echo_endpoint, **params), ti)

    assert deferred.value.trigger.serialize()[1]["batch_tag"] == again["batch_tag"] != first["batch_tag"]
    assert again["counts"] == {"Completed": 5, "Failed": 0, "TimedOut": 0}
    assert again["resumed_items"] == 0
    assert again["invocations"] == 5  # the retry watched the re-score's items, did not send them again
    assert sum(invocation_ids(sagemaker_async_backend, echo_endpoint, again["batch_tag"]).values()) == 5
    assert sum(invocation_ids(sagemaker_async_backend, echo_endpoint, first["batch_tag"]).values()) == 5
    assert len(manifest(s3, first)) == 5  # the first batch's manifest stays where it was


def test_with_rescore_on_clear_false_a_clear_returns_the_batch_as_it_ended(
    sagemaker_async_backend: Any, echo_endpoint: str, backend_connection: str
) -> None:
    ti = StandInTaskInstance(task_id="score", run_id=f"keep-{uuid.uuid4().hex[:8]}")
    params = {"input_records": [f"row {i}\n" for i in range(5)], "rescore_on_clear": False}

    first = run_batch(batch(echo_endpoint, **params), ti)
    ti.try_number = 2
    again = run_batch(batch(echo_endpoint, **params), ti)

    assert again["batch_tag"] == first["batch_tag"]
    assert again["counts"] == first["counts"] == {"Completed": 5, "Failed": 0, "TimedOut": 0}
    assert sum(invocation_ids(sagemaker_async_backend, echo_endpoint, first["batch_tag"]).values()) == 5
