"""The I/O-free core of a batch: names within the service model's rules, block prefixes, reconciling, state."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from airflow_sagemaker_async.batch.core import (
    BatchNames,
    BatchState,
    Found,
    PendingItem,
    batch_tag,
    blocks,
    list_requests,
    low_water_mark,
    merge_found,
    pending_runs,
    reconcile,
)
from airflow_sagemaker_async.batch.inputs import as_list as _as_list
from airflow_sagemaker_async.batch.inputs import positive_int as _positive_int
from airflow_sagemaker_async.common.exceptions import SageMakerAsyncParameterError
from airflow_sagemaker_async.common.rules import INVOKE_ENDPOINT_ASYNC, field_rule

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NAMES = BatchNames.of("0123456789ab", "a" * 200, "score", "s3://b/out/ext", "s3://b/fail/ext")


def item(index: int, deadline: datetime = T0 + timedelta(hours=1), **kwargs: object) -> PendingItem:
    return PendingItem(
        index=index,
        inference_id=NAMES.inference_id(index),
        input_location=None,
        output_location=NAMES.output_location(index),
        failure_location=None,
        submitted_at=T0.isoformat(),
        deadline=deadline.isoformat(),
        **kwargs,  # type: ignore[arg-type]
    )


def test_the_batch_tag_is_the_same_for_every_try_and_differs_between_task_instances() -> None:
    assert batch_tag("d", "t", "r") == batch_tag("d", "t", "r")
    assert len({batch_tag("d", "t", "r"), batch_tag("d", "t", "r2"), batch_tag("d", "t", "r", 0)}) == 3


def test_item_names_keep_the_service_models_rules_at_the_largest_index() -> None:
    filename, inference_id = NAMES.filename(9_999_999), NAMES.inference_id(9_999_999)

    for parameter, value in (("filename", filename), ("inference_id", inference_id)):
        rule = field_rule(INVOKE_ENDPOINT_ASYNC, parameter)
        assert rule.length_ok(value)
        assert rule.matches(value)


def test_a_block_prefix_lists_exactly_its_thousand_items() -> None:
    prefix = NAMES.block_prefix("s3://b/out/ext", 12)

    assert NAMES.output_location(12_000).startswith(prefix)
    assert NAMES.output_location(12_999).startswith(prefix)
    assert not NAMES.output_location(11_999).startswith(prefix)
    assert not NAMES.output_location(13_000).startswith(prefix)
    assert blocks([1, 999, 1000, 25_000]) == [0, 1, 25]


def test_index_of_reads_output_and_failure_keys_and_nothing_else() -> None:
    assert NAMES.index_of("s3://b/out/ext/0123456789ab-0000042.out") == 42
    assert NAMES.index_of("s3://b/fail/ext/0123456789ab-0000042.out-error.out") == 42
    assert NAMES.index_of("s3://b/out/ext/0123456789ab.batch/manifest.jsonl") is None
    assert NAMES.index_of("s3://b/out/ext/ffffffffffff-0000042.out") is None


def test_a_failure_key_outside_the_listed_prefix_is_checked_by_head() -> None:
    assert NAMES.failure_follows_filename(7, "s3://b/fail/ext/0123456789ab-0000007.out-error.out")
    assert not NAMES.failure_follows_filename(7, "s3://b/fail/ext/5b2f-uuid-error.out")
    assert NAMES.failure_follows_filename(7, None)


def test_reconcile_ends_found_items_and_those_past_their_deadline_only() -> None:
    pending = [item(1), item(2), item(3, deadline=T0 - timedelta(seconds=1)), item(4)]
    found: dict[int, Found] = {}
    merge_found(found, 1, Found("Failed", "s3://b/fail/1", None))
    merge_found(found, 1, Found("Completed", "s3://b/out/1", None))  # an output wins over a failure
    merge_found(found, 2, Found("Failed", "s3://b/fail/2", None))
    merge_found(found, None, Found("Completed", "s3://b/out/x", None))  # a key naming no item

    ended, still = reconcile(pending, found, T0)

    assert [(i.index, f.status if f else None) for i, f in ended] == [(1, "Completed"), (2, "Failed"), (3, None)]
    assert [i.index for i in still] == [4]


def test_the_state_round_trips_and_knows_when_the_batch_is_done() -> None:
    state = BatchState(
        tag="t", endpoint_name="e", total=3, output_dir="s3://b/o", failure_dir=None, started_at=T0.isoformat()
    )
    state.pending = [item(0, head_failure=True), item(1, deadline=T0)]
    state.next_index = 3

    again = BatchState.from_json(state.to_json())

    assert again == state
    assert again.earliest_deadline() == T0.isoformat()
    assert not again.done
    again.pending = []
    assert again.done
    assert low_water_mark(1000) == 250


def test_a_clear_after_success_gets_a_tag_of_its_own_and_the_first_batch_keeps_the_tag_it_always_had() -> None:
    assert batch_tag("d", "t", "r") == batch_tag("d", "t", "r", -1, 1) == "3d1d2d83d1a5"  # as before generations
    assert len({batch_tag("d", "t", "r", -1, generation) for generation in (1, 2, 3)}) == 3
    state = BatchState(tag="t", endpoint_name="e", total=1, output_dir="s3://b/o", failure_dir=None, started_at="x")
    old = json.loads(state.to_json())
    del old["generation"], old["succeeded_try"]  # a state.json written before the two fields existed
    assert BatchState.from_json(json.dumps(old)) == state


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (["s3://b/k"], ["s3://b/k"]),
        ('["s3://b/k"]', ["s3://b/k"]),
        (str(["s3://b/it's", "s3://b/k"]), ["s3://b/it's", "s3://b/k"]),  # Airflow's non-native rendering
        (str(("s3://b/k",)), ["s3://b/k"]),
        (" ['s3://b/k']\n", ["s3://b/k"]),
    ],
)
def test_a_list_or_its_json_or_python_text_is_read_as_the_list(value: object, expected: list[str]) -> None:
    assert _as_list(value, "input_locations") == expected


@pytest.mark.parametrize("value", ["__import__('os').system('true')", "s3://b/k", "{'a': 1}", "'s3://b/k'", "", 3])
def test_anything_else_is_refused_never_evaluated(value: object) -> None:
    with pytest.raises(SageMakerAsyncParameterError, match="render_template_as_native_obj=True") as info:
        _as_list(value, "input_locations")

    assert info.value.parameter == "input_locations"
    assert type(value).__name__ in str(info.value)


@pytest.mark.parametrize(("value", "ok"), [(1, True), (8, True), (4.0, True), (0, False), (0.5, False), (-2, False)])
def test_counts_of_items_and_threads_are_whole_numbers_from_1(value: object, ok: bool) -> None:
    if ok:
        assert _positive_int(value, "max_in_flight", "items", example=1000) == value
        return
    with pytest.raises(SageMakerAsyncParameterError, match=r"max_in_flight=.* whole number of items, 1 or more"):
        _positive_int(value, "max_in_flight", "items", example=1000)


def test_a_check_lists_each_run_of_pending_blocks_once_from_its_lowest_pending_item() -> None:
    assert pending_runs([7, 5, 1500, 2999, 5000]) == [(5, 2999), (5000, 5000)]
    listings = list_requests(NAMES, [7, 5, 1500, 2999, 5000])
    assert [(x.status, x.first, x.last, x.max_keys) for x in listings] == [
        ("Completed", 5, 2999, 1000),
        ("Failed", 5, 2999, 1000),
        ("Completed", 5000, 5000, 1),
        ("Failed", 5000, 5000, 1),
    ]
    run = listings[0]
    assert run.prefix == "s3://b/out/ext/0123456789ab-000"  # what items 5 and 2999 share
    assert run.start_after == "s3://b/out/ext/0123456789ab-0000005"
    # StartAfter skips every key of a lower item and keeps every key of the lowest pending one
    assert NAMES.output_location(4) < run.start_after < NAMES.output_location(5)
    assert run.start_after < "s3://b/out/ext/0123456789ab-0000005.out-error.out"
    assert run.read_on(NAMES, NAMES.output_location(2999))
    assert not run.read_on(NAMES, NAMES.output_location(3000))
    # 100,000 items in flight and nothing ended yet: one LIST per directory, not one per block
    assert len(list_requests(NAMES, range(100_000))) == 2
