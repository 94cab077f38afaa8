"""
The plugin in Airflow's ecosystem, under a real ``airflow dags test`` (a subprocess with its own SQLite home,
started by ``airflow_sagemaker_async.local.harness``, against the local backend):

- **OpenLineage**: with the OpenLineage provider installed and a file transport (``AIRFLOW__OPENLINEAGE__
  TRANSPORT``), the example inference DAG's ``predict`` task emits a COMPLETE event whose output is the S3
  object SageMaker wrote (namespace ``s3://bucket``, name the key) and whose run has the ``sagemakerEndpoint``
  facet; a failing task emits a FAIL event with the facet too.
- **Parameter errors are not retried**: a task with ``retries=3`` whose rendered parameter breaks a rule fails
  after one attempt, while a plain error in the same run is retried.

The last captured COMPLETE event is kept at ``<Airflow home>/openlineage-sample.json`` for the docs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from airflow_sagemaker_async.local.harness import MetadataReader, dags_test, migrate_db
from tests.e2e.airflow_cluster import EXAMPLES_DIR, examples_environment

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_sagemaker_async.local.backend import LocalEndpoint, LocalSageMakerAsyncBackend

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:GitWildMatchPattern:DeprecationWarning")]

INFERENCE_DAG = "example_sagemaker_async_inference"


@pytest.fixture(scope="module")
def airflow_env(
    tmp_path_factory: pytest.TempPathFactory,
    sagemaker_async_backend: LocalSageMakerAsyncBackend,
    sagemaker_async_iris_endpoint: LocalEndpoint,
) -> dict[str, str]:
    """A migrated Airflow home: the inference example and the parameter-error DAG; OpenLineage to a file."""
    home = tmp_path_factory.mktemp("ecosystem-airflow")
    dags = home / "dags"
    (dags / "data").mkdir(parents=True)
    shutil.copy(EXAMPLES_DIR / f"{INFERENCE_DAG}.py", dags)
    shutil.copy(EXAMPLES_DIR / "data" / "iris_sample.csv", dags / "data")
    shutil.copy(Path(__file__).parent / "ecosystem_dags" / "ecosystem_parameter_error.py", dags)
    transport = {"type": "file", "log_file_path": str(home / "openlineage.jsonl"), "append": True}
    env = examples_environment(
        home,
        sagemaker_async_backend,
        sagemaker_async_iris_endpoint,
        extra={
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(transport),
            "AIRFLOW__OPENLINEAGE__NAMESPACE": "sagemaker-async-tests",
        },
    )
    migrate_db(env, home / "db-migrate.log", timeout=180)
    return env


@pytest.fixture(scope="module")
def metadata(airflow_env: dict[str, str]) -> Iterator[MetadataReader]:
    with MetadataReader(airflow_env) as reader:
        yield reader


def events(env: dict[str, str], job_suffix: str) -> list[dict[str, Any]]:
    path = Path(env["AIRFLOW_HOME"]) / "openlineage.jsonl"
    found = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    return [event for event in found if event.get("job", {}).get("name", "").endswith(job_suffix)]


def test_example_dag_emits_openlineage_events_with_the_s3_output_and_the_endpoint_facet(
    airflow_env: dict[str, str], metadata: MetadataReader
) -> None:
    log_file = Path(airflow_env["AIRFLOW_HOME"]) / f"{INFERENCE_DAG}.log"
    code = dags_test(airflow_env, INFERENCE_DAG, log_file, timeout=240)
    log = log_file.read_text(errors="replace")
    run = metadata.last_run(INFERENCE_DAG)

    assert code == 0, log[-5000:]
    assert run is not None
    assert run.state == "success", log[-5000:]
    outcome = run.xcom("predict")
    complete = [e for e in events(airflow_env, f"{INFERENCE_DAG}.predict") if e["eventType"] == "COMPLETE"]
    assert complete, log[-5000:]
    event = complete[-1]
    bucket, key = outcome["output_location"].removeprefix("s3://").split("/", 1)
    assert [(d["namespace"], d["name"]) for d in event["outputs"]] == [(f"s3://{bucket}", key)]
    assert event["inputs"] == []  # input_data is sent inline: no dataset
    facet = event["run"]["facets"]["sagemakerEndpoint"]
    assert facet["endpointName"] == "iris-endpoint"
    assert facet["operation"] == "InvokeEndpointAsync"
    assert facet["details"] == {"inferenceId": outcome["inference_id"], "status": "Completed"}
    (Path(airflow_env["AIRFLOW_HOME"]) / "openlineage-sample.json").write_text(json.dumps(event, indent=2))


def test_a_parameter_error_fails_the_task_once_though_it_has_retries(
    airflow_env: dict[str, str], metadata: MetadataReader
) -> None:
    log_file = Path(airflow_env["AIRFLOW_HOME"]) / "ecosystem_parameter_error.log"
    dags_test(airflow_env, "ecosystem_parameter_error", log_file, timeout=240)
    log = log_file.read_text(errors="replace")
    run = metadata.last_run("ecosystem_parameter_error")

    assert run is not None
    assert run.task_states == {("bad_ttl", -1): "failed", ("flaky", -1): "failed"}, log[-5000:]
    assert log.count("SageMakerAsyncParameterError") >= 1
    # The control, a ValueError with retries=2, is retried by airflow dags test: 1 + 2 attempts. The parameter
    # error, with retries=3, is attempted once.
    assert log.count("[DAG TEST] starting task_id=flaky ") == 3, log[-5000:]
    assert log.count("[DAG TEST] starting task_id=bad_ttl ") == 1, log[-5000:]
    fails = [e for e in events(airflow_env, "ecosystem_parameter_error.bad_ttl") if e["eventType"] == "FAIL"]
    starts = [e for e in events(airflow_env, "ecosystem_parameter_error.bad_ttl") if e["eventType"] == "START"]
    assert (len(starts), len(fails)) == (1, 1), log[-5000:]  # one attempt only
    assert fails[0]["run"]["facets"]["sagemakerEndpoint"]["endpointName"] == "iris-endpoint"
