"""
Cold starts explained, against the local backend's scale-to-zero emulation (real moto Application Auto Scaling,
real endpoints held at 0 instances): the operator's and the batch's ``endpoint_instances_at_submit``, the one
cold-start log line with or without the scale-from-zero advice, and a refused DescribeEndpoint /
DescribeScalingPolicies that only skips the check.

The refusals are answered by the recording proxy in front of moto (``AccessDeniedException``, HTTP 400, the
shape SageMaker and Application Auto Scaling answer a call IAM denies): moto's IAM enforcement is process-wide and
would deny every other test's calls.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from airflow_sagemaker_async.common import capacity
from airflow_sagemaker_async.common.capacity import AUTOSCALE_DOC
from airflow_sagemaker_async.common.exceptions import SageMakerAsyncInferenceTimeout
from tests.local.test_scale_to_zero import current_instances, scaled_to_zero_endpoint, wait_until
from tests.proxy import Fault, Proxy
from tests.test_batch import GOOD_ROW, batch, run_batch
from tests.test_operators import CSV_ROWS, operator, run

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.usefixtures("endpoints", "backend_connection")

LOGGER = "tests.cold_starts"
INPUTS = "s3://sagemaker-async-local/cold-start-inputs"


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    capacity.clear_cache()
    yield
    capacity.clear_cache()


@pytest.fixture(scope="module")
def cold_endpoints(sagemaker_async_backend: Any) -> Iterator[dict[str, str]]:
    """``cold-policy`` (a step-scaling policy) and ``cold-nopolicy``: MinCapacity 0, both scaled in to 0."""
    names = {
        "policy": scaled_to_zero_endpoint(sagemaker_async_backend, "cold-policy", step_policy=True),
        "nopolicy": scaled_to_zero_endpoint(sagemaker_async_backend, "cold-nopolicy", step_policy=False),
    }
    yield names
    for name in names.values():
        sagemaker_async_backend.delete_endpoint(name)  # a request still queued ends there


def at_zero(backend: Any, name: str) -> str:
    wait_until(lambda: current_instances(backend, name) == 0, what=f"{name} back at 0 instances")
    return name


def cold_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.getMessage().startswith("Cold start")]


def skipped_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == LOGGER and "check (cold starts) skipped" in r.getMessage()
    ]


def logged(op: Any) -> Any:
    """Send the task's log to a standard logger caplog reads (the attribute differs between Airflow 3 releases)."""
    op._log = op._cached_logger = logging.getLogger(LOGGER)
    return op


def access_denied(target: str) -> Fault:
    """Deny the JSON-protocol call ``X-Amz-Target: <target>`` as IAM does."""
    action = target.rsplit(".", maxsplit=1)[-1]
    return Fault(
        match=lambda r: r.headers.get("X-Amz-Target", "").endswith(f".{action}"),
        status=400,
        body=json.dumps(
            {"__type": "AccessDeniedException", "message": f"not authorized to perform: {action}"}
        ).encode(),
        headers={"Content-Type": "application/x-amz-json-1.1"},
        times=None,
    )


def test_at_zero_without_a_scale_from_zero_policy_one_line_says_why_the_request_will_hang(
    sagemaker_async_backend: Any,
    cold_endpoints: dict[str, str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = at_zero(sagemaker_async_backend, cold_endpoints["nopolicy"])
    monkeypatch.setattr(sagemaker_async_backend, "time_scale", 0.01)  # its 60 s TTL lasts 0.6 s in the backend
    op = logged(
        operator(
            endpoint_name=name,
            input_data=CSV_ROWS,
            input_s3_prefix=INPUTS,
            content_type="text/csv",
            request_ttl_seconds=60,
            max_wait_seconds=3,
            deferrable=False,
            inference_id=f"cold-{uuid.uuid4().hex}",  # the default id repeats across this module's tests
        )
    )

    with caplog.at_level(logging.INFO, logger=LOGGER), pytest.raises(SageMakerAsyncInferenceTimeout) as raised:
        run(op)

    assert raised.value.outcome["endpoint_instances_at_submit"] == 0
    (line,) = cold_lines(caplog)
    assert f"endpoint {name} has 0 instances now; the requests queue until it scales up" in line
    assert "NO step-scaling policy" in line
    assert "(60 s)" in line
    assert AUTOSCALE_DOC in line
    assert skipped_lines(caplog) == []
    inference_id = raised.value.outcome["inference_id"]
    wait_until(
        lambda: (
            [r.status.value for r in sagemaker_async_backend.invocations(name) if r.inference_id == inference_id]
            == ["Expired"]
        ),
        what="the request expired in the backend's queue",
    )


def test_at_zero_with_the_policy_the_line_has_no_advice_and_the_outcome_says_zero(
    sagemaker_async_backend: Any, cold_endpoints: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    name = at_zero(sagemaker_async_backend, cold_endpoints["policy"])
    op = logged(operator(endpoint_name=name, input_data=CSV_ROWS, input_s3_prefix=INPUTS, content_type="text/csv"))

    with caplog.at_level(logging.INFO, logger=LOGGER):
        outcome = run(op)  # deferred: the count rides in the trigger's kwargs and event

    assert outcome["status"] == "Completed"
    assert outcome["endpoint_instances_at_submit"] == 0
    (line,) = cold_lines(caplog)
    assert "has a step-scaling policy" in line
    assert "NO step-scaling policy" not in line
    assert AUTOSCALE_DOC not in line


def test_a_batch_at_zero_records_the_count_in_its_summary(
    sagemaker_async_backend: Any, cold_endpoints: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    name = at_zero(sagemaker_async_backend, cold_endpoints["policy"])
    op = logged(batch(name, input_records=[GOOD_ROW] * 3))

    with caplog.at_level(logging.INFO, logger=LOGGER):
        summary = run_batch(op)

    assert summary["counts"]["Completed"] == 3
    assert summary["endpoint_instances_at_submit"] == 0
    assert len(cold_lines(caplog)) == 1


def test_a_warm_endpoint_logs_nothing_and_the_outcome_says_its_count(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=LOGGER):
        outcome = run(logged(operator(input_data=CSV_ROWS, input_s3_prefix=INPUTS, content_type="text/csv")))
        unchecked = run(
            logged(
                operator(
                    input_data=CSV_ROWS, input_s3_prefix=INPUTS, content_type="text/csv", check_endpoint_capacity=False
                )
            )
        )

    assert outcome["endpoint_instances_at_submit"] == 1
    assert unchecked["endpoint_instances_at_submit"] is None
    assert cold_lines(caplog) == []
    assert skipped_lines(caplog) == []


@pytest.fixture
def denying_moto(sagemaker_async_backend: Any, aws_connection: Any) -> Iterator[Proxy]:
    """``aws_default`` reaches moto through a proxy that can deny calls (the runtime directly)."""
    with Proxy(sagemaker_async_backend.endpoint_url) as proxy:
        aws_connection(proxy.url, sagemaker_async_backend.runtime_url)
        yield proxy


def test_describe_endpoint_denied_only_logs_that_the_check_was_skipped(
    denying_moto: Proxy, caplog: pytest.LogCaptureFixture
) -> None:
    denying_moto.add_fault(access_denied("SageMaker.DescribeEndpoint"))

    with caplog.at_level(logging.INFO, logger=LOGGER):
        outcome = run(logged(operator(input_data=CSV_ROWS, input_s3_prefix=INPUTS, content_type="text/csv")))

    assert outcome["status"] == "Completed"
    assert outcome["endpoint_instances_at_submit"] is None
    (line,) = skipped_lines(caplog)
    assert "DescribeEndpoint answered AccessDeniedException" in line
    assert cold_lines(caplog) == []
    assert len(denying_moto.requests("POST")) >= 1


def test_describe_scaling_policies_denied_at_zero_logs_the_cold_start_and_the_skip(
    sagemaker_async_backend: Any,
    cold_endpoints: dict[str, str],
    denying_moto: Proxy,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = at_zero(sagemaker_async_backend, cold_endpoints["nopolicy"])
    monkeypatch.setattr(sagemaker_async_backend, "time_scale", 0.01)  # the request left queued expires in 0.6 s
    denying_moto.add_fault(access_denied("AnyScaleFrontendService.DescribeScalingPolicies"))
    op = logged(
        operator(
            endpoint_name=name,
            input_data=CSV_ROWS,
            input_s3_prefix=INPUTS,
            content_type="text/csv",
            request_ttl_seconds=60,
            wait_for_completion=False,
            inference_id=f"cold-{uuid.uuid4().hex}",
        )
    )

    with caplog.at_level(logging.INFO, logger=LOGGER):
        submission = run(op)

    assert submission["status"] == "InProgress"
    assert submission["endpoint_instances_at_submit"] == 0, "the submission record says it waits for a cold start"
    (line,) = cold_lines(caplog)
    assert "is unknown" in line
    (skipped,) = skipped_lines(caplog)
    assert "DescribeScalingPolicies answered AccessDeniedException" in skipped
