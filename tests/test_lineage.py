"""
OpenLineage: each operator names its S3 inputs and outputs as the OpenLineage provider names S3 datasets
(namespace ``s3://bucket``, name the key or prefix) and the endpoint in the ``sagemakerEndpoint`` run facet;
a batch stays at a few prefix datasets whatever its size. The run under ``airflow dags test`` with a capturing
transport is in ``tests/test_airflow_ecosystem.py``; the package without the provider in ``.ci/package-check``.
"""

from __future__ import annotations

from typing import Any

import pytest

from airflow_sagemaker_async import (
    SageMakerInvokeEndpointAsyncBatchOperator,
    SageMakerInvokeEndpointAsyncOperator,
    SageMakerInvokeEndpointOperator,
    SageMakerInvokeEndpointWithResponseStreamOperator,
)
from airflow_sagemaker_async.common.lineage import ENDPOINT_FACET, s3_dataset


def names(datasets: list[Any]) -> list[tuple[str, str]]:
    return [(dataset.namespace, dataset.name) for dataset in datasets]


def outcome(status: str, **overrides: Any) -> dict[str, Any]:
    return {
        "inference_id": "inf-1",
        "endpoint_name": "iris",
        "status": status,
        "output_location": "s3://out/iris/output/inf-1.out",
        "failure_location": "s3://out/iris/failure/inf-1-error.out",
        **overrides,
    }


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("s3://bucket/dir/key.csv", ("s3://bucket", "dir/key.csv")),
        ("s3://bucket/dir/", ("s3://bucket", "dir")),
        ("s3://bucket", ("s3://bucket", "/")),
        ("https://bucket.s3.us-east-1.amazonaws.com/a/b.json", ("s3://bucket", "a/b.json")),
        ("/tmp/answer.txt", ("file", "/tmp/answer.txt")),
    ],
)
def test_datasets_follow_the_openlineage_naming_of_s3_and_local_files(location: str, expected: tuple[str, str]) -> None:
    dataset = s3_dataset(location)

    assert (dataset.namespace, dataset.name) == expected


def test_async_operator_reads_its_input_location_and_names_the_output_object_and_the_endpoint() -> None:
    op = SageMakerInvokeEndpointAsyncOperator(task_id="t", endpoint_name="iris", input_location="s3://in/rows.csv")
    op.last_outcome = outcome("Completed")  # type: ignore[assignment]

    lineage = op.get_openlineage_facets_on_complete(None)

    assert names(lineage.inputs) == [("s3://in", "rows.csv")]
    assert names(lineage.outputs) == [("s3://out", "iris/output/inf-1.out")]
    facet = lineage.run_facets[ENDPOINT_FACET]
    assert (facet.endpointName, facet.operation) == ("iris", "InvokeEndpointAsync")
    assert facet.details == {"inferenceId": "inf-1", "status": "Completed"}


def test_async_operator_failure_names_the_failure_object_that_sagemaker_wrote() -> None:
    op = SageMakerInvokeEndpointAsyncOperator(task_id="t", endpoint_name="iris", input_location="s3://in/rows.csv")
    op.last_outcome = outcome("Failed")  # type: ignore[assignment]

    lineage = op.get_openlineage_facets_on_failure(None)

    assert names(lineage.outputs) == [("s3://out", "iris/failure/inf-1-error.out")]


def test_async_operator_names_no_output_after_a_timeout_and_no_input_for_inline_data() -> None:
    op = SageMakerInvokeEndpointAsyncOperator(task_id="t", endpoint_name="iris", input_data={"instances": [[1, 2]]})
    op.last_outcome = outcome("TimedOut")  # type: ignore[assignment]

    lineage = op.get_openlineage_facets_on_failure(None)

    assert (lineage.inputs, lineage.outputs) == ([], [])
    assert lineage.run_facets[ENDPOINT_FACET].details["status"] == "TimedOut"


def test_async_operator_names_the_object_large_input_data_was_uploaded_to() -> None:
    op = SageMakerInvokeEndpointAsyncOperator(
        task_id="t", endpoint_name="iris", input_data="x" * 200_000, input_s3_prefix="s3://in/uploads"
    )
    op.last_outcome = outcome("Completed")  # type: ignore[assignment]

    lineage = op.get_openlineage_facets_on_complete(None)

    assert names(lineage.inputs) == [("s3://in", "uploads/inf-1/input")]


def test_realtime_operator_names_input_and_output_objects_and_drops_the_output_on_failure() -> None:
    op = SageMakerInvokeEndpointOperator(
        task_id="t", endpoint_name="rt", input_location="s3://in/row.json", output_location="s3://out/answer.json"
    )

    complete = op.get_openlineage_facets_on_complete(None)
    failure = op.get_openlineage_facets_on_failure(None)

    assert names(complete.inputs) == [("s3://in", "row.json")]
    assert names(complete.outputs) == [("s3://out", "answer.json")]
    assert complete.run_facets[ENDPOINT_FACET].operation == "InvokeEndpoint"
    assert failure.outputs == []


def test_streaming_operator_names_its_output_file_even_on_failure() -> None:
    op = SageMakerInvokeEndpointWithResponseStreamOperator(
        task_id="t", endpoint_name="text", input_data="hello", output_file="/tmp/stream.txt"
    )

    lineage = op.get_openlineage_facets_on_failure(None)

    assert lineage.inputs == []
    assert names(lineage.outputs) == [("file", "/tmp/stream.txt")]
    assert lineage.run_facets[ENDPOINT_FACET].operation == "InvokeEndpointWithResponseStream"


def test_batch_of_any_size_is_a_few_prefix_datasets() -> None:
    locations = [f"s3://in/day=1/{i}.csv" for i in range(5000)] + ["s3://in/day=2/0.csv"]
    op = SageMakerInvokeEndpointAsyncBatchOperator(task_id="t", endpoint_name="iris", input_locations=locations)
    op.last_summary = {  # type: ignore[assignment]
        "batch_tag": "tag-1",
        "endpoint_name": "iris",
        "total": 5001,
        "counts": {"Completed": 5000, "Failed": 1, "TimedOut": 0},
        "manifest_location": "s3://out/iris/output/airflow-batch/tag-1.batch/manifest.jsonl",
        "output_prefix": "s3://out/iris/output/airflow-batch/tag-1",
        "failure_prefix": "s3://out/iris/failure/airflow-batch/tag-1",
    }

    lineage = op.get_openlineage_facets_on_complete(None)

    assert names(lineage.inputs) == [("s3://in", "day=1"), ("s3://in", "day=2")]
    assert names(lineage.outputs) == [
        ("s3://out", "iris/output/airflow-batch/tag-1"),
        ("s3://out", "iris/output/airflow-batch/tag-1.batch/manifest.jsonl"),
        ("s3://out", "iris/failure/airflow-batch/tag-1"),
    ]
    assert lineage.run_facets[ENDPOINT_FACET].details["counts"]["Failed"] == 1
