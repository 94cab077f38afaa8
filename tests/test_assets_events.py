"""
Outlet asset events of the operators: S3 assets only (checked at parse time), which assets cover what a task
wrote, the ``extra`` each gets through Airflow's own outlet-event accessors, and OpenLineage naming them as this
package's lineage names the same prefix. Under a real Airflow: ``tests/e2e/test_assets.py``.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from airflow.providers.amazon.aws.assets.s3 import convert_asset_to_openlineage
from airflow.sdk import Asset, AssetAlias
from airflow.sdk.execution_time.context import OutletEventAccessors

from airflow_sagemaker_async.assets.events import (
    batch_extra,
    check_output_assets,
    covers,
    record_output_events,
    sagemaker_output_asset,
)
from airflow_sagemaker_async.common.exceptions import SageMakerAsyncParameterError
from airflow_sagemaker_async.common.lineage import s3_dataset

SUMMARY: dict[str, Any] = {
    "batch_tag": "7f3a",
    "endpoint_name": "iris-endpoint",
    "total": 4,
    "counts": {"Completed": 3, "Failed": 1, "TimedOut": 0},
    "manifest_location": "s3://out/iris/airflow-batch/7f3a.batch/manifest.jsonl",
    "output_prefix": "s3://out/iris/airflow-batch/7f3a",
    "failure_prefix": "s3://out/iris-failures/airflow-batch/7f3a",
    "invocations": 4,
    "resumed_items": 0,
    "deferrals": 1,
    "started_at": "2026-12-05T10:00:00+00:00",
    "ended_at": "2026-12-05T10:01:00+00:00",
    "duration_seconds": 60.0,
}


@pytest.mark.parametrize(
    "outlet",
    [Asset("file:///tmp/scores.csv"), Asset(name="scores"), Asset("gs://bucket/out")],
    ids=["file", "name-only", "gcs"],
)
def test_an_outlet_asset_that_is_not_s3_is_a_parameter_error_at_parse_time(outlet: Asset) -> None:
    with pytest.raises(SageMakerAsyncParameterError, match="is not an S3 URI") as caught:
        check_output_assets([Asset("s3://out/iris"), AssetAlias("scores"), outlet])

    assert caught.value.parameter == "outlets[2]"


def test_output_asset_helper_normalises_and_refuses_other_schemes() -> None:
    asset = sagemaker_output_asset("https://out.s3.us-east-1.amazonaws.com/iris/")

    assert (asset.uri, asset.name) == ("s3://out/iris", "s3://out/iris")
    with pytest.raises(SageMakerAsyncParameterError, match="not an S3 URI"):
        sagemaker_output_asset("out/iris")


def test_openlineage_names_the_asset_as_the_lineage_names_the_batch_output_prefix() -> None:
    asset = sagemaker_output_asset(SUMMARY["output_prefix"])

    from_asset = convert_asset_to_openlineage(asset, None)
    from_lineage = s3_dataset(SUMMARY["output_prefix"])

    assert (from_asset.namespace, from_asset.name) == (from_lineage.namespace, from_lineage.name)
    assert (from_asset.namespace, from_asset.name) == ("s3://out", "iris/airflow-batch/7f3a")


@pytest.mark.parametrize(
    ("asset", "location", "expected"),
    [
        ("s3://out/iris", "s3://out/iris/airflow-batch/7f3a", True),
        ("s3://out/iris/", "s3://out/iris/x.out", True),
        ("s3://out/iris/x.out", "s3://out/iris/x.out", True),
        ("s3://out/iris", "s3://out/iris-failures/x-error.out", False),
        ("s3://out/iris", "https://out.s3.us-east-1.amazonaws.com/iris/x.out", True),
        ("s3://other/iris", "s3://out/iris/x.out", False),
    ],
)
def test_an_asset_covers_a_location_it_names_or_a_slash_bounded_prefix_of(
    asset: str, location: str, expected: bool
) -> None:
    assert covers(asset, location) is expected


def test_batch_extra_goes_to_the_covering_s3_outlets_only(caplog: pytest.LogCaptureFixture) -> None:
    covering, elsewhere, alias = Asset("s3://out/iris"), Asset("s3://out/other"), AssetAlias("scores")
    events = OutletEventAccessors()
    context = {"outlet_events": events}
    log = logging.getLogger("test")

    with caplog.at_level(logging.WARNING, logger="test"):
        filled = record_output_events(
            context,
            [covering, elsewhere, alias],
            batch_extra(SUMMARY),  # type: ignore[arg-type]
            [SUMMARY["output_prefix"], SUMMARY["failure_prefix"], SUMMARY["manifest_location"]],
            log,
        )

    assert filled == ["s3://out/iris"]
    assert events[covering].extra["counts"] == {"Completed": 3, "Failed": 1, "TimedOut": 0}
    assert events[covering].extra["manifest_location"] == SUMMARY["manifest_location"]
    assert events[elsewhere].extra == {}
    assert "Outlet asset s3://out/other does not cover" in caplog.text


def test_the_operators_refuse_a_non_s3_outlet_when_the_dag_is_parsed() -> None:
    from airflow_sagemaker_async import SageMakerInvokeEndpointAsyncBatchOperator, SageMakerInvokeEndpointAsyncOperator

    with pytest.raises(SageMakerAsyncParameterError, match="is not an S3 URI") as single:
        SageMakerInvokeEndpointAsyncOperator(
            task_id="predict", endpoint_name="iris", input_location="s3://in/x.csv", outlets=[Asset("file:///x")]
        )
    with pytest.raises(SageMakerAsyncParameterError, match="is not an S3 URI") as batch:
        SageMakerInvokeEndpointAsyncBatchOperator(
            task_id="score", endpoint_name="iris", input_prefix="s3://in/", outlets=[Asset("gs://b/x")]
        )

    assert (single.value.parameter, batch.value.parameter) == ("outlets[0]", "outlets[0]")


def test_post_execute_of_the_operators_fills_the_covering_outlet_events() -> None:
    from airflow_sagemaker_async import SageMakerInvokeEndpointAsyncBatchOperator, SageMakerInvokeEndpointAsyncOperator

    scores, results = Asset("s3://out/iris"), Asset("s3://out/iris/output")
    batch = SageMakerInvokeEndpointAsyncBatchOperator(
        task_id="score", endpoint_name="iris", input_prefix="s3://in/", outlets=[scores]
    )
    single = SageMakerInvokeEndpointAsyncOperator(
        task_id="predict", endpoint_name="iris", input_location="s3://in/x.csv", outlets=[results]
    )
    batch.last_summary = SUMMARY  # type: ignore[assignment]
    single.last_outcome = {  # type: ignore[assignment]
        "inference_id": "inf-1",
        "endpoint_name": "iris",
        "status": "Completed",
        "output_location": "s3://out/iris/output/inf-1.out",
        "failure_location": "s3://out/iris/failure/inf-1-error.out",
        "submitted_at": "2026-12-05T10:00:00+00:00",
        "completed_at": "2026-12-05T10:00:02+00:00",
        "detected_at": "2026-12-05T10:00:03+00:00",
        "output": {"predictions": []},
    }
    events = OutletEventAccessors()

    batch.post_execute({"outlet_events": events})  # type: ignore[arg-type]
    single.post_execute({"outlet_events": events})  # type: ignore[arg-type]

    assert events[scores].extra["counts"] == SUMMARY["counts"]
    assert events[results].extra == {
        "inference_id": "inf-1",
        "status": "Completed",
        "endpoint_name": "iris",
        "output_location": "s3://out/iris/output/inf-1.out",
        "failure_location": "s3://out/iris/failure/inf-1-error.out",
        "submitted_at": "2026-12-05T10:00:00+00:00",
        "completed_at": "2026-12-05T10:00:02+00:00",
    }
