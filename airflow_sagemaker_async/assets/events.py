"""
The operators' outlet asset events: which S3 assets cover what a task wrote, and the ``extra`` they carry.

Airflow emits an asset event for each asset in a task's ``outlets`` when the task succeeds; a DAG
scheduled on that asset then runs, and reads the events that started it from ``triggering_asset_events``.
An asset must be declared in ``outlets`` when the DAG is parsed (that is how the scheduler knows whom to
start), while where a SageMaker task writes is known only at run time (the endpoint's ``S3OutputPath``, a
batch's tag). So:

- **Declare** the asset in ``outlets``, an ``s3://bucket/prefix`` URI (the amazon provider's ``s3`` scheme,
  so OpenLineage names it ``namespace s3://bucket, name prefix`` as this package's lineage names the same
  prefix, and the UI shows it as any S3 asset), built by hand or with :func:`sagemaker_output_asset`. Any
  other URI on a SageMaker operator is a parameter error when the DAG is parsed
  (:func:`check_output_assets`).
- **At the end of a successful task**, the operator fills the ``extra`` of each outlet asset that *covers*
  what it wrote (:func:`covers`: the asset's URI is a written location or a ``/``-bounded prefix of one)
  through ``context["outlet_events"][asset].extra``, Airflow's accessor (3.0+):

  - one inference (:func:`inference_extra`): ``inference_id``, ``status``, ``endpoint_name``,
    ``output_location``, ``failure_location``, ``submitted_at``, ``completed_at``;
  - a batch (:func:`batch_extra`): ``batch_tag``, ``endpoint_name``, ``total``, ``counts`` (by status),
    ``manifest_location``, ``output_prefix``, ``failure_prefix``, ``started_at``, ``ended_at``.

  An outlet asset that covers none of the written locations gets Airflow's event with an empty ``extra``
  (logged once as a warning: the asset is probably declared on the wrong prefix).

A failed task emits no event (Airflow's rule): a batch over its failure policy starts nothing downstream.

.. seealso::
    - https://airflow.apache.org/docs/apache-airflow/stable/authoring-and-scheduling/assets.html
    - ``airflow.providers.amazon.aws.assets.s3``
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_sagemaker_async.common.exceptions import SageMakerAsyncParameterError
from airflow_sagemaker_async.common.layout import normalize_s3_uri, split_s3_uri

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from airflow.sdk import Asset

    from airflow_sagemaker_async.common.records import BatchSummary, Outcome

__all__ = [
    "batch_extra",
    "check_output_assets",
    "covers",
    "inference_extra",
    "record_batch_events",
    "record_inference_events",
    "record_output_events",
    "sagemaker_output_asset",
]


def _is_asset(value: Any) -> bool:
    from airflow.sdk import Asset

    return isinstance(value, Asset)


def _s3_uri(uri: str, parameter: str, what: str) -> str:
    """Return ``uri`` as ``s3://bucket/key`` (S3's https forms accepted), else raise naming ``parameter``."""
    try:
        bucket, key = split_s3_uri(normalize_s3_uri(uri))
    except (TypeError, ValueError):
        bucket = key = ""
    if not bucket:
        raise SageMakerAsyncParameterError(
            f"{parameter}: {what} {uri!r} is not an S3 URI: a SageMaker operator writes only to S3, so its "
            "output assets use the s3 scheme, s3://bucket/prefix (e.g. the endpoint's S3OutputPath, or a "
            "prefix under it). Fix the URI, or declare other assets on a task of their own.",
            parameter=parameter,
        )
    return f"s3://{bucket}/{key}".rstrip("/")


def sagemaker_output_asset(uri: str, *, name: str | None = None, **kwargs: Any) -> Asset:
    """
    Return the ``Asset`` of an S3 output location or prefix, to put in a SageMaker operator's ``outlets``.

    The URI is checked and written as ``s3://bucket/prefix`` (S3's https URL forms accepted, a trailing ``/``
    dropped, as Airflow does), the amazon provider's ``s3`` asset scheme.

    :param uri: ``s3://bucket/prefix``: the endpoint's ``S3OutputPath``, or a prefix under it.
    :param name: the asset's name, default its URI.
    :param kwargs: any other ``Asset`` argument (``group``, ``extra``, ``watchers``).
    :raises SageMakerAsyncParameterError: ``uri`` is not an S3 URI.
    """
    from airflow.sdk import Asset

    normalized = _s3_uri(uri, "uri", "the asset URI")
    return Asset(name=name or normalized, uri=normalized, **kwargs)


def check_output_assets(outlets: Iterable[Any] | None, *, parameter: str = "outlets") -> None:
    """
    Check, when the DAG is parsed, that every ``Asset`` of a SageMaker operator's ``outlets`` is an S3 one.

    Asset aliases and references are left to Airflow.

    :param outlets: the operator's ``outlets``.
    :param parameter: the name used in the error.
    :raises SageMakerAsyncParameterError: an asset whose URI is not ``s3://bucket/...``.
    """
    for index, outlet in enumerate(outlets or ()):
        if _is_asset(outlet):
            _s3_uri(outlet.uri, f"{parameter}[{index}]", f"asset {outlet.name!r} has the URI")


def covers(asset_uri: str, location: str) -> bool:
    """
    Tell whether an asset URI covers a written location: the same, or a ``/``-bounded prefix of it.

    ``s3://b/out`` covers ``s3://b/out``, ``s3://b/out/`` and ``s3://b/out/x.out``, not ``s3://b/output``.
    Both are compared in the ``s3://`` form (:func:`~airflow_sagemaker_async.common.layout.normalize_s3_uri`).
    """
    asset = normalize_s3_uri(asset_uri).rstrip("/")
    written = normalize_s3_uri(location)
    return written.rstrip("/") == asset or written.startswith(asset + "/")


def inference_extra(outcome: Outcome) -> dict[str, Any]:
    """Return the asset event ``extra`` of one inference's :class:`~airflow_sagemaker_async.common.records.Outcome`."""
    return {
        "inference_id": outcome["inference_id"],
        "status": outcome["status"],
        "endpoint_name": outcome["endpoint_name"],
        "output_location": outcome["output_location"],
        "failure_location": outcome["failure_location"],
        "submitted_at": outcome["submitted_at"],
        "completed_at": outcome["completed_at"],
    }


def batch_extra(summary: BatchSummary) -> dict[str, Any]:
    """Return the asset event ``extra`` of a batch's :class:`~airflow_sagemaker_async.common.records.BatchSummary`."""
    return {
        "batch_tag": summary["batch_tag"],
        "endpoint_name": summary["endpoint_name"],
        "total": summary["total"],
        "counts": dict(summary["counts"]),
        "manifest_location": summary["manifest_location"],
        "output_prefix": summary["output_prefix"],
        "failure_prefix": summary["failure_prefix"],
        "started_at": summary["started_at"],
        "ended_at": summary["ended_at"],
    }


def record_output_events(
    context: Mapping[str, Any],
    outlets: Iterable[Any] | None,
    extra: dict[str, Any],
    locations: Iterable[str | None],
    log: Any,
) -> list[str]:
    """
    Put ``extra`` in the outlet event of each S3 asset of ``outlets`` that covers one of ``locations``.

    Airflow emits the events when the task succeeds (``context["outlet_events"]``); nothing is sent here.

    :param context: the task's context (``execute`` or ``execute_complete``).
    :param outlets: the operator's ``outlets``.
    :param extra: from :func:`inference_extra` or :func:`batch_extra`.
    :param locations: the S3 URIs (objects or prefixes) the task wrote; ``None`` entries are skipped.
    :param log: the task's logger.
    :return: the URIs of the assets whose ``extra`` was filled.
    """
    written = [location for location in locations if location]
    filled: list[str] = []
    for outlet in outlets or ():
        if not _is_asset(outlet) or not outlet.uri.startswith("s3://"):
            continue
        if not any(covers(outlet.uri, location) for location in written):
            log.warning(
                "Outlet asset %s does not cover what this task wrote (%s): its asset event carries no SageMaker "
                "extra. Declare the asset on the output prefix (e.g. the endpoint's S3OutputPath).",
                outlet.uri,
                ", ".join(written),
            )
            continue
        context["outlet_events"][outlet].extra.update(extra)
        filled.append(outlet.uri)
    if filled:
        log.info("Asset events for %s carry %s", ", ".join(filled), sorted(extra))
    return filled


def record_inference_events(task: Any, context: Mapping[str, Any]) -> list[str]:
    """
    Fill the outlet events of a single-inference task from its outcome (``task.last_outcome``), if any.

    Called from the operator's ``post_execute`` (after ``execute`` or ``execute_complete`` returned). A task
    that returned no outcome (``wait_for_completion=False``: nothing written yet) fills nothing.

    :return: the URIs of the assets whose ``extra`` was filled.
    """
    outcome: Outcome | None = getattr(task, "last_outcome", None)
    if not outcome or not task.outlets:
        return []
    locations = [outcome["output_location"], outcome["failure_location"]]
    return record_output_events(context, task.outlets, inference_extra(outcome), locations, task.log)


def record_batch_events(task: Any, context: Mapping[str, Any]) -> list[str]:
    """
    Fill the outlet events of a batch task from its summary (``task.last_summary``), if any.

    Called from the operator's ``post_execute``: only a batch within its failure policy gets there.

    :return: the URIs of the assets whose ``extra`` was filled.
    """
    summary: BatchSummary | None = getattr(task, "last_summary", None)
    if not summary or not task.outlets:
        return []
    locations = [summary["output_prefix"], summary["failure_prefix"], summary["manifest_location"]]
    return record_output_events(context, task.outlets, batch_extra(summary), locations, task.log)
