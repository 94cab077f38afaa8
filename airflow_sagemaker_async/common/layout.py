"""
Where SageMaker puts things in S3, and when to stop waiting for them.

The one module that knows SageMaker's S3 layout for asynchronous inference and this package's deadline
arithmetic. Used by the operators (resume on retry, batch prefixes), the triggers, the outcome and the
local backend (which writes the objects where this module says SageMaker would). Imports no Airflow.

**Where results land** (InvokeEndpointAsync, AsyncInferenceConfig.OutputConfig of the endpoint)::

    output:  <S3OutputPath>[/<S3OutputPathExtension>]/<Filename or "<uuid>.out">
    failure: <S3FailurePath>[/<S3OutputPathExtension>]/<"<Filename>-error.out" or "<uuid>-error.out">

The ``<uuid>.out`` / ``<uuid>-error.out`` names are observed, not documented (the uuid is SageMaker's, not
necessarily the InferenceId). AWS documents neither whether S3OutputPathExtension also applies to the
failure path nor how Filename names the failure object; the layout above is what the local backend
writes. Code that must stay correct whichever way SageMaker names the failure object uses the
locations InvokeEndpointAsync *returned* (header ``X-Amzn-SageMaker-FailureLocation``), verbatim, and
only falls back to :func:`result_locations` where nothing was returned (resume on retry).

**When to stop waiting**: SageMaker has no status API and writes no object for a request that expired
in its queue, so a wait ends at an absolute deadline (:func:`compute_deadline`).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Final
from urllib.parse import unquote

from airflow_sagemaker_async.common.rules import DEFAULT_INVOCATION_TIMEOUT_SECONDS, DEFAULT_REQUEST_TTL_SECONDS

__all__ = [
    "DEADLINE_MARGIN_SECONDS",
    "FAILURE_SUFFIX",
    "OUTPUT_SUFFIX",
    "common_prefix",
    "compute_deadline",
    "join_s3",
    "normalize_s3_uri",
    "result_locations",
    "s3_uri",
    "split_s3_uri",
]

#: Added to RequestTTLSeconds + InvocationTimeoutSeconds for the default deadline: the time SageMaker
#: takes to upload a large output after the model answered, clock skew between the worker and AWS,
#: and scheduling delay between submission and the first poll.
DEADLINE_MARGIN_SECONDS: Final = 600
#: Suffix of an output object SageMaker names itself (``<uuid>.out``).
OUTPUT_SUFFIX: Final = ".out"
#: Suffix of a failure object (``<uuid>-error.out``; with Filename, ``<Filename>-error.out``).
FAILURE_SUFFIX: Final = "-error.out"

# Regional (s3.eu-west-1 / s3-eu-west-1), global (s3) and dual-stack (s3.dualstack.eu-west-1) hosts.
_HTTPS_VIRTUAL_HOST: Final = re.compile(
    r"https://(?P<bucket>[^/]+)\.s3[.-](?:[a-z0-9-]+\.)*amazonaws\.com(?:\.cn)?/(?P<key>.*)", re.DOTALL
)
_HTTPS_PATH_STYLE: Final = re.compile(
    r"https://s3[.-](?:[a-z0-9-]+\.)*amazonaws\.com(?:\.cn)?/(?P<bucket>[^/]+)/?(?P<key>.*)", re.DOTALL
)


def split_s3_uri(uri: str, *, allow_https: bool = False) -> tuple[str, str]:
    """
    Split ``s3://bucket/key`` into ``(bucket, key)``; the key may be empty (``s3://bucket``).

    :param uri: the URI.
    :param allow_https: also accept S3's https URLs, virtual-host (``https://bucket.s3.region.amazonaws.com/key``)
        and path style (``https://s3.region.amazonaws.com/bucket/key``), as InvokeEndpointAsync's InputLocation does.
    :raises ValueError: ``uri`` names no bucket.
    """
    if isinstance(uri, str) and uri.startswith("s3://"):
        bucket, _, key = uri[5:].partition("/")
        if bucket:
            return bucket, key
    elif isinstance(uri, str) and allow_https:
        for pattern in (_HTTPS_VIRTUAL_HOST, _HTTPS_PATH_STYLE):
            if match := pattern.fullmatch(uri):
                return match["bucket"], match["key"]
    raise ValueError(f"{uri!r} is not an S3 URI of the form s3://bucket/key")


def normalize_s3_uri(uri: str) -> str:
    """
    Return ``uri`` as ``s3://bucket/key``: the one form in which this package compares S3 locations.

    SageMaker's notifications may name a location as ``s3://bucket/key`` or as an S3 https URL,
    virtual-hosted (``https://bucket.s3.region.amazonaws.com/key``) or path-style
    (``https://s3.region.amazonaws.com/bucket/key``); the https forms' keys are percent-decoded (an https
    URL encodes them, an ``s3://`` URI does not). Anything else is returned unchanged, so it matches only
    itself.

    :param uri: an S3 location in any of these forms.
    :return: the ``s3://`` form.

    .. seealso::
        https://docs.aws.amazon.com/AmazonS3/latest/userguide/VirtualHosting.html
    """
    if not isinstance(uri, str) or not uri.startswith("https://"):
        return uri
    try:
        bucket, key = split_s3_uri(uri, allow_https=True)
    except ValueError:
        return uri
    return s3_uri(bucket, unquote(key))


def s3_uri(bucket: str, key: str) -> str:
    """Return ``s3://bucket/key``."""
    return f"s3://{bucket}/{key}"


def join_s3(base: str, *parts: str | None) -> str:
    """Join an S3 URI or key and path parts with single slashes; ``None`` and empty parts are skipped."""
    pieces = [base.rstrip("/")] + [part.strip("/") for part in parts if part]
    return "/".join(piece for piece in pieces if piece)


def result_locations(
    s3_output_path: str,
    s3_failure_path: str | None,
    *,
    name: str,
    s3_output_path_extension: str | None = None,
    filename: str | None = None,
) -> tuple[str, str | None]:
    """
    Return ``(output_location, failure_location)`` of one request, as laid out above.

    :param s3_output_path: the endpoint's ``OutputConfig.S3OutputPath``.
    :param s3_failure_path: its ``OutputConfig.S3FailurePath``, or ``None`` (then no failure location).
    :param name: the object name SageMaker picks when ``filename`` is not given (its uuid).
    :param s3_output_path_extension: the request's S3OutputPathExtension, default ``None``.
    :param filename: the request's Filename, default ``None``.
    """
    output_name = filename or f"{name}{OUTPUT_SUFFIX}"
    failure_name = f"{filename or name}{FAILURE_SUFFIX}"
    output = join_s3(s3_output_path, s3_output_path_extension, output_name)
    failure = join_s3(s3_failure_path, s3_output_path_extension, failure_name) if s3_failure_path else None
    return output, failure


def common_prefix(keys: list[str]) -> str:
    """
    Return the longest prefix shared by every key (``""`` for none), for an S3 LIST that sees them all.

    S3 ``ListObjectsV2`` takes a ``Prefix`` that may end inside a file name (``out/batch-7f3a-``), which
    lists only the keys that start so.
    """
    if not keys:
        return ""
    low, high = min(keys), max(keys)
    size = 0
    while size < min(len(low), len(high)) and low[size] == high[size]:
        size += 1
    return low[:size]


def compute_deadline(
    submitted_at: datetime,
    *,
    request_ttl_seconds: int | None,
    invocation_timeout_seconds: int | None,
    max_wait_seconds: float | None,
) -> datetime:
    """
    Return the absolute time after which a request that left no object counts as lost.

    ``max_wait_seconds`` when given; otherwise the request's TTL (default 21600 s) + its invocation
    timeout (default 900 s) + :data:`DEADLINE_MARGIN_SECONDS` (600 s), counted from ``submitted_at``.
    """
    if max_wait_seconds is not None:
        return submitted_at + timedelta(seconds=max_wait_seconds)
    ttl = request_ttl_seconds or DEFAULT_REQUEST_TTL_SECONDS
    timeout = invocation_timeout_seconds or DEFAULT_INVOCATION_TIMEOUT_SECONDS
    return submitted_at + timedelta(seconds=ttl + timeout + DEADLINE_MARGIN_SECONDS)
