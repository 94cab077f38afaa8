"""
OpenLineage for the operators: S3 datasets named as the OpenLineage provider names them, the endpoint as a run facet.

Each operator's ``get_openlineage_facets_on_complete`` (and ``..._on_failure``) builds an ``OperatorLineage``
from what the task did (:class:`LineageRecord`): the S3 objects or prefixes it read, those it (or SageMaker)
wrote, and a ``sagemakerEndpoint`` run facet (:func:`endpoint_facet`). Datasets follow the OpenLineage naming
spec for S3, as the amazon provider's operators do: namespace ``s3://<bucket>``, name the key or the prefix
(no leading ``/``; ``/`` for a whole bucket). A local file (the streaming operator's ``output_file``) is
namespace ``file``, name its absolute path.

``apache-airflow-providers-openlineage`` is optional (the ``openlineage`` extra): it is imported here only
when its listener asks for lineage, so the operators import and run without it.

.. seealso::
    - https://openlineage.io/docs/spec/naming
    - https://airflow.apache.org/docs/apache-airflow-providers-openlineage/stable/guides/developer.html
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from airflow_sagemaker_async.common.layout import split_s3_uri

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage

__all__ = ["ENDPOINT_FACET", "LineageRecord", "endpoint_facet", "operator_lineage", "s3_dataset"]

#: The key of the run facet that names the endpoint.
ENDPOINT_FACET: Final = "sagemakerEndpoint"


@dataclass
class LineageRecord:
    """
    What one task read and wrote, as locations: filled while it runs, read when the listener asks.

    :param operation: the SageMaker Runtime operation, e.g. ``InvokeEndpointAsync``.
    :param endpoint_name: the endpoint invoked, ``None`` until known.
    :param inputs: S3 URIs (objects, or prefixes ending in ``/``) the task or SageMaker read.
    :param outputs: S3 URIs (objects or prefixes) or absolute local paths written.
    :param facet: more fields of the ``sagemakerEndpoint`` run facet (``inferenceId``, ``status``, ...).
    """

    operation: str
    endpoint_name: str | None = None
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    facet: dict[str, Any] = field(default_factory=dict)


def s3_dataset(location: str) -> Any:
    """
    Return the OpenLineage ``Dataset`` of an S3 object or prefix, or of a local file.

    ``s3://bucket/key`` (or S3's https URL of it) is namespace ``s3://bucket``, name ``key`` (a prefix keeps
    its trailing ``/`` off: ``s3://bucket/dir/`` is name ``dir``); ``s3://bucket`` is name ``/``. Anything
    else is a local path: namespace ``file``, name the absolute path.

    :raises ValueError: an https URL that is not S3's.
    """
    from airflow.providers.common.compat.openlineage.facet import Dataset

    if location.startswith(("s3://", "https://")):
        bucket, key = split_s3_uri(location, allow_https=True)
        return Dataset(namespace=f"s3://{bucket}", name=key.strip("/") or "/")
    return Dataset(namespace="file", name=os.path.abspath(location))


@functools.cache
def _endpoint_facet_class() -> type[Any]:
    """Build the run facet class once, on first use (``attrs`` and the facet base come with the provider)."""
    import attr
    from airflow.providers.common.compat.openlineage.facet import RunFacet

    @attr.define
    class SageMakerEndpointRunFacet(RunFacet):
        """The SageMaker endpoint a task invoked, the operation and what it returned."""

        endpointName: str | None = attr.field(default=None)  # OpenLineage facets are camelCase
        operation: str | None = attr.field(default=None)
        details: dict[str, Any] = attr.field(factory=dict)

    return SageMakerEndpointRunFacet


def endpoint_facet(record: LineageRecord) -> Any:
    """Return the ``sagemakerEndpoint`` run facet: ``endpointName``, ``operation`` and ``details``."""
    return _endpoint_facet_class()(endpointName=record.endpoint_name, operation=record.operation, details=record.facet)


def operator_lineage(record: LineageRecord, *, outputs: bool = True) -> OperatorLineage:
    """
    Return the ``OperatorLineage`` of one task from its record (each location once, in order).

    :param outputs: include the outputs (``False`` for a failure that wrote nothing).
    """
    from airflow.providers.openlineage.extractors import OperatorLineage

    def datasets(locations: list[str]) -> list[Any]:
        found = []
        for location in dict.fromkeys(locations):
            try:
                found.append(s3_dataset(location))
            except ValueError:  # an https input that is not an S3 URL: not a dataset we can name
                continue
        return found

    return OperatorLineage(
        inputs=datasets(record.inputs),
        outputs=datasets(record.outputs) if outputs else [],
        run_facets={ENDPOINT_FACET: endpoint_facet(record)},
    )
