"""
Older botocore: each field it lacks is refused by name (never dropped), and input_data goes through S3.

The older botocore is real botocore reading a real model: the installed ``sagemaker-runtime`` model with the
fields of :data:`~airflow_sagemaker_async.common.rules.FIELDS_ADDED` removed as botocore 1.42.84 (MWAA 3.2.1's pin)
lacks them (no InvokeEndpointAsync ``Body``, ``InputLocation`` required, no ``PrefixAwareId``), put first on
botocore's search path with ``AWS_DATA_PATH`` in a fresh interpreter. CI also runs the fast tests with
botocore 1.42.84 itself (``make test-platforms``, MWAA 3.2.1's set).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import TYPE_CHECKING, Any

import botocore.loaders
import pytest

from airflow_sagemaker_async.common.rules import FIELDS_ADDED, INVOKE_ENDPOINT_ASYNC, field_rules

if TYPE_CHECKING:
    from pathlib import Path

# Runs in the fresh interpreter; prints one JSON object of what it saw.
_PROBE = textwrap.dedent(
    """
    import json
    from airflow_sagemaker_async.common import validation
    from airflow_sagemaker_async.common.exceptions import SageMakerAsyncParameterError
    from airflow_sagemaker_async.local.request_model import parse_invoke_endpoint_async
    from airflow_sagemaker_async.inference.operators import SageMakerInvokeEndpointAsyncOperator
    from airflow_sagemaker_async.realtime.operators import SageMakerInvokeEndpointOperator
    from airflow_sagemaker_async.common.rules import field_rules
    from airflow_sagemaker_async.realtime.streaming import SageMakerInvokeEndpointWithResponseStreamOperator

    seen = {"inline_body": validation.INLINE_BODY, "max_inline": validation.MAX_INLINE_BODY_BYTES}
    seen["unavailable"] = sorted(
        f"{rule.operation}.{rule.name}"
        for operation in ("InvokeEndpointAsync", "InvokeEndpoint", "InvokeEndpointWithResponseStream")
        for rule in field_rules(operation).values()
        if not rule.available
    )

    def refusal(build):
        try:
            build()
        except SageMakerAsyncParameterError as error:
            return {"parameter": error.parameter, "message": str(error)}
        return None

    seen["inline_without_prefix"] = refusal(
        lambda: SageMakerInvokeEndpointAsyncOperator(task_id="a", endpoint_name="iris", input_data={"x": 1})
    )
    seen["inline_with_prefix"] = refusal(
        lambda: SageMakerInvokeEndpointAsyncOperator(
            task_id="b", endpoint_name="iris", input_data={"x": 1}, input_s3_prefix="s3://bucket/in"
        )
    )
    seen["filename"] = refusal(
        lambda: SageMakerInvokeEndpointAsyncOperator(
            task_id="c", endpoint_name="iris", input_location="s3://bucket/in.csv", filename="out.json"
        )
    )
    for name, operator in (
        ("realtime_prefix_aware_id", SageMakerInvokeEndpointOperator),
        ("streaming_prefix_aware_id", SageMakerInvokeEndpointWithResponseStreamOperator),
    ):
        seen[name] = refusal(
            lambda operator=operator: operator(
                task_id="d", endpoint_name="llm", input_data="hi", prefix_aware_id="tenant-1"
            )
        )
    seen["realtime_without_prefix_aware_id"] = refusal(
        lambda: SageMakerInvokeEndpointOperator(task_id="e", endpoint_name="llm", input_data="hi")
    )
    from airflow_sagemaker_async.batch.operators import SageMakerInvokeEndpointAsyncBatchOperator

    batch = SageMakerInvokeEndpointAsyncBatchOperator(task_id="f", endpoint_name="iris", input_records=[{"x": 1}])
    seen["batch_records_without_prefix"] = refusal(lambda: batch._given_inputs(check=True))
    # The local backend follows the service: both request shapes are accepted.
    old = parse_invoke_endpoint_async("iris", {"X-Amzn-SageMaker-InputLocation": "s3://b/k"}, b"")
    new = parse_invoke_endpoint_async("iris", {}, b"5.1,3.5,1.4,0.2")
    seen["backend"] = [old.input_location, new.body.decode()]
    print(json.dumps(seen))
    """
)


def _older_model(directory: Path) -> Path:
    """Write the installed sagemaker-runtime model without the FIELDS_ADDED fields newer than 1.42.84."""
    loader = botocore.loaders.create_loader()
    version = loader.determine_latest_version("sagemaker-runtime", "service-2")
    model = loader.load_service_model("sagemaker-runtime", "service-2", version)
    for (operation, name), (release, _) in FIELDS_ADDED.items():
        if tuple(map(int, release.split("."))) > (1, 42, 84):
            shape = model["shapes"][model["operations"][operation]["input"]["shape"]]
            shape["members"].pop(name, None)
    async_input = model["shapes"][model["operations"][INVOKE_ENDPOINT_ASYNC]["input"]["shape"]]
    async_input["required"] = ["EndpointName", "InputLocation"]
    target = directory / "sagemaker-runtime" / version / "service-2.json"
    target.parent.mkdir(parents=True)
    target.write_text(json.dumps(model))
    return directory


@pytest.fixture(scope="module")
def older_botocore(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    data_path = _older_model(tmp_path_factory.mktemp("botocore-data"))
    env = {**os.environ, "AWS_DATA_PATH": str(data_path)}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=240, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_every_field_newer_than_the_floor_is_known_unavailable(older_botocore: dict[str, Any]) -> None:
    assert older_botocore["unavailable"] == [
        "InvokeEndpoint.PrefixAwareId",
        "InvokeEndpointAsync.Body",
        "InvokeEndpointWithResponseStream.PrefixAwareId",
    ]
    assert older_botocore["inline_body"] is False
    assert older_botocore["max_inline"] == 0


def test_input_data_without_a_body_needs_input_s3_prefix(older_botocore: dict[str, Any]) -> None:
    refusal = older_botocore["inline_without_prefix"]

    assert refusal["parameter"] == "input_s3_prefix"
    assert "botocore >= 1.43.29" in refusal["message"]
    assert "input_s3_prefix='s3://bucket/prefix'" in refusal["message"]
    assert older_botocore["inline_with_prefix"] is None


def test_batch_records_without_a_body_need_input_s3_prefix_and_say_which_botocore(
    older_botocore: dict[str, Any],
) -> None:
    refusal = older_botocore["batch_records_without_prefix"]

    assert refusal["parameter"] == "input_s3_prefix"
    assert refusal["message"].startswith("input_records[0] needs input_s3_prefix with the installed botocore")
    assert "botocore >= 1.43.29" in refusal["message"]
    assert "0 bytes" not in refusal["message"]


def test_fields_the_older_botocore_has_are_still_accepted(older_botocore: dict[str, Any]) -> None:
    assert older_botocore["filename"] is None
    assert older_botocore["realtime_without_prefix_aware_id"] is None


@pytest.mark.parametrize("operator", ["realtime", "streaming"])
def test_a_field_the_botocore_lacks_is_refused_by_name_not_dropped(
    older_botocore: dict[str, Any], operator: str
) -> None:
    refusal = older_botocore[f"{operator}_prefix_aware_id"]

    assert refusal["parameter"] == "prefix_aware_id"
    assert "PrefixAwareId needs botocore >= 1.43.68" in refusal["message"]
    assert "installed botocore is" in refusal["message"]


def test_the_local_backend_accepts_both_request_shapes(older_botocore: dict[str, Any]) -> None:
    assert older_botocore["backend"] == ["s3://b/k", "5.1,3.5,1.4,0.2"]


def test_the_installed_botocore_has_every_field_it_claims() -> None:
    # In the newest pinned set every field of the table is there; each rule then comes from the model itself.
    for (operation, name), (release, documented) in FIELDS_ADDED.items():
        rule = next(r for r in field_rules(operation).values() if r.name == name)
        assert rule.added_in == release
        if rule.available:
            assert (rule.maximum, rule.location) == (documented.get("maximum"), documented["location"])
