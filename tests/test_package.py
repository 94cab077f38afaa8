"""The package's public surface: exact exports, one version, provider registration, light imports."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import airflow_sagemaker_async

PACKAGE_DIR = Path(airflow_sagemaker_async.__file__).parent
EXPECTED = {
    "AsyncInferenceSubmission",
    "SageMakerAsyncBatchFailed",
    "SageMakerAsyncBatchInferenceTrigger",
    "SageMakerInvokeEndpointAsyncBatchOperator",
    "SageMakerAsyncError",
    "SageMakerAsyncInferenceError",
    "SageMakerAsyncInferenceSensor",
    "SageMakerAsyncInferenceTimeout",
    "SageMakerAsyncInferenceTrigger",
    "SageMakerAsyncOutputDecodeError",
    "SageMakerAsyncOutputError",
    "SageMakerAsyncOutputMissing",
    "SageMakerAsyncOutputTooLarge",
    "SageMakerAsyncParameterError",
    "SageMakerEndpointReadTimeout",
    "SageMakerInvokeEndpointAsyncOperator",
    "SageMakerInvokeEndpointOperator",
    "SageMakerInvokeEndpointWithResponseStreamOperator",
    "SageMakerModelError",
    "SageMakerResponseStreamError",
    "SageMakerRuntimeHook",
    "__version__",
}


def test_all_is_exactly_the_public_names_and_each_resolves() -> None:
    assert set(airflow_sagemaker_async.__all__) == EXPECTED
    assert len(airflow_sagemaker_async.__all__) == len(EXPECTED)
    for name in EXPECTED:
        assert getattr(airflow_sagemaker_async, name) is not None


def test_version_has_one_source() -> None:
    assert importlib.metadata.version("airflow-sagemaker-async") == airflow_sagemaker_async.__version__


def test_importing_the_package_or_its_local_backend_does_not_import_airflow() -> None:
    code = (
        "import sys, airflow_sagemaker_async, airflow_sagemaker_async.local; "
        "print(sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert result.stdout.strip() == "[]"


# The import rules between subpackages are import-linter contracts (pyproject.toml, run by make lint).
@pytest.mark.parametrize("module", ["inference/triggers.py", "batch/triggers.py", "push/receiver.py"])
def test_trigger_modules_have_no_blocking_calls(module: str) -> None:
    source = (PACKAGE_DIR / module).read_text()
    # boto3 and requests are kept out by an import-linter contract; these are the blocking calls.
    assert "time.sleep" not in source
    assert "open(" not in source
    assert ".conn." not in source  # the sync boto3 client of a hook


def test_airflow_lists_the_provider() -> None:
    env = {**os.environ, "AIRFLOW__LOGGING__LOGGING_LEVEL": "ERROR"}
    result = subprocess.run(
        [sys.executable, "-m", "airflow", "providers", "list", "--output", "json"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )

    start = result.stdout.index("[")
    providers = {p["package_name"]: p for p in json.loads(result.stdout[start:])}
    assert providers["airflow-sagemaker-async"]["version"] == airflow_sagemaker_async.__version__


# -- Supported versions: pyproject, the CI sets and the docs' table agree ---------------------------------

ROOT = Path(__file__).resolve().parents[1]
#: The page with the supported versions table (the install guide).
VERSIONS_PAGE = ROOT / "docs" / "how-to" / "install.md"
# Column of the table in VERSIONS_PAGE -> distribution name.
_COLUMNS = {
    "Airflow": "apache-airflow",
    "task SDK": "apache-airflow-task-sdk",
    "amazon": "apache-airflow-providers-amazon",
    "common-compat": "apache-airflow-providers-common-compat",
    "botocore": "botocore",
    "aiobotocore": "aiobotocore",
}
# Row of that table -> the constraint files CI installs that set with.
_SETS = {
    "newest": ["constraints.txt"],
    "Python 3.13": ["constraints.txt"],
    "oldest": ["constraints-oldest.txt"],
    "MWAA 3.3.1": [
        "platforms/mwaa-3.3.1/airflow_constraints.txt",
        "platforms/mwaa-3.3.1/mwaa_essential_constraints.txt",
    ],
    "MWAA 3.2.1": [
        "platforms/mwaa-3.2.1/airflow_constraints.txt",
        "platforms/mwaa-3.2.1/mwaa_essential_constraints.txt",
    ],
}


def _pins(files: list[str]) -> dict[str, str]:
    pins: dict[str, str] = {}
    for file in files:
        for line in (ROOT / file).read_text().splitlines():
            if "==" in line and not line.lstrip().startswith("#"):
                name, version = line.split("==", 1)
                pins[name.strip().lower().replace("_", "-")] = version.split(";")[0].strip()
    return pins


def _versions_table() -> dict[str, dict[str, str]]:
    lines = VERSIONS_PAGE.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| set (CI target) |"))
    header = [cell.strip() for cell in lines[start].strip("|").split("|")]
    rows: dict[str, dict[str, str]] = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[cells[0].split(" (")[0]] = dict(zip(header, cells, strict=True))
    return rows


def _lower_bounds() -> dict[str, str]:
    metadata = importlib.metadata.metadata("airflow-sagemaker-async")
    bounds = {}
    for requirement in metadata.get_all("Requires-Dist") or []:
        if "extra ==" in requirement or ">=" not in requirement:
            continue
        name = requirement.split(">=")[0].split("[")[0].strip().lower()
        bounds[name] = requirement.split(">=")[1].split(",")[0].split(";")[0].strip()
    return bounds


def test_the_documented_version_table_matches_the_pins_ci_installs() -> None:
    table = _versions_table()
    assert set(table) == set(_SETS)
    for row, files in _SETS.items():
        pins = _pins(files)
        for column, distribution in _COLUMNS.items():
            if distribution in pins:  # the MWAA files leave the task SDK to apache-airflow's own pin
                assert table[row][column] == pins[distribution], f"{VERSIONS_PAGE.name} row {row!r}, column {column!r}"


def test_every_lower_bound_is_a_version_ci_installs() -> None:
    bounds = _lower_bounds()
    installed = {distribution: set() for distribution in _COLUMNS.values()}
    for row in _versions_table().values():
        for column, distribution in _COLUMNS.items():
            installed[distribution].add(row[column])
    for distribution in _COLUMNS.values():
        assert distribution in bounds, f"pyproject declares no lower bound for {distribution}"
        assert bounds[distribution] in installed[distribution], f"{distribution}>={bounds[distribution]} untested"


def test_the_declared_pythons_are_the_tested_ones() -> None:
    metadata = importlib.metadata.metadata("airflow-sagemaker-async")
    classifiers = {c.rsplit(" :: ", 1)[1] for c in metadata.get_all("Classifier") or [] if "Python :: 3." in c}
    assert classifiers == {"3.11", "3.12", "3.13"}
    assert metadata["Requires-Python"].replace(" ", "") in {">=3.11,<3.14", "<3.14,>=3.11"}
    assert {
        row["Python"].rsplit(".", 1)[0] if row["Python"].count(".") == 2 else row["Python"]
        for row in _versions_table().values()
    } == classifiers
