"""
A batch's inputs as given: parsing the lists (``input_locations``, ``input_records``), numbers, the records' digest.

No I/O. The pin (chunks of locations, or the records' digest) is written and read by
:mod:`airflow_sagemaker_async.batch.state`.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from airflow_sagemaker_async.common.exceptions import SageMakerAsyncParameterError
from airflow_sagemaker_async.common.submission import serialize_input_data

__all__ = ["BatchInput", "as_list", "positive_int", "records_digest"]


@dataclass(frozen=True)
class BatchInput:
    """One item to send: from S3 (``location``) or inline (``record``, serialised when sent; uploaded when large)."""

    location: str | None
    record: Any
    content_type: str | None

    def payload(self) -> tuple[bytes | None, str | None]:
        """Return ``(payload, content_type)``: the serialised record (``None`` for an S3 input)."""
        if self.location is not None:
            return None, self.content_type
        return serialize_input_data(self.record, self.content_type)


_LIST_FIXES = (
    "Pass a list, or the upstream task's .output (an XComArg, e.g. {parameter}=list_task.output), which reaches the "
    "operator as a list; or set render_template_as_native_obj=True on the DAG so that a '{{{{ ti.xcom_pull(...) }}}}' "
    "template renders to the list itself, not its text."
)


def as_list(value: Any, parameter: str) -> list[Any]:
    """
    Return ``value`` as a list; a str is read as a JSON list, else as a Python list literal (never ``eval``).

    Airflow's default (non-native) rendering turns a templated upstream list into its Python repr
    (``"['s3://b/k']"``): :func:`ast.literal_eval` reads it back, and reads nothing but literals.

    :raises SageMakerAsyncParameterError: not a list, or a str that is neither; the message names the type
        and the start of the value, and both fixes.
    """
    if isinstance(value, str):
        parsed: Any = _UNPARSED
        with contextlib.suppress(ValueError):
            parsed = json.loads(value)
        if parsed is _UNPARSED:
            with contextlib.suppress(ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                parsed = ast.literal_eval(value.strip())
        if not isinstance(parsed, (list, tuple)):
            shown = value if len(value) <= 60 else value[:60] + "..."
            raise SageMakerAsyncParameterError(
                f"{parameter} must be a list; got a str ({len(value)} characters, {shown!r}) that is neither a JSON "
                f"list nor a Python list literal. {_LIST_FIXES.format(parameter=parameter)}",
                parameter=parameter,
            )
        value = parsed
    if not isinstance(value, (list, tuple)):
        shown = repr(value)
        shown = shown if len(shown) <= 60 else shown[:60] + "..."
        raise SageMakerAsyncParameterError(
            f"{parameter} must be a list, got {type(value).__name__} ({shown}). "
            f"{_LIST_FIXES.format(parameter=parameter)}",
            parameter=parameter,
        )
    return list(value)


_UNPARSED: Any = object()


def positive_int(value: Any, parameter: str, unit: str, *, example: int) -> int:
    """Return ``value`` if it is a whole number >= 1 (an int, or a float without fraction), else refuse it."""
    whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not whole or value < 1:
        raise SageMakerAsyncParameterError(
            f"{parameter}={value!r} is invalid: it must be a whole number of {unit}, 1 or more. "
            f"Pass an int, e.g. {parameter}={example}.",
            parameter=parameter,
        )
    return int(value)


def records_digest(inputs: list[BatchInput]) -> dict[str, Any]:
    """Return what pins ``input_records``: their count and a SHA-256 over every serialised record, in order."""
    digest = hashlib.sha256()
    for item in inputs:
        payload, content_type = item.payload()
        body = payload or b""
        digest.update(f"{len(body)}:{content_type}:".encode())
        digest.update(body)
    return {"count": len(inputs), "sha256": digest.hexdigest()}
