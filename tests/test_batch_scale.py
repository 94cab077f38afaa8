"""
A batch's S3 costs per wave grow with the items in flight, not with the items that ended (issue 21).

The real operator runs its real loop (pin, waves, checks, ended parts, state, deferrals, resumes, manifest)
against an in-memory S3 that counts every request and its bytes, and an endpoint that answers at once and
finishes items only between resumes, lowest index first (as the trigger would find them), so every run is the same.
A moto server would be the real thing, but 20,000 items through it take minutes here; the in-memory S3 keeps
ListObjectsV2's documented rules (ascending keys, ``Prefix``, ``StartAfter``, ``MaxKeys``, continuation).
Bytes are the bodies of GET / PUT and, for a LIST, an estimate of its XML answer (key length + 250 per key).

At 2,000 and at 20,000 items, each resume (a wave) makes about the same requests and moves about the same
bytes whether 150 or 19,000 items have ended: the LIST of a block starts after its lowest pending item, the
pinned inputs are read a chunk at a time, the state holds only the items in flight. The input prefix is
listed once, by the first try.
"""

from __future__ import annotations

import bisect
import io
import json
import threading
from collections import Counter, deque
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskDeferred
from botocore.exceptions import ClientError

from airflow_sagemaker_async.batch.core import BatchNames, PendingItem, batch_tag
from airflow_sagemaker_async.batch.operators import SageMakerInvokeEndpointAsyncBatchOperator
from airflow_sagemaker_async.batch.state import INPUT_CHUNK
from airflow_sagemaker_async.common.layout import join_s3
from tests.test_operators import StandInTaskInstance

BUCKET = "scale"
LIST_BYTES_PER_KEY = 250
MAX_IN_FLIGHT = 200


class CountingS3:
    """An in-memory S3 (one client's calls) that counts each request: kind, bytes sent, bytes received."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.keys: list[str] = []  # sorted
        self.log: list[tuple[str, str, int, int]] = []  # (kind, key or prefix, sent, received)
        self.lock = threading.Lock()

    def _count(self, kind: str, key: str, sent: int, received: int) -> None:
        with self.lock:
            self.log.append((kind, key, sent, received))

    def put_object(self, *, Bucket: str, Key: str, Body: bytes, **_: Any) -> dict[str, Any]:
        with self.lock:
            if Key not in self.objects:
                bisect.insort(self.keys, Key)
            self.objects[Key] = bytes(Body)
        self._count("PUT", Key, len(Body), 0)
        return {}

    def _missing(self, operation: str) -> ClientError:
        return ClientError({"Error": {"Code": "NoSuchKey"}, "ResponseMetadata": {"HTTPStatusCode": 404}}, operation)

    def get_object(self, *, Bucket: str, Key: str, **_: Any) -> dict[str, Any]:
        body = self.objects.get(Key)
        self._count("GET", Key, 0, len(body or b""))
        if body is None:
            raise self._missing("GetObject")
        return {"Body": io.BytesIO(body), "ContentType": None}

    def head_object(self, *, Bucket: str, Key: str, **_: Any) -> dict[str, Any]:
        body = self.objects.get(Key)
        self._count("HEAD", Key, 0, 0)
        if body is None:
            raise self._missing("HeadObject")
        return {"ContentLength": len(body), "LastModified": datetime.now(UTC)}

    def list_objects_v2(
        self,
        *,
        Bucket: str,
        Prefix: str = "",
        StartAfter: str = "",
        MaxKeys: int = 1000,
        ContinuationToken: str | None = None,
    ) -> dict[str, Any]:
        after = ContinuationToken or StartAfter
        with self.lock:
            start = bisect.bisect_right(self.keys, after) if after else bisect.bisect_left(self.keys, Prefix)
            start = max(start, bisect.bisect_left(self.keys, Prefix))
            page: list[str] = []
            truncated = False
            for key in self.keys[start:]:
                if not key.startswith(Prefix):
                    break
                if len(page) == MaxKeys:
                    truncated = True
                    break
                page.append(key)
        self._count("LIST", Prefix, 0, 300 + sum(len(k) + LIST_BYTES_PER_KEY for k in page))
        answer: dict[str, Any] = {
            "Contents": [{"Key": k, "LastModified": datetime.now(UTC), "Size": len(self.objects[k])} for k in page],
            "IsTruncated": truncated,
        }
        if truncated:
            answer["NextContinuationToken"] = page[-1]
        return answer

    def get_paginator(self, operation: str) -> Any:
        assert operation == "list_objects_v2"

        def paginate(**request: Any) -> Any:
            while True:
                page = self.list_objects_v2(**request)
                yield page
                if not page["IsTruncated"]:
                    return
                request = {**request, "ContinuationToken": page["NextContinuationToken"]}
                request.pop("StartAfter", None)

        return SimpleNamespace(paginate=paginate)


class InstantEndpoint:
    """InvokeEndpointAsync that answers at once; :meth:`finish` writes the outputs of the oldest items."""

    def __init__(self, s3: CountingS3, output: str, failure: str) -> None:
        self.s3, self.output, self.failure = s3, output, failure
        self.queue: deque[str] = deque()
        self.calls = 0
        self.lock = threading.Lock()

    def invoke_endpoint_async(self, **request: Any) -> Any:
        directory = join_s3(self.output, request["s3_output_path_extension"])
        key = f"{directory}/{request['filename']}"
        with self.lock:
            self.queue.append(key)
            self.calls += 1
        failure = join_s3(self.failure, request["s3_output_path_extension"], request["filename"])
        return SimpleNamespace(output_location=f"s3://{BUCKET}/{key}", failure_location=f"s3://{BUCKET}/{failure}")

    def finish(self, leave: int) -> None:
        """Write the output of every item sent but the newest ``leave`` (the model's work, not the task's)."""
        with self.lock:
            # Oldest by index: the wave's threads append in the order their calls answer, which varies.
            self.queue = deque(sorted(self.queue))
            while len(self.queue) > leave:
                key = self.queue.popleft()
                self.s3.objects[key] = b'{"prediction": 1}'
                bisect.insort(self.s3.keys, key)


def counted_operator(
    s3: CountingS3, endpoint: InstantEndpoint, monkeypatch: pytest.MonkeyPatch
) -> SageMakerInvokeEndpointAsyncBatchOperator:
    """The batch operator on ``s3`` and ``endpoint``: every object under ``in/``, a fast schedule, no guard."""
    op = SageMakerInvokeEndpointAsyncBatchOperator(
        task_id="score",
        endpoint_name="scale",
        input_prefix=f"s3://{BUCKET}/in/",
        content_type="text/csv",
        max_in_flight=MAX_IN_FLIGHT,
        poll_interval=0.01,
        max_poll_interval=0.05,
        min_deferral_seconds=0,
    )
    monkeypatch.setattr(op, "_s3", lambda: s3)
    monkeypatch.setattr(op, "_result_dirs", lambda fields: (f"s3://{BUCKET}/out", f"s3://{BUCKET}/fail"))
    op.__dict__["_submitter"] = endpoint  # the cached property
    return op


def drive(
    op: SageMakerInvokeEndpointAsyncBatchOperator, context: Any, s3: CountingS3, endpoint: InstantEndpoint
) -> tuple[dict[str, Any], list[list[tuple[str, str, int, int]]]]:
    """Execute, then resume after each deferral once the model has left ``low_water`` items; return the summary
    and the requests of each step."""
    steps: list[list[tuple[str, str, int, int]]] = []
    step: Any = lambda: op.execute(context)  # noqa: E731
    while True:
        mark = len(s3.log)
        try:
            summary = step()
        except TaskDeferred as deferred:
            steps.append(s3.log[mark:])
            event = {
                "status": "LowWater",
                "state_location": deferred.trigger.state_location,  # type: ignore[attr-defined]
                "ended": 0,
                "pending": 0,
            }
            endpoint.finish(leave=deferred.trigger.low_water)  # type: ignore[attr-defined]  # the trigger's wait
            step = lambda e=event: op.execute_complete(context, event=e)  # noqa: E731
            continue
        steps.append(s3.log[mark:])
        return summary, steps


def put_inputs(s3: CountingS3, n: int) -> None:
    for index in range(n):
        s3.put_object(Bucket=BUCKET, Key=f"in/{index:06d}.csv", Body=b"5.1,3.5,1.4,0.2\n")
    s3.log.clear()


def run_counted(n: int, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Run a batch of ``n`` input objects to its end; return the requests of each step (first try, resumes)."""
    s3 = CountingS3()
    put_inputs(s3, n)
    endpoint = InstantEndpoint(s3, "out", "fail")
    op = counted_operator(s3, endpoint, monkeypatch)
    context: Any = {"ti": StandInTaskInstance(task_id="score", run_id=f"scale-{n}")}
    summary, steps = drive(op, context, s3, endpoint)
    assert summary["counts"] == {"Completed": n, "Failed": 0, "TimedOut": 0}
    assert endpoint.calls == n  # each item sent once
    return {"steps": steps}


def per_step(requests: list[tuple[str, str, int, int]]) -> tuple[int, int, int]:
    """Return ``(requests, bytes moved, keys listed)`` of one step."""
    listed = sum((received - 300) // LIST_BYTES_PER_KEY for kind, _, _, received in requests if kind == "LIST")
    return len(requests), sum(sent + received for _, _, sent, received in requests), listed


@pytest.fixture(scope="module")
def runs() -> dict[int, dict[str, Any]]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        return {n: run_counted(n, monkeypatch) for n in (2_000, 20_000)}


def test_each_wave_costs_the_same_requests_and_bytes_however_many_items_ended(runs: dict[int, Any]) -> None:
    means: dict[int, tuple[float, float]] = {}
    for n, run in runs.items():
        resumes = run["steps"][1:-1]  # the first try lists and pins; the last writes the manifest
        assert len(resumes) >= n // MAX_IN_FLIGHT  # one resume per wave of about 150 items
        costs = [per_step(step) for step in resumes]
        third = len(costs) // 3
        early, late = costs[1:third], costs[-third:]  # late: > 65 % of the items ended
        for what in (0, 1):
            early_mean = sum(c[what] for c in early) / len(early)
            late_mean = sum(c[what] for c in late) / len(late)
            assert late_mean <= 1.25 * early_mean, (n, what, early_mean, late_mean)
        for requests, moved, listed in costs:
            assert listed <= 2 * MAX_IN_FLIGHT, (n, requests, moved, listed)  # never the ended items of a block
        means[n] = (sum(c[0] for c in costs) / len(costs), sum(c[1] for c in costs) / len(costs))
    # Ten times the items, the same cost per wave: it depends on the items in flight only.
    assert means[20_000][0] <= 1.25 * means[2_000][0], means
    assert means[20_000][1] <= 1.25 * means[2_000][1], means


def test_the_prefix_is_listed_once_and_a_resume_reads_one_chunk_of_the_inputs_at_most(runs: dict[int, Any]) -> None:
    for n, run in runs.items():
        first, *resumes = run["steps"]
        input_lists = Counter(kind for kind, key, _, _ in first if kind == "LIST" and key == "in/")
        assert input_lists["LIST"] == -(-n // 1000)  # every page once, by the first try
        assert all(not (kind == "LIST" and key == "in/") for step in resumes for kind, key, _, _ in step)
        for step in resumes[:-1]:
            chunks = [key for kind, key, _, _ in step if kind == "GET" and "/inputs/" in key]
            assert len(chunks) <= 2, chunks  # the wave's items lie in one chunk, or across two
            assert not [key for kind, key, _, _ in step if kind == "GET" and key.endswith("/inputs.jsonl")]
        chunk_puts = [key for kind, key, _, _ in first if kind == "PUT" and "/inputs/" in key]
        assert len(chunk_puts) == -(-n // INPUT_CHUNK)


def test_a_batch_pinned_and_recorded_by_an_older_version_resumes(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    A batch started before the chunked pin: ``inputs.jsonl`` (the whole list) and a ``state.json`` without the
    new fields. A new try reads both, looks up every item before sending it (the old state cannot say what
    was sent), and ends with each item scored once.
    """
    n, run_id = 300, "older"
    s3 = CountingS3()
    put_inputs(s3, n)
    endpoint = InstantEndpoint(s3, "out", "fail")
    tag = batch_tag("dag", "score", run_id)
    extension = f"airflow-batch/{tag}"
    names = BatchNames.of(tag, "dag", "score", f"s3://{BUCKET}/out/{extension}", f"s3://{BUCKET}/fail/{extension}")
    locations = [f"s3://{BUCKET}/in/{index:06d}.csv" for index in range(n)]
    s3.put_object(
        Bucket=BUCKET,
        Key=f"out/{extension}/{tag}.batch/inputs.jsonl",
        Body="\n".join(json.dumps(location) for location in locations).encode(),
    )
    now = datetime.now(UTC)
    pending = [
        PendingItem(
            i,
            names.inference_id(i),
            locations[i],
            names.output_location(i),
            None,
            now.isoformat(),
            (now + timedelta(hours=1)).isoformat(),
        )
        for i in range(100)
    ]
    old_state = {  # the fields of the older version only
        "tag": tag,
        "endpoint_name": "scale",
        "total": n,
        "output_dir": names.output_dir,
        "failure_dir": names.failure_dir,
        "started_at": now.isoformat(),
        "next_index": 100,
        "pending": [asdict(item) for item in pending],
        "parts": 0,
        "submitted": 100,
        "resumed": 0,
        "deferrals": 1,
        "generation": 1,
        "succeeded_try": None,
    }
    s3.put_object(Bucket=BUCKET, Key=f"out/{extension}/{tag}.batch/state.json", Body=json.dumps(old_state).encode())
    # The older try's model: items 0-99 were recorded in flight (0-49 ended since); it also sent 100-109 and
    # died before recording them (they ended too).
    for index in [*range(50), *range(100, 110)]:
        s3.put_object(Bucket=BUCKET, Key=f"out/{extension}/{names.filename(index)}", Body=b"{}")
    endpoint.queue.extend(f"out/{extension}/{names.filename(index)}" for index in range(50, 100))
    op = counted_operator(s3, endpoint, monkeypatch)
    context: Any = {"ti": StandInTaskInstance(task_id="score", run_id=run_id, try_number=2)}
    summary, _ = drive(op, context, s3, endpoint)
    assert summary["counts"] == {"Completed": n, "Failed": 0, "TimedOut": 0}
    assert summary["resumed_items"] == 10  # 100-109: found by the look-up, not sent again
    assert endpoint.calls == n - 110  # neither the 100 recorded in flight nor the 10 found were sent again
    assert not [key for key in s3.objects if key.endswith("/inputs.json")]  # the older pin stays as it was
