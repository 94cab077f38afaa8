"""
Deployment settings: ``deferrable`` follows an explicitly configured ``[operators] default_deferrable``, and
stays True when the deployment says nothing (Airflow's own default, False, is written into every new
airflow.cfg, so that value there says nothing).
"""

from __future__ import annotations

from typing import Any

import pytest

from airflow_sagemaker_async import (
    SageMakerAsyncInferenceSensor,
    SageMakerInvokeEndpointAsyncBatchOperator,
    SageMakerInvokeEndpointAsyncOperator,
)
from airflow_sagemaker_async.inference.waiting import default_deferrable

VARIABLE = "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE"


def build_all(**kwargs: Any) -> list[Any]:
    return [
        SageMakerInvokeEndpointAsyncOperator(task_id="op", endpoint_name="e", input_data="x", **kwargs),
        SageMakerAsyncInferenceSensor(task_id="sensor", output_location="s3://b/k.out", **kwargs),
        SageMakerInvokeEndpointAsyncBatchOperator(
            task_id="batch", endpoint_name="e", input_prefix="s3://b/p", **kwargs
        ),
    ]


@pytest.fixture
def config_file_value() -> Any:
    """Set ``[operators] default_deferrable`` as airflow.cfg would (``conf.set``), and remove it afterwards."""
    from airflow.providers.common.compat.sdk import conf

    def set_value(value: str) -> None:
        conf.set("operators", "default_deferrable", value)

    yield set_value
    conf.remove_option("operators", "default_deferrable", remove_default=False)


def test_deferrable_is_true_when_the_deployment_says_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(VARIABLE, raising=False)

    assert default_deferrable() is True
    assert [task.deferrable for task in build_all()] == [True, True, True]


@pytest.mark.parametrize(("value", "expected"), [("false", False), ("False", False), ("true", True)])
def test_an_explicit_environment_variable_sets_every_operators_default(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: bool
) -> None:
    monkeypatch.setenv(VARIABLE, value)

    assert default_deferrable() is expected
    assert [task.deferrable for task in build_all()] == [expected] * 3


def test_the_deferrable_argument_wins_over_the_deployment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(VARIABLE, "false")

    assert [task.deferrable for task in build_all(deferrable=True)] == [True, True, True]


def test_airflows_generated_default_in_airflow_cfg_says_nothing(
    monkeypatch: pytest.MonkeyPatch, config_file_value: Any
) -> None:
    monkeypatch.delenv(VARIABLE, raising=False)
    config_file_value("false")  # what Airflow writes into every airflow.cfg it generates

    assert default_deferrable() is True


def test_a_value_in_airflow_cfg_other_than_airflows_default_is_honoured(
    monkeypatch: pytest.MonkeyPatch, config_file_value: Any
) -> None:
    import airflow_sagemaker_async.inference.waiting as waiting

    monkeypatch.delenv(VARIABLE, raising=False)
    monkeypatch.setattr(waiting, "_airflow_default_deferrable", lambda: True)  # an Airflow whose default is True
    config_file_value("false")

    assert default_deferrable() is False
    assert [task.deferrable for task in build_all()] == [False, False, False]


def test_airflows_own_default_is_false_so_only_the_environment_can_turn_deferral_off() -> None:
    from airflow_sagemaker_async.inference.waiting import _airflow_default_deferrable

    assert _airflow_default_deferrable() is False
