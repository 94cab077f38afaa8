"""
A batch's S3 state, read and written by the worker: pinned inputs, ``state.json``, ended parts, results found.

Everything a try needs to resume lives under the batch's state prefix (:meth:`BatchNames.state_dir`):
``inputs.jsonl`` (the pinned inputs), ``state.json`` (:class:`~airflow_sagemaker_async.batch.core.BatchState`) and
``ended/<part>.jsonl`` (manifest lines, a later part wins). Results are found by LIST per block of 1,000 items
(:func:`find`). Calls go through this module's names (``state.put``...), so a test can cut a try short at any
write. Source: S3 ListObjectsV2, GetObject, PutObject, HeadObject (boto3 ``s3`` client methods).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from airflow_sagemaker_async.batch.core import (
    BatchNames,
    BatchState,
    BlockListing,
    Found,
    PendingItem,
    head_requests,
    last_modified_iso,
    list_requests,
    merge_found,
    read_listing,
)
from airflow_sagemaker_async.common.layout import join_s3, s3_uri, split_s3_uri
from airflow_sagemaker_async.common.outcome import MAX_FAILURE_BYTES, read_object
from airflow_sagemaker_async.common.records import COMPLETED, FAILED, TIMED_OUT

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow_sagemaker_async.common.records import ManifestLine

__all__ = [
    "ended_lines",
    "find",
    "get_text",
    "get_text_or_none",
    "list_block",
    "list_prefix",
    "listed_uris",
    "load_state",
    "manifest_lines",
    "put",
    "write_part",
]


def load_state(s3: Any, names: BatchNames) -> BatchState | None:
    """Return the batch's state (``state.json``), or ``None`` when no try wrote one (GetObject NoSuchKey)."""
    bucket, key = split_s3_uri(names.state_location())
    try:
        return BatchState.from_json(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in {"NoSuchKey", "404", "NotFound"}:
            return None
        raise


def find(s3: Any, names: BatchNames, items: list[PendingItem] | list[int]) -> dict[int, Found]:
    """Return the results S3 holds for ``items`` (LIST per block of 1,000; HEAD for odd failure keys)."""
    indexes = [i if isinstance(i, int) else i.index for i in items]
    found: dict[int, Found] = {}
    for listing in list_requests(names, indexes):
        read_listing(names, found, listing.status, list_block(s3, names, listing))
    for item in head_requests((i for i in items if isinstance(i, PendingItem)), found):
        assert item.failure_location is not None  # head_requests keeps only those with one
        bucket, key = split_s3_uri(item.failure_location)
        try:
            modified = s3.head_object(Bucket=bucket, Key=key).get("LastModified")
        except ClientError:
            continue
        merge_found(found, item.index, Found(FAILED, item.failure_location, last_modified_iso(modified)))
    wanted = set(indexes)
    return {index: result for index, result in found.items() if index in wanted}


def manifest_lines(s3: Any, ended: Sequence[tuple[PendingItem, Found | None]], concurrency: int) -> list[ManifestLine]:
    """Return the manifest line of each ended item; a failure's reason is read from its failure object."""

    def line(pair: tuple[PendingItem, Found | None]) -> ManifestLine:
        item, found = pair
        if found is None:
            return item.ended(TIMED_OUT, completed_at=None)
        if found.status == FAILED:
            try:
                data, _ = read_object(s3, found.location, max_bytes=MAX_FAILURE_BYTES, strict=False)
                reason = data.decode("utf-8", errors="replace")
            except Exception as error:  # the reason is informative; the status is what counts
                reason = f"(the failure object could not be read: {error!r})"
            item.failure_location = found.location
            return item.ended(FAILED, completed_at=found.completed_at, failure_reason=reason)
        item.output_location = found.location
        return item.ended(COMPLETED, completed_at=found.completed_at)

    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(line, ended))


def write_part(s3: Any, names: BatchNames, state: BatchState, lines: list[ManifestLine]) -> None:
    """Write ``lines`` as the next ended part, then the state that counts it."""
    part = join_s3(names.state_dir(), "ended", f"{state.parts:06d}.jsonl")
    put(s3, part, "".join(json.dumps(line) + "\n" for line in lines).encode())
    state.parts += 1
    put(s3, names.state_location(), state.to_json().encode())


def ended_lines(s3: Any, names: BatchNames) -> dict[int, ManifestLine]:
    """Return each ended item's manifest line from the ended parts; a later part wins (a re-check's verdict)."""
    lines: dict[int, ManifestLine] = {}
    for uri, _ in list_prefix(s3, join_s3(names.state_dir(), "ended") + "/"):  # in part order
        for text in get_text(s3, uri).splitlines():
            line: ManifestLine = json.loads(text)
            lines[line["item"]] = line
    return lines


def list_prefix(s3: Any, prefix_uri: str) -> list[tuple[str, Any]]:
    """Return ``(s3 uri, LastModified)`` of every object under ``prefix_uri`` (paginated ListObjectsV2)."""
    bucket, prefix = split_s3_uri(prefix_uri)
    found = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        found += [(s3_uri(bucket, item["Key"]), item.get("LastModified")) for item in page.get("Contents", [])]
    return found


def list_block(s3: Any, names: BatchNames, listing: BlockListing) -> list[tuple[str, Any]]:
    """Return ``(s3 uri, LastModified)`` of the keys of one block's wanted span (ListObjectsV2, StartAfter)."""
    bucket, prefix = split_s3_uri(listing.prefix)
    _, start_after = split_s3_uri(listing.start_after)
    request: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "StartAfter": start_after}
    found: list[tuple[str, Any]] = []
    while True:
        page = s3.list_objects_v2(**request, MaxKeys=listing.max_keys)
        found += [(s3_uri(bucket, item["Key"]), item.get("LastModified")) for item in page.get("Contents", [])]
        token = page.get("NextContinuationToken")
        if not (page.get("IsTruncated") and token and listing.read_on(names, found[-1][0] if found else None)):
            return found
        request = {"Bucket": bucket, "Prefix": prefix, "ContinuationToken": token}


def listed_uris(s3: Any, prefix_uri: str) -> list[str]:
    """Return the S3 URIs of the objects under ``prefix_uri``, sorted, keys ending in ``/`` skipped."""
    return sorted(uri for uri, _ in list_prefix(s3, prefix_uri) if not uri.endswith("/"))


def get_text(s3: Any, uri: str) -> str:
    """Return the object at ``uri`` as UTF-8 text (GetObject); a missing object raises botocore's ``ClientError``."""
    bucket, key = split_s3_uri(uri)
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode("utf-8")


def get_text_or_none(s3: Any, uri: str) -> str | None:
    """Return the object at ``uri`` as text, or ``None`` when it does not exist (GetObject NoSuchKey)."""
    try:
        return get_text(s3, uri)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in {"NoSuchKey", "404", "NotFound"}:
            return None
        raise


def put(s3: Any, uri: str, body: bytes) -> None:
    """Write ``body`` at ``uri`` (PutObject); every write of the batch's state goes through here."""
    bucket, key = split_s3_uri(uri)
    s3.put_object(Bucket=bucket, Key=key, Body=body)
