"""
A batch's progress as a person reads it: counts by status, rate, ETA, a bounded time series; no I/O.

The worker keeps one :class:`Progress` per try, adds the manifest lines of each ended part it writes
(:meth:`Progress.add`), and writes it to ``<state dir>/progress.json`` (:func:`progress_location`) at most once
every :data:`WRITE_EVERY_SECONDS` while it runs, before each deferral and at the end (the writes are in
:mod:`~airflow_sagemaker_async.batch.state`). A resumed try reads it back and counts the ended parts written since
(``parts``), so the figures survive every deferral and a worker that died between a part and its progress write.
Only the worker writes it: the trigger never writes to S3.

The record is bounded whatever the number of items: counts, at most :data:`MAX_POINTS` time points
(``[unix seconds, Completed, Failed, TimedOut]``, cumulative; every other point is dropped when full, the first
and the last kept), the first :data:`MAX_FAILURES` failure reasons (:data:`MAX_REASON_CHARS` characters each).
About 10 KB at most. The UI page (:mod:`airflow_sagemaker_async.ui`) draws it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from airflow_sagemaker_async.common.layout import join_s3
from airflow_sagemaker_async.common.records import COMPLETED, FAILED, TIMED_OUT

if TYPE_CHECKING:
    from collections.abc import Iterable

    from airflow_sagemaker_async.batch.core import BatchNames, BatchState
    from airflow_sagemaker_async.common.records import ManifestLine

__all__ = [
    "MAX_FAILURES",
    "MAX_POINTS",
    "PROGRESS_FILE",
    "WRITE_EVERY_SECONDS",
    "Progress",
    "progress_location",
    "thin",
]

#: The object's name under the batch's state directory.
PROGRESS_FILE: Final = "progress.json"
#: At most this many time points are kept; when full, every other one is dropped (first and last kept).
MAX_POINTS: Final = 240
#: The first failure reasons kept (item, InferenceId, reason).
MAX_FAILURES: Final = 5
#: Characters kept of each failure reason.
MAX_REASON_CHARS: Final = 300
#: The worker writes ``progress.json`` at most this often while it runs (seconds); deferrals and the end always.
WRITE_EVERY_SECONDS: Final = 5.0
#: The rate is measured over the points of the last this many seconds (or the two last points, if further apart).
RATE_WINDOW_SECONDS: Final = 120.0
#: Statuses counted, in the order of each point's columns.
STATUSES: Final = (COMPLETED, FAILED, TIMED_OUT)
#: ``status`` while the batch runs / once its manifest is written.
RUNNING: Final = "running"
ENDED: Final = "ended"


def progress_location(names: BatchNames) -> str:
    """Return the S3 URI of ``progress.json``: ``<output dir>/<tag>.batch/progress.json``."""
    return join_s3(names.state_dir(), PROGRESS_FILE)


def thin(points: list[list[float]], limit: int = MAX_POINTS) -> list[list[float]]:
    """
    Return ``points`` with at most ``limit`` entries: while too many, drop every other one, keep first and last.

    Repeated halving keeps the series evenly spread over the batch's whole life, whatever its length.
    """
    if limit < 2:
        raise ValueError(f"limit={limit!r} is invalid: a series needs at least 2 points")
    while len(points) > limit:
        points = [*points[:-1:2], points[-1]]
    return points


@dataclass
class Progress:
    """
    The content of ``progress.json`` (version 1).

    :param batch_tag: the batch tag.
    :param endpoint_name: the endpoint.
    :param total: items in the batch.
    :param started_at: ISO-8601 time the batch's first try started.
    :param counts: items ended, by status (``Completed``, ``Failed``, ``TimedOut``).
    :param in_flight: items submitted and not ended at the last update.
    :param parts: ended parts (``ended/<n>.jsonl``) counted so far; a resume counts those written since.
    :param points: ``[unix seconds, Completed, Failed, TimedOut]`` (cumulative), at most :data:`MAX_POINTS`.
    :param failures: the first :data:`MAX_FAILURES` failed items: ``{"item", "inference_id", "status", "reason"}``.
    :param manifest_location: S3 URI of the manifest, once written.
    :param status: ``running`` or ``ended``.
    :param updated_at: ISO-8601 time of the last update.
    :param rate: items ended per second over the last :data:`RATE_WINDOW_SECONDS`, ``None`` before two points.
    :param eta_seconds: seconds until every item has ended at that rate, ``None`` when unknown; 0 once ended.
    """

    batch_tag: str
    endpoint_name: str
    total: int
    started_at: str
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    in_flight: int = 0
    parts: int = 0
    points: list[list[float]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    manifest_location: str | None = None
    status: str = RUNNING
    updated_at: str | None = None
    rate: float | None = None
    eta_seconds: float | None = None
    version: int = 1

    @classmethod
    def of(cls, state: BatchState) -> Progress:
        """Return the progress of a batch nothing has been counted of yet."""
        return cls(
            batch_tag=state.tag, endpoint_name=state.endpoint_name, total=state.total, started_at=state.started_at
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Progress:
        """Read ``progress.json``; unknown keys (a later version's) are ignored."""
        data: dict[str, Any] = json.loads(text)
        known = {name for name in cls.__dataclass_fields__}
        return cls(**{key: value for key, value in data.items() if key in known})

    def to_json(self) -> str:
        """Serialise as compact JSON."""
        return json.dumps(asdict(self), separators=(",", ":"))

    @property
    def ended(self) -> int:
        """Items ended, whatever their status."""
        return sum(self.counts.values())

    @property
    def not_submitted(self) -> int:
        """Items neither ended nor in flight."""
        return max(0, self.total - self.ended - self.in_flight)

    def add(self, lines: Iterable[ManifestLine], *, parts: int | None = None, replacing: str | None = None) -> None:
        """
        Count the manifest lines of an ended part.

        :param parts: the state's ``parts`` once this part is written (what a resume compares with).
        :param replacing: the status these items had before (``TimedOut`` when a new try found their result
            since): it is decremented as each line is counted.
        """
        for line in lines:
            status = line["status"]
            self.counts[status] = self.counts.get(status, 0) + 1
            if replacing is not None:
                self.counts[replacing] = max(0, self.counts.get(replacing, 0) - 1)
            if status != COMPLETED and len(self.failures) < MAX_FAILURES:
                reason = line.get("failure_reason") or ("no result before the deadline" if status == TIMED_OUT else "")
                self.failures.append(
                    {
                        "item": line["item"],
                        "inference_id": line["inference_id"],
                        "status": status,
                        "reason": reason[:MAX_REASON_CHARS],
                    }
                )
        if parts is not None:
            self.parts = max(self.parts, parts)

    def mark(self, now: float, *, in_flight: int, manifest_location: str | None = None) -> None:
        """
        Record a time point at ``now`` (unix seconds) and update the rate and the ETA.

        :param in_flight: items submitted and not ended.
        :param manifest_location: the manifest's S3 URI: the batch has ended.
        """
        self.in_flight = in_flight
        point = [round(now, 3), *(self.counts.get(status, 0) for status in STATUSES)]
        if (
            self.points
            and self.points[-1][1:] == point[1:]
            and len(self.points) > 1
            and self.points[-2][1:] == point[1:]
        ):
            self.points[-1] = point  # a flat stretch: move its end instead of adding points
        else:
            self.points.append(point)
        self.points = thin(self.points)
        self.rate = rate(self.points)
        if manifest_location is not None:
            self.manifest_location, self.status, self.eta_seconds = manifest_location, ENDED, 0.0
        else:
            left = self.total - self.ended
            self.eta_seconds = round(left / self.rate, 1) if self.rate else None
        self.updated_at = datetime.fromtimestamp(now, UTC).isoformat()

    def figures(self) -> str:
        """Return the one-line figures the worker logs: ended by status, in flight, not sent, rate, ETA."""
        rate_text = f"{self.rate:.2f} items/s" if self.rate is not None else "rate unknown yet"
        eta = "ETA unknown" if self.eta_seconds is None else f"ETA {_duration(self.eta_seconds)}"
        counts = ", ".join(f"{self.counts.get(status, 0)} {status}" for status in STATUSES)
        return (
            f"{self.ended} of {self.total} ended ({counts}), {self.in_flight} in flight, "
            f"{self.not_submitted} not sent; {rate_text}, {eta}"
        )


def rate(points: list[list[float]], window: float = RATE_WINDOW_SECONDS) -> float | None:
    """
    Return items ended per second between the last point and the oldest one within ``window`` seconds of it.

    When no earlier point lies within the window, the point just before the last is used (a long deferral).
    ``None`` with fewer than two points or no time between them.
    """
    if len(points) < 2:
        return None
    last = points[-1]
    first = points[-2]
    for point in reversed(points[:-1]):
        if last[0] - point[0] > window:
            break
        first = point
    seconds = last[0] - first[0]
    if seconds <= 0:
        return None
    return round((sum(last[1:]) - sum(first[1:])) / seconds, 3)


def _duration(seconds: float) -> str:
    hours, rest = divmod(round(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"
