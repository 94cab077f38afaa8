"""
The core of a batch of asynchronous inferences: names, S3 layout, state and decisions; no I/O.

A batch is one task that scores many inputs: it submits them in waves of at most ``max_in_flight`` on the
worker, defers while they run, and resumes when few are left in flight (the *low-water mark*) to submit
the next wave. Its cost of watching grows with the number of results S3 has to list, not with
inputs x checks. The worker (:mod:`airflow_sagemaker_async.batch.operators`) and the trigger
(:mod:`airflow_sagemaker_async.batch.triggers`) are thin I/O shells around this module, as
:mod:`~airflow_sagemaker_async.common.watch` is for one inference.

**Names.** Every item of a batch is named deterministically from the task instance, so a retry
(same dag_id, task_id, run_id, map_index) finds what an earlier try submitted:

- the batch tag: 12 hex digits of a hash of the task instance (:func:`batch_tag`);
- item ``i`` (0-based, in input order): Filename ``<tag>-<i:07d>.out`` and InferenceId
  ``<readable>-<tag>-<i>`` (at most 64 characters);
- the S3OutputPathExtension: ``airflow-batch/<tag>`` unless the user gives one (then the Filename still
  carries the tag, so the batch's results share a key prefix either way).

**Where results land** (:mod:`~airflow_sagemaker_async.common.layout`): item ``i``'s output at
``<output dir>/<tag>-<i:07d>.out``, where ``output dir`` is ``S3OutputPath/<extension>``. Its failure object
is expected under ``<failure dir>/<tag>-<i:07d>.out…``; AWS does not document how Filename names the
failure object, so each item keeps the FailureLocation InvokeEndpointAsync returned, and an item whose
returned key does not start with that stem is checked by HEAD instead of LIST (:attr:`PendingItem.head_failure`).

**Watching by LIST.** Items are grouped in blocks of 1,000 consecutive indexes. A check makes one
``ListObjectsV2`` per directory (output, failure) and per *run* of consecutive blocks that hold pending items:
it starts after the run's lowest pending item (``StartAfter=<dir>/<tag>-<lowest:07d>``), under the longest
prefix its Filenames share, and reads on (1,000 keys a page) until past the run's highest pending item. The
items that ended before the lowest pending one are never listed again, and a run of 100,000 pending items
with no result yet costs 2 requests, not 200 (:class:`BlockListing`). While waves are consecutive a check costs
about ``2 x (1 + results in the pending span / 1,000)`` requests: it grows with the items in flight, not
with those that ended.

**State in S3** (never in trigger kwargs or XCom), under ``<output dir>/<tag>.batch/``:
``state.json`` (:class:`BatchState`: the cursor and the items in flight, rewritten at each check that changed
something), the pinned inputs (``inputs/<n>.jsonl``, 1,000 locations each, and the ``inputs.json`` index written
last, for an ``input_prefix`` or ``input_locations`` batch; ``inputs.jsonl``, a digest of ``input_records``, or
the whole list of a batch pinned by an older version: pinned before anything is submitted, the only truth of
every later try), ``ended/<n>.jsonl`` (manifest lines of the items that ended, one part per check that saw some
end) and ``manifest.jsonl`` (every item once, sorted, written at the end).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from airflow_sagemaker_async.common.layout import join_s3
from airflow_sagemaker_async.common.records import COMPLETED, FAILED, TIMED_OUT
from airflow_sagemaker_async.common.submission import readable_prefix
from airflow_sagemaker_async.common.watch import isoformat

if TYPE_CHECKING:
    from collections.abc import Iterable

    from airflow_sagemaker_async.common.records import InferenceStatus, ManifestLine

__all__ = [
    "BLOCK_SIZE",
    "DEFAULT_MAX_IN_FLIGHT",
    "MAX_ITEMS",
    "BatchNames",
    "BatchState",
    "BlockListing",
    "Found",
    "PendingItem",
    "batch_tag",
    "blocks",
    "head_requests",
    "list_requests",
    "low_water_mark",
    "merge_found",
    "pending_runs",
    "read_listing",
    "reconcile",
    "summary_counts",
]

#: Items in flight at once, by default: SageMaker queues them; this bounds the state and one wave's work.
DEFAULT_MAX_IN_FLIGHT: Final = 1000
#: Consecutive items whose results one LIST page (<= 1,000 keys) covers.
BLOCK_SIZE: Final = 1000
#: The index has 7 digits in the Filename (at most 32 characters): at most 10,000,000 items per batch.
MAX_ITEMS: Final = 10_000_000
#: At most this much of a failure object is quoted in a manifest line (characters).
MAX_REASON_CHARS: Final = 1000

_TAG_CHARS: Final = 12


def batch_tag(dag_id: str, task_id: str, run_id: str, map_index: int = -1, generation: int = 1) -> str:
    """
    Return the batch tag of one task instance: 12 hex digits, the same across its retries.

    :param generation: 1 for the task instance's first batch; a clear after a successful try re-scores under
        the next generation (2, 3, ...), a batch of its own (fresh names, state and pinned inputs).
    """
    key: list[Any] = ["batch", dag_id, task_id, run_id, map_index]
    if generation != 1:
        key.append(generation)
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:_TAG_CHARS]


def low_water_mark(max_in_flight: int) -> int:
    """Return how few items in flight let the next wave go: a quarter of ``max_in_flight`` (at least 0)."""
    return max_in_flight // 4


@dataclass(frozen=True)
class BatchNames:
    """
    Where one batch's items and state live; see the module doc.

    :param tag: from :func:`batch_tag`.
    :param readable: the readable start of every InferenceId (``<dag_id>.<task_id>``, made safe).
    :param output_dir: S3 URI of the batch's output directory (``S3OutputPath/<extension>``).
    :param failure_dir: S3 URI of its failure directory, or ``None`` (endpoint without S3FailurePath).
    """

    tag: str
    readable: str
    output_dir: str
    failure_dir: str | None

    @classmethod
    def of(cls, tag: str, dag_id: str, task_id: str, output_dir: str, failure_dir: str | None) -> BatchNames:
        """Build the names of the batch ``tag`` of a task."""
        return cls(tag, readable_prefix(dag_id, task_id), output_dir, failure_dir)

    def filename(self, index: int) -> str:
        """Return the Filename of item ``index``: ``<tag>-<index:07d>.out`` (24 characters)."""
        return f"{self.tag}-{index:07d}.out"

    def inference_id(self, index: int) -> str:
        """Return the InferenceId of item ``index``: ``<readable>-<tag>-<index>``, at most 64 characters."""
        suffix = f"-{self.tag}-{index}"
        return f"{self.readable[: 64 - len(suffix)]}{suffix}"

    def output_location(self, index: int) -> str:
        """Return where item ``index``'s output is expected."""
        return join_s3(self.output_dir, self.filename(index))

    def state_dir(self) -> str:
        """Return the S3 URI of the batch's own objects (state, ended parts, manifest)."""
        return join_s3(self.output_dir, f"{self.tag}.batch")

    def state_location(self) -> str:
        """Return the S3 URI of ``state.json``."""
        return join_s3(self.state_dir(), "state.json")

    def default_manifest_location(self) -> str:
        """Return the S3 URI of the manifest when the user names none."""
        return join_s3(self.state_dir(), "manifest.jsonl")

    def block_prefix(self, directory: str, block: int) -> str:
        """Return the S3 URI prefix that lists exactly the results of block ``block`` in ``directory``."""
        return join_s3(directory, f"{self.tag}-{block:04d}")

    def index_of(self, key_or_uri: str) -> int | None:
        """Return the item index a result key names (``…/<tag>-<i:07d>.out…``), or ``None`` if it names none."""
        match = re.search(rf"(?:^|/){re.escape(self.tag)}-(\d{{7}})\.out", key_or_uri)
        return int(match.group(1)) if match else None

    def failure_follows_filename(self, index: int, failure_location: str | None) -> bool:
        """Tell whether a returned FailureLocation is where a LIST of the failure directory finds it."""
        if failure_location is None or self.failure_dir is None:
            return True
        return failure_location.startswith(join_s3(self.failure_dir, self.filename(index)))


@dataclass(slots=True)
class PendingItem:
    """
    One submitted item whose result has not been seen yet.

    :param index: the item's position in the inputs, 0-based.
    :param inference_id: its InferenceId.
    :param input_location: the S3/https URI it was sent from, or ``None`` when sent inline.
    :param output_location: the OutputLocation InvokeEndpointAsync returned.
    :param failure_location: the FailureLocation it returned, or ``None``.
    :param submitted_at: ISO-8601 time InvokeEndpointAsync answered.
    :param deadline: ISO-8601 time after which the item counts as ``TimedOut``.
    :param head_failure: the returned failure key is not under the LISTed prefix: check it by HEAD.
    """

    index: int
    inference_id: str
    input_location: str | None
    output_location: str
    failure_location: str | None
    submitted_at: str
    deadline: str
    head_failure: bool = False

    def ended(
        self, status: InferenceStatus, *, completed_at: str | None, failure_reason: str | None = None
    ) -> ManifestLine:
        """Return the item's manifest line (see :class:`~airflow_sagemaker_async.common.records.ManifestLine`)."""
        reason = None
        if failure_reason is not None:
            reason = failure_reason if len(failure_reason) <= MAX_REASON_CHARS else failure_reason[:MAX_REASON_CHARS]
        return {
            "item": self.index,
            "input_location": self.input_location,
            "inference_id": self.inference_id,
            "status": status,
            "output_location": self.output_location,
            "failure_location": self.failure_location,
            "failure_reason": reason,
            "submitted_at": self.submitted_at,
            "completed_at": completed_at,
        }


@dataclass
class BatchState:
    """
    What a batch has done so far: rewritten to ``state.json`` before each deferral, read back on resume.

    Bounded by ``max_in_flight`` (only the items in flight are listed), never by the number of inputs.

    :param tag: the batch tag.
    :param endpoint_name: the endpoint.
    :param total: how many items the batch has.
    :param output_dir: S3 URI of the output directory (from the returned OutputLocation when known).
    :param failure_dir: S3 URI of the failure directory, or ``None``.
    :param started_at: ISO-8601 time the first try started.
    :param next_index: the first item not submitted yet.
    :param pending: the items in flight.
    :param parts: how many ``ended/<n>.jsonl`` parts were written.
    :param submitted: InvokeEndpointAsync calls this batch made (over every try).
    :param resumed: items a retry found already ended in S3 and did not submit again.
    :param deferrals: how many times the task deferred.
    :param generation: which batch of the task instance this is (see :func:`batch_tag`).
    :param succeeded_try: the try number that ended this batch successfully, ``None`` until one did; a later try
        (a clear) starts the next generation unless ``rescore_on_clear=False``.
    :param sent_until: every item below it was handed to the submitting threads when the state was written; a try
        that dies after that write sent at most ``max_in_flight`` more (``None``: a state of an older version).
    :param recheck_until: items below it are looked up by LIST before they are sent (set by each new try: an
        earlier try may have sent them); above it nothing was ever sent. ``None``: look up every item (old states).
    :param max_in_flight: the ``max_in_flight`` of the try that wrote the state.
    :param timed_out: how many ended parts' items are ``TimedOut`` (a new try reads the parts to look them up
        again only when some are); ``None``: not counted (a state of an older version), read the parts.
    :param endpoint_instances_at_submit: the endpoint's instance count when the batch began, ``None`` if unknown.
    :param recheck_parts: the numbers of the ended parts a re-check wrote (items ``TimedOut`` in an earlier part,
        found since): a progress catch-up moves their items out of ``TimedOut`` instead of counting them again.
        At most one per try.
    """

    tag: str
    endpoint_name: str
    total: int
    output_dir: str
    failure_dir: str | None
    started_at: str
    next_index: int = 0
    pending: list[PendingItem] = field(default_factory=list)
    parts: int = 0
    submitted: int = 0
    resumed: int = 0
    deferrals: int = 0
    generation: int = 1
    succeeded_try: int | None = None
    sent_until: int | None = None
    recheck_until: int | None = None
    max_in_flight: int | None = None
    timed_out: int | None = None
    endpoint_instances_at_submit: int | None = None
    recheck_parts: list[int] = field(default_factory=list)

    def to_json(self) -> str:
        """Serialise as JSON (``state.json``)."""
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> BatchState:
        """
        Read ``state.json``.

        Each item in flight becomes a :class:`PendingItem` as soon as it is parsed (``object_hook``), so at
        100,000 items the parse never holds their dicts and their items at once (and a thread parsing it yields
        the GIL between items).
        """
        data: dict[str, Any] = json.loads(text, object_hook=_pending_item_or_dict)
        data["pending"] = data.get("pending", [])
        return cls(**data)

    @property
    def done(self) -> bool:
        """Every item was submitted and ended."""
        return self.next_index >= self.total and not self.pending

    def earliest_deadline(self) -> str | None:
        """Return the soonest deadline among the items in flight (ISO-8601), or ``None``."""
        return min((item.deadline for item in self.pending), default=None, key=datetime.fromisoformat)


def _pending_item_or_dict(value: dict[str, Any]) -> PendingItem | dict[str, Any]:
    """``json.loads``'s object hook for ``state.json``: an item in flight (it has ``inference_id``), else the dict."""
    return PendingItem(**value) if "inference_id" in value else value


def blocks(indexes: Iterable[int]) -> list[int]:
    """Return the sorted blocks (``index // 1000``) that hold ``indexes``."""
    return sorted({index // BLOCK_SIZE for index in indexes})


@dataclass(frozen=True)
class Found:
    """A result object seen by LIST or HEAD: which kind, where, and its LastModified (ISO-8601) if known."""

    status: InferenceStatus
    location: str
    completed_at: str | None


def reconcile(
    pending: list[PendingItem], found: dict[int, Found], now: datetime
) -> tuple[list[tuple[PendingItem, Found | None]], list[PendingItem]]:
    """
    Split the items in flight into those that ended and those still pending.

    An item ends when a result was found for it (an output wins over a failure), or, with none, when its
    deadline has passed (``Found`` is then ``None``: ``TimedOut``).

    :return: ``(ended, still_pending)``; ``ended`` pairs each item with what was found.
    """
    ended: list[tuple[PendingItem, Found | None]] = []
    still: list[PendingItem] = []
    for item in pending:
        result = found.get(item.index)
        if result is not None:
            ended.append((item, result))
        elif datetime.fromisoformat(item.deadline) <= now:
            ended.append((item, None))
        else:
            still.append(item)
    return ended, still


@dataclass(frozen=True)
class BlockListing:
    """
    One ``ListObjectsV2`` of a check: the results of a run of blocks with pending items, in one directory.

    :param status: what a key found here means (``Completed`` under the output dir, ``Failed`` under the failure dir).
    :param prefix: S3 URI prefix, ``<dir>/<tag>-<the digits that item first's and item last's Filenames share>``.
    :param start_after: S3 URI of the ``StartAfter`` key, ``<dir>/<tag>-<first:07d>``: every key of a lower item
        sorts before it, every key of item ``first`` after it (``…<first:07d>.out…`` is longer).
    :param first: the lowest pending index of the run.
    :param last: the highest pending index of the run; keys of higher items are not needed.
    """

    status: InferenceStatus
    prefix: str
    start_after: str
    first: int
    last: int

    @property
    def max_keys(self) -> int:
        """``MaxKeys``: one key per item from ``first`` to ``last``, at most 1,000 (a page)."""
        return min(BLOCK_SIZE, self.last - self.first + 1)

    def read_on(self, names: BatchNames, last_key: str | None) -> bool:
        """Tell whether a truncated answer whose last key is ``last_key`` (S3 URI) needs its next page."""
        index = names.index_of(last_key) if last_key else None
        return index is None or index <= self.last


def pending_runs(indexes: Iterable[int]) -> list[tuple[int, int]]:
    """Return ``(lowest, highest)`` pending index of each run of consecutive blocks holding ``indexes``, in order."""
    spans: dict[int, tuple[int, int]] = {}
    for index in indexes:
        block = index // BLOCK_SIZE
        low, high = spans.get(block, (index, index))
        spans[block] = (min(low, index), max(high, index))
    runs: list[tuple[int, int]] = []
    previous = None
    for block, (low, high) in sorted(spans.items()):
        if previous is not None and block == previous + 1:
            runs[-1] = (runs[-1][0], high)
        else:
            runs.append((low, high))
        previous = block
    return runs


def list_requests(names: BatchNames, indexes: Iterable[int]) -> list[BlockListing]:
    """
    Return the LISTs one check makes for ``indexes``: output then failure, per run of blocks (:class:`BlockListing`).

    A result found under an output prefix means ``Completed``, under a failure prefix ``Failed``. Each LIST
    reads only the keys from the run's lowest to its highest wanted index, never those of lower items.
    """
    dirs: list[tuple[InferenceStatus, str]] = [(COMPLETED, names.output_dir)]
    if names.failure_dir:
        dirs.append((FAILED, names.failure_dir))
    listings = []
    for first, last in pending_runs(indexes):
        low, high = f"{first:07d}", f"{last:07d}"
        shared = next((i for i, (a, b) in enumerate(zip(low, high, strict=True)) if a != b), len(low))
        for status, directory in dirs:
            prefix = join_s3(directory, f"{names.tag}-{low[:shared]}")
            listings.append(BlockListing(status, prefix, join_s3(directory, f"{names.tag}-{low}"), first, last))
    return listings


def read_listing(
    names: BatchNames, found: dict[int, Found], status: InferenceStatus, listing: Iterable[tuple[str, Any]]
) -> None:
    """Record every ``(S3 URI, LastModified)`` of a LIST answer that names an item (see :func:`merge_found`)."""
    for uri, modified in listing:
        merge_found(found, names.index_of(uri), Found(status, uri, last_modified_iso(modified)))


def head_requests(pending: Iterable[PendingItem], found: dict[int, Found]) -> list[PendingItem]:
    """Return the items whose failure object lies outside the LISTed prefixes and was not found yet: HEAD those."""
    return [item for item in pending if item.head_failure and item.failure_location and item.index not in found]


def merge_found(found: dict[int, Found], index: int | None, result: Found) -> None:
    """Record ``result`` for ``index`` unless an output was already found for it (an output wins)."""
    if index is None:
        return
    if index not in found or result.status == COMPLETED:
        found[index] = result


def summary_counts(lines: Iterable[ManifestLine]) -> dict[str, int]:
    """Count manifest lines by status (every status present, 0 when none)."""
    counts = {COMPLETED: 0, FAILED: 0, TIMED_OUT: 0}
    for line in lines:
        counts[line["status"]] += 1
    return counts


def last_modified_iso(value: Any) -> str | None:
    """Return an S3 LastModified (datetime) as ISO-8601, or ``None``."""
    return isoformat(value) if isinstance(value, datetime) else None
