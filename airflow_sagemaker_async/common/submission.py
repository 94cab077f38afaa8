"""What a submission sends: the payload, the default inference id, the key of an uploaded payload."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from airflow_sagemaker_async.common.exceptions import SageMakerAsyncParameterError
from airflow_sagemaker_async.common.validation import INFERENCE_ID_MAX

__all__ = ["default_inference_id", "input_key", "readable_prefix", "serialize_input_data"]

_HASH_CHARS = 16
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def default_inference_id(dag_id: str, task_id: str, run_id: str, map_index: int = -1) -> str:
    """
    Return the deterministic InferenceId of one task instance: readable prefix + hash, <= 64 characters.

    The prefix (``<dag_id>.<task_id>[.<map_index>]``, characters outside ``[A-Za-z0-9._-]`` replaced by
    ``-``, cut to fit) lets the SageMaker logs be matched to the task; the 16-hex-digit SHA-256 of all
    four values keeps ids of different task instances apart. Retries of a task instance get the same id.

    Example: ``example_dag.predict-3f2a9c0d1b7e4a55``.
    """
    readable = readable_prefix(dag_id, task_id, map_index)
    digest = hashlib.sha256(json.dumps([dag_id, task_id, run_id, map_index]).encode()).hexdigest()
    return f"{readable[: INFERENCE_ID_MAX - _HASH_CHARS - 1]}-{digest[:_HASH_CHARS]}"


def readable_prefix(dag_id: str, task_id: str, map_index: int = -1) -> str:
    """Return ``<dag_id>.<task_id>[.<map_index>]`` with characters outside ``[A-Za-z0-9._-]`` replaced by ``-``."""
    readable = f"{dag_id}.{task_id}" + (f".{map_index}" if map_index >= 0 else "")
    return _UNSAFE.sub("-", readable).strip("-.") or "airflow"


def serialize_input_data(input_data: Any, content_type: str | None) -> tuple[bytes, str | None]:
    """
    Turn ``input_data`` into the request payload; return ``(payload, content_type)``.

    ``bytes`` are sent as they are, ``str`` as UTF-8, anything else as JSON (``allow_nan=False``) with
    ``application/json`` unless ``content_type`` says otherwise.

    :raises SageMakerAsyncParameterError: the value cannot be serialised to JSON.
    """
    if isinstance(input_data, (bytes, bytearray)):
        return bytes(input_data), content_type
    if isinstance(input_data, str):
        return input_data.encode("utf-8"), content_type
    try:
        payload = json.dumps(input_data, allow_nan=False, separators=(",", ":")).encode("utf-8")
    except (TypeError, ValueError) as error:
        raise SageMakerAsyncParameterError(
            f"input_data of type {type(input_data).__name__} cannot be serialised to JSON ({error}). "
            "Pass bytes or str for a non-JSON payload, or convert the value (e.g. a numpy array with .tolist()).",
            parameter="input_data",
        ) from error
    return payload, content_type or "application/json"


def input_key(prefix: str, inference_id: str) -> str:
    """
    Return the S3 key ``input_data`` is uploaded to: ``<prefix>/<inference id>/input``.

    Characters outside ``[A-Za-z0-9._-]`` in the id are replaced, with a hash suffix keeping ids apart.
    """
    return f"{prefix.rstrip('/')}/{_safe_key_part(inference_id)}/input".lstrip("/")


def _safe_key_part(inference_id: str) -> str:
    safe = _UNSAFE.sub("-", inference_id).strip("-.")
    if safe == inference_id:
        return safe
    return f"{safe[:40]}-{hashlib.sha256(inference_id.encode()).hexdigest()[:12]}"
