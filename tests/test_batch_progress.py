"""
Batch progress: the I/O-free record (:mod:`airflow_sagemaker_async.batch.progress`), its S3 reads and writes against
the moto server, and the worker writing it across deferrals against the local backend.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskDeferred

from airflow_sagemaker_async.batch import state as batch_state
from airflow_sagemaker_async.batch.core import BatchNames, BatchState
from airflow_sagemaker_async.batch.progress import (
    MAX_FAILURES,
    MAX_POINTS,
    MAX_REASON_CHARS,
    Progress,
    progress_location,
    rate,
    thin,
)
from airflow_sagemaker_async.batch.triggers import SageMakerAsyncBatchInferenceTrigger
from airflow_sagemaker_async.ui.links import PROGRESS_POINTER_KEY, BatchProgressLink
from tests.test_batch import BAD_ROW, GOOD_ROW, batch
from tests.test_operators import StandInTaskInstance


def line(item: int, status: str, reason: str | None = None) -> Any:
    return {"item": item, "inference_id": f"id-{item}", "status": status, "failure_reason": reason}


def new_progress(total: int = 100) -> Progress:
    state = BatchState("abc", "ep", total, "s3://b/out", "s3://b/fail", "2026-12-05T20:00:00+00:00")
    return Progress.of(state)


# -- the record, no I/O ------------------------------------------------------------------------------------------


def test_thin_keeps_at_most_the_limit_evenly_with_first_and_last() -> None:
    points = [[float(t), t, 0, 0] for t in range(1000)]

    thinned = thin(points, 240)

    assert len(thinned) <= 240
    assert thinned[0] == points[0]
    assert thinned[-1] == points[-1]
    gaps = {b[0] - a[0] for a, b in itertools.pairwise(thinned[:-1])}
    assert gaps == {8.0}  # evenly spread: halved three times
    with pytest.raises(ValueError, match="at least 2 points"):
        thin(points, 1)


def test_counts_failures_rate_and_eta() -> None:
    progress = new_progress(100)
    progress.add([line(i, "Completed") for i in range(10)], parts=1)
    progress.mark(1000.0, in_flight=20)
    progress.add([line(10 + i, "Failed", "x" * 1000) for i in range(8)] + [line(30, "TimedOut")], parts=2)
    progress.add([line(31 + i, "Completed") for i in range(11)], parts=3)
    progress.mark(1010.0, in_flight=15)

    assert progress.counts == {"Completed": 21, "Failed": 8, "TimedOut": 1}
    assert progress.parts == 3
    assert progress.not_submitted == 100 - 30 - 15
    assert progress.rate == 2.0  # 20 items ended in 10 s
    assert progress.eta_seconds == 35.0  # 70 left at 2 items/s
    assert len(progress.failures) == MAX_FAILURES
    assert all(len(f["reason"]) == MAX_REASON_CHARS for f in progress.failures)
    assert progress.points == [[1000.0, 10, 0, 0], [1010.0, 21, 8, 1]]
    assert "30 of 100 ended (21 Completed, 8 Failed, 1 TimedOut), 15 in flight, 55 not sent" in progress.figures()
    assert "2.00 items/s, ETA 35 s" in progress.figures()


def test_a_timed_out_item_found_later_moves_to_its_status() -> None:
    progress = new_progress(3)
    progress.add([line(0, "TimedOut"), line(1, "TimedOut"), line(2, "Completed")])

    progress.add([line(0, "Completed")], replacing="TimedOut")

    assert progress.counts == {"Completed": 2, "Failed": 0, "TimedOut": 1}


def test_rate_uses_the_window_and_a_flat_stretch_adds_no_points() -> None:
    progress = new_progress(1000)
    for second in range(0, 300, 10):
        progress.add([line(second, "Completed")] * (second % 20 == 0))
        progress.mark(float(second), in_flight=5)
    assert progress.rate == pytest.approx(0.05, abs=0.01)  # 1 item / 20 s, over the last 120 s
    before = len(progress.points)
    for second in range(300, 400, 10):
        progress.mark(float(second), in_flight=5)
    assert len(progress.points) == before  # the last two points were level already: the flat end moves
    assert progress.points[-1][0] == 390.0
    assert rate([[0.0, 0, 0, 0]]) is None


def test_stays_small_for_a_hundred_thousand_items() -> None:
    progress = new_progress(100_000)
    for part in range(100):
        progress.add(
            [line(part * 1000 + i, "Failed" if i % 7 == 0 else "Completed", "boom" * 200) for i in range(1000)]
        )
        progress.mark(1000.0 + part * 30, in_flight=1000)

    text = progress.to_json()

    assert len(progress.points) <= MAX_POINTS
    assert len(text) < 16_000
    assert Progress.from_json(text) == progress


def test_end_sets_the_manifest_and_an_eta_of_zero() -> None:
    progress = new_progress(1)
    progress.add([line(0, "Completed")])
    progress.mark(5.0, in_flight=0, manifest_location="s3://b/out/abc.batch/manifest.jsonl")

    assert (progress.status, progress.eta_seconds) == ("ended", 0.0)
    assert progress.manifest_location == "s3://b/out/abc.batch/manifest.jsonl"
    assert Progress.from_json(json.dumps({**json.loads(progress.to_json()), "later_field": 1})).status == "ended"


# -- S3 (moto) ------------------------------------------------------------------------------------------------


def test_a_resume_counts_the_parts_written_after_the_last_progress(s3: Any, bucket: str) -> None:
    names = BatchNames.of("abc123", "dag", "task", f"s3://{bucket}/out", None)
    state = BatchState("abc123", "ep", 10, names.output_dir, None, "2026-12-05T20:00:00+00:00")
    batch_state.write_part(s3, names, state, [line(0, "Completed"), line(1, "Failed", "bad row")])
    progress = batch_state.load_progress(s3, names, state)  # no progress.json yet: reads the parts
    progress.add([], parts=state.parts)
    progress.mark(1.0, in_flight=3)
    batch_state.write_progress(s3, names, progress)
    # the worker dies after two more parts, before its next progress write
    batch_state.write_part(s3, names, state, [line(2, "Completed"), line(3, "Completed")])
    batch_state.write_part(s3, names, state, [line(4, "TimedOut")])

    resumed = batch_state.load_progress(s3, names, state)

    assert resumed.counts == {"Completed": 3, "Failed": 1, "TimedOut": 1}
    assert resumed.parts == 3
    assert resumed.failures[0] == {"item": 1, "inference_id": "id-1", "status": "Failed", "reason": "bad row"}
    assert progress_location(names) == f"s3://{bucket}/out/abc123.batch/progress.json"


def test_a_resume_moves_the_items_of_a_recheck_part_out_of_timed_out(s3: Any, bucket: str) -> None:
    names = BatchNames.of("abc124", "dag", "task", f"s3://{bucket}/out", None)
    state = BatchState("abc124", "ep", 3, names.output_dir, None, "2026-12-05T20:00:00+00:00", next_index=3)
    batch_state.write_part(s3, names, state, [line(0, "Completed"), line(1, "TimedOut"), line(2, "TimedOut")])
    progress = batch_state.load_progress(s3, names, state)
    progress.mark(1.0, in_flight=0)
    batch_state.write_progress(s3, names, progress)
    op = batch("ep", input_records=["x"])
    # A new try's re-check finds item 1's result; the worker dies before its next progress write.
    op._write_ended_part(s3, names, state, [line(1, "Completed")], replacing="TimedOut")
    written = s3.get_object(Bucket=bucket, Key=names.state_location().split("/", 3)[3])["Body"].read()

    resumed = batch_state.load_progress(s3, names, BatchState.from_json(written))

    assert resumed.counts["Completed"] == 2
    assert resumed.counts["TimedOut"] == 1, "moved, not counted a second time"
    assert resumed.parts == 2


# -- the worker, against the local backend --------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.usefixtures("backend_connection")
def test_the_worker_keeps_progress_across_deferrals_and_ends_it_with_the_manifest(
    sagemaker_async_backend: Any, s3: Any
) -> None:
    sagemaker_async_backend.create_endpoint("progress-iris", max_concurrent_invocations_per_instance=10)
    records = [BAD_ROW if i % 10 == 3 else GOOD_ROW for i in range(60)]
    op = batch(
        "progress-iris",
        input_records=records,
        max_in_flight=20,
        max_failed_fraction=0.2,
        custom_attributes="sleep=1",
        min_deferral_seconds=0.5,
    )
    ti = StandInTaskInstance(task_id=op.task_id, run_id=f"run-{uuid.uuid4().hex}")
    context: Any = {"ti": ti}
    seen: list[int] = []
    step: Any = lambda: op.execute(context)  # noqa: E731
    for _ in range(200):
        try:
            summary = step()
            break
        except TaskDeferred as deferred:
            location = ti.xcom[PROGRESS_POINTER_KEY]["progress_location"]
            bucket, _, key = location.removeprefix("s3://").partition("/")
            written = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
            seen.append(sum(written["counts"].values()))
            _, kwargs = deferred.trigger.serialize()
            trigger = SageMakerAsyncBatchInferenceTrigger(**kwargs)
            event = asyncio.run(asyncio.wait_for(_first(trigger), 120))
            op._progress = None  # a resume runs in a new process: only S3 remembers
            step = lambda e=event: op.execute_complete(context, event=e)  # noqa: E731
    else:
        raise AssertionError("the batch never ended")

    written = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    assert seen, "the batch never deferred: the model answered too fast for this test"
    assert seen == sorted(seen)  # never reset by a resume
    assert seen[-1] <= 60  # nor counted twice
    assert written["status"] == "ended"
    assert written["counts"] == summary["counts"] == {"Completed": 54, "Failed": 6, "TimedOut": 0}
    assert written["manifest_location"] == summary["manifest_location"]
    assert [f["item"] for f in written["failures"]] == [3, 13, 23, 33, 43]
    assert all(f["reason"] for f in written["failures"])
    assert len(written["points"]) >= 2
    assert written["points"][-1][1:] == [54, 6, 0]
    link = ti.xcom[BatchProgressLink().xcom_key]
    assert link.endswith(f"/sagemaker-async/batch-progress?dag_id=dag&run_id={ti.run_id}&task_id=score&map_index=-1")


async def _first(trigger: SageMakerAsyncBatchInferenceTrigger) -> dict[str, Any]:
    async for event in trigger.run():
        return event.payload
    raise AssertionError("the trigger yielded nothing")
