"""
A batch's S3 state, read and written by the worker: pinned inputs, ``state.json``, ended parts, results found.

Everything a try needs to resume lives under the batch's state prefix (:meth:`BatchNames.state_dir`):
the pinned inputs (``inputs/<chunk>.jsonl``, 1,000 locations each, then ``inputs.json``, written last, which
makes the pin: :class:`PinnedInputs`; ``inputs.jsonl`` holds the digest of ``input_records``, or the whole list
of a batch pinned by an older version), ``state.json`` (:class:`~airflow_sagemaker_async.batch.core.BatchState`) and
``ended/<part>.jsonl`` (manifest lines, a later part wins). Results are found by LIST per block of 1,000 items
(:func:`find`). Calls go through this module's names (``state.put``...), so a test can cut a try short at any
write. Source: S3 ListObjectsV2, GetObject, PutObject, HeadObject (boto3 ``s3`` client methods).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
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
from airflow_sagemaker_async.batch.inputs import BatchInput
from airflow_sagemaker_async.batch.progress import Progress, progress_location
from airflow_sagemaker_async.common.layout import join_s3, s3_uri, split_s3_uri
from airflow_sagemaker_async.common.outcome import MAX_FAILURE_BYTES, read_object
from airflow_sagemaker_async.common.records import COMPLETED, FAILED, TIMED_OUT

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from airflow_sagemaker_async.common.records import ManifestLine

__all__ = [
    "INPUT_CHUNK",
    "PinnedInputs",
    "ended_lines",
    "ended_texts",
    "find",
    "get_text",
    "get_text_or_none",
    "list_block",
    "list_prefix",
    "listed_uris",
    "load_progress",
    "load_state",
    "locations_digest",
    "manifest_lines",
    "pin_locations",
    "put",
    "read_pin",
    "write_part",
    "write_progress",
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
    part = part_location(names, state.parts)
    put(s3, part, "".join(json.dumps(line) + "\n" for line in lines).encode())
    state.parts += 1
    put(s3, names.state_location(), state.to_json().encode())


def part_location(names: BatchNames, number: int) -> str:
    """Return the S3 URI of ended part ``number``: ``<state dir>/ended/<number:06d>.jsonl``."""
    return join_s3(names.state_dir(), "ended", f"{number:06d}.jsonl")


def load_progress(s3: Any, names: BatchNames, state: BatchState) -> Progress:
    """
    Return the batch's progress (``progress.json``), brought up to the state's ended parts.

    Parts written after the last progress write (a worker that died in between) are read and counted; without a
    ``progress.json`` (a batch begun by an older version) every part is read once, a later part winning. A
    re-check part (``state.recheck_parts``: ``TimedOut`` items found since) moves its items out of ``TimedOut``.
    """
    text = get_text_or_none(s3, progress_location(names))
    if text is None:
        progress = Progress.of(state)
        if state.parts:
            progress.add(ended_lines(s3, names).values(), parts=state.parts)
        return progress
    progress = Progress.from_json(text)
    for number in range(progress.parts, state.parts):
        text = get_text_or_none(s3, part_location(names, number))
        lines: list[ManifestLine] = [json.loads(line) for line in (text or "").splitlines() if line]
        progress.add(lines, parts=number + 1, replacing=TIMED_OUT if number in state.recheck_parts else None)
    return progress


def write_progress(s3: Any, names: BatchNames, progress: Progress) -> None:
    """Write ``progress.json`` (PutObject, about 10 KB at most)."""
    put(s3, progress_location(names), progress.to_json().encode())


def ended_lines(s3: Any, names: BatchNames) -> dict[int, ManifestLine]:
    """Return each ended item's manifest line from the ended parts; a later part wins (a re-check's verdict)."""
    lines: dict[int, ManifestLine] = {}
    for uri, _ in list_prefix(s3, join_s3(names.state_dir(), "ended") + "/"):  # in part order
        for text in get_text(s3, uri).splitlines():
            line: ManifestLine = json.loads(text)
            lines[line["item"]] = line
    return lines


def ended_texts(s3: Any, names: BatchNames) -> dict[int, tuple[str, str]]:
    """
    Return each ended item's ``(status, manifest line as JSON text)``; a later part wins.

    The text, not the parsed line, is kept: at 100,000 items that is about 50 MB instead of some 150 MB of dicts.
    """
    lines: dict[int, tuple[str, str]] = {}
    for uri, _ in list_prefix(s3, join_s3(names.state_dir(), "ended") + "/"):  # in part order
        for text in get_text(s3, uri).splitlines():
            line: ManifestLine = json.loads(text)
            lines[line["item"]] = (line["status"], text)
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


#: Input locations per chunk of the pin (``inputs/<chunk:05d>.jsonl``): as many as a block of results, about
#: 50-100 KB of S3 URIs, so a resume reads about one wave's worth of locations.
INPUT_CHUNK = 1_000


def locations_digest(locations: Iterable[str]) -> str:
    """Return the SHA-256 (hex) of the input locations in order, one per line: how a pin is compared."""
    digest = hashlib.sha256()
    for location in locations:
        digest.update(location.encode())
        digest.update(b"\n")
    return digest.hexdigest()


class PinnedInputs(Sequence[BatchInput]):
    """
    The pinned input locations of a batch, read one chunk at a time (at most two chunks held).

    ``pinned[i]`` is item ``i``'s :class:`~airflow_sagemaker_async.batch.inputs.BatchInput`; a resume reads the
    chunks of the items it sends or records, never the whole list.

    :param s3: the S3 client.
    :param names: the batch's names.
    :param count: how many items are pinned.
    :param chunk_size: locations per chunk.
    :param content_type: the batch's ``content_type``.
    :param digest: :func:`locations_digest` of the whole list.
    :param chunks: chunks already in memory (the try that pinned them), by number.
    """

    def __init__(
        self,
        s3: Any,
        names: BatchNames,
        *,
        count: int,
        chunk_size: int,
        content_type: str | None,
        digest: str,
        chunks: dict[int, list[str]] | None = None,
    ) -> None:
        self.s3, self.names, self.size, self.chunk_size = s3, names, count, chunk_size
        self.content_type, self.digest = content_type, digest
        self._chunks: OrderedDict[int, list[str]] = OrderedDict(sorted((chunks or {}).items())[-2:])
        self._lock = threading.Lock()
        self.chunks_read = 0

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> BatchInput:  # type: ignore[override]  # no slices
        if not isinstance(index, int) or not 0 <= index < self.size:
            raise IndexError(index)
        number = index // self.chunk_size
        with self._lock:
            chunk = self._chunks.get(number)
            if chunk is None:
                text = get_text(self.s3, chunk_location(self.names, number))
                chunk = [json.loads(line) for line in text.splitlines() if line]
                self.chunks_read += 1
                self._chunks[number] = chunk
                while len(self._chunks) > 2:
                    self._chunks.popitem(last=False)
            self._chunks.move_to_end(number)
        return BatchInput(chunk[index % self.chunk_size], None, self.content_type)


def chunk_location(names: BatchNames, number: int) -> str:
    """Return the S3 URI of the pin's chunk ``number``: ``<state dir>/inputs/<number:05d>.jsonl``."""
    return join_s3(names.state_dir(), "inputs", f"{number:05d}.jsonl")


def pin_index_location(names: BatchNames) -> str:
    """Return the S3 URI of the pin's index, ``<state dir>/inputs.json`` (written last: its presence is the pin)."""
    return join_s3(names.state_dir(), "inputs.json")


def pin_locations(
    s3: Any,
    names: BatchNames,
    locations: Iterable[str],
    *,
    content_type: str | None,
    check: Callable[[int, str], None] | None = None,
) -> PinnedInputs:
    """
    Pin ``locations`` in chunks, then write the index that makes the pin; hold at most one chunk in memory.

    ``locations`` may be a LIST being paginated: each chunk is written as soon as it is full, so a prefix of
    100,000 objects is listed once and never held whole. Nothing is submitted before the index exists, so a try
    that dies while pinning leaves no pin, and the next try pins again.

    :param check: called with ``(index, location)`` for each location before it is pinned (raises to refuse).
    """
    digest = hashlib.sha256()
    chunk: list[str] = []
    first: list[str] | None = None
    count = number = 0
    for location in locations:
        if check is not None:
            check(count, location)
        digest.update(location.encode())
        digest.update(b"\n")
        chunk.append(location)
        count += 1
        if len(chunk) == INPUT_CHUNK:
            put(s3, chunk_location(names, number), "".join(json.dumps(c) + "\n" for c in chunk).encode())
            first = first if first is not None else chunk
            chunk, number = [], number + 1
    if chunk:
        put(s3, chunk_location(names, number), "".join(json.dumps(c) + "\n" for c in chunk).encode())
        first = first if first is not None else chunk
    index = {"count": count, "chunk_size": INPUT_CHUNK, "sha256": digest.hexdigest()}
    if count:
        put(s3, pin_index_location(names), json.dumps(index).encode())
    return PinnedInputs(
        s3,
        names,
        count=count,
        chunk_size=INPUT_CHUNK,
        content_type=content_type,
        digest=str(index["sha256"]),
        chunks={0: first} if first is not None else None,
    )


def read_pin(s3: Any, names: BatchNames, *, content_type: str | None) -> PinnedInputs | list[BatchInput] | None:
    """Return the pinned locations: chunked, a whole list (an older version's ``inputs.jsonl``), or ``None``."""
    text = get_text_or_none(s3, pin_index_location(names))
    if text is not None:
        index = json.loads(text)
        return PinnedInputs(
            s3,
            names,
            count=index["count"],
            chunk_size=index["chunk_size"],
            content_type=content_type,
            digest=str(index["sha256"]),
        )
    legacy = get_text_or_none(s3, join_s3(names.state_dir(), "inputs.jsonl"))
    if legacy is None:
        return None
    return [BatchInput(json.loads(line), None, content_type) for line in legacy.splitlines() if line]


def iter_listed_uris(s3: Any, prefix_uri: str) -> Iterable[str]:
    """Yield the S3 URIs under ``prefix_uri`` page by page, ascending as ListObjectsV2 returns them; no ``…/`` key."""
    bucket, prefix = split_s3_uri(prefix_uri)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            if not item["Key"].endswith("/"):
                yield s3_uri(bucket, item["Key"])
