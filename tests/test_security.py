"""
Credentials and sensitive values stay out of logs, XCom, rendered fields and error messages; servers bind
127.0.0.1 only.

A second local backend (its own region, so it can run beside the session's) signs with a long, unique
secret: long enough for Airflow's secrets masker, unique enough to grep for.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import psutil
import pytest

from airflow_sagemaker_async.common.exceptions import SageMakerAsyncInferenceError, SageMakerAsyncInferenceTimeout
from tests.test_operators import CSV_ROWS, StandInTaskInstance, operator, run

if TYPE_CHECKING:
    from collections.abc import Iterator

SECRET = "s3cr3t-SecurityTest-9f8e7d6c5b4a3210"
ACCESS_KEY = "AKIASECURITYTEST0001"
CUSTOM_ATTRIBUTES = "token=ca-0123456789abcdef"


@pytest.fixture(scope="module")
def secret_backend(sagemaker_async_backend: Any) -> Iterator[Any]:
    from airflow_sagemaker_async.local import LocalSageMakerAsyncBackend

    with LocalSageMakerAsyncBackend(
        region_name="eu-west-2", aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET
    ) as backend:
        backend.create_endpoint("sec-iris")
        yield backend


@pytest.fixture
def secret_connection(secret_backend: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", secret_backend.airflow_connection_env())
    return "aws_default"


@pytest.mark.usefixtures("secret_connection")
def test_credentials_and_custom_attributes_appear_nowhere(capfd: pytest.CaptureFixture[str]) -> None:
    seen: list[str] = []
    params = {"endpoint_name": "sec-iris", "content_type": "text/csv", "custom_attributes": CUSTOM_ATTRIBUTES}

    completed = run(operator(input_data=CSV_ROWS, output_format="json", inference_id="sec-ok", **params))
    seen.append(json.dumps(completed))
    with pytest.raises(SageMakerAsyncInferenceError) as failed:
        run(operator(input_data="1,2\n", inference_id="sec-bad", **params))
    seen += [str(failed.value), json.dumps(failed.value.outcome)]
    slow = {**params, "custom_attributes": "sleep=10"}  # far past max_wait_seconds, even on a loaded machine
    with pytest.raises(SageMakerAsyncInferenceTimeout) as timed_out:
        run(operator(input_data=CSV_ROWS, inference_id="sec-slow", max_wait_seconds=0.3, **slow))
    seen += [str(timed_out.value), json.dumps(timed_out.value.outcome)]
    ti = StandInTaskInstance()
    run(operator(input_data=CSV_ROWS, inference_id="sec-links", **params), ti)
    seen.append(json.dumps(ti.xcom))
    logged = "".join(capfd.readouterr())

    everything = "\n".join([*seen, logged])
    assert "Submitted inference sec-ok" in logged  # the logs were captured
    assert SECRET not in everything
    assert ACCESS_KEY not in everything
    assert CUSTOM_ATTRIBUTES not in "\n".join([*seen, _plugin_lines(logged)])


def _plugin_lines(logged: str) -> str:
    """The lines our plugin logged (the local backend is the model's side: it may see what the model sees)."""
    return "\n".join(line for line in logged.splitlines() if "airflow_sagemaker_async.local" not in line)


def _listening_addresses(process: psutil.Process) -> set[str]:
    sockets = [c for c in process.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    return {c.laddr.ip for c in sockets}


def test_the_local_backend_and_its_containers_listen_on_127_0_0_1_only(
    sagemaker_async_backend: Any, endpoints: Any
) -> None:
    this = psutil.Process()
    containers = [psutil.Process(pid) for name in endpoints for pid in sagemaker_async_backend.container_pids(name)]

    ours = _listening_addresses(this)
    theirs = set().union(*(_listening_addresses(p) for p in containers))

    assert containers
    assert ours == {"127.0.0.1"}
    assert theirs == {"127.0.0.1"}
