"""
What the output and failure locations say: the one core of watching, with a thin synchronous shell.

SageMaker has no status API for asynchronous requests: completion shows only as an object at the
request's ``OutputLocation`` (success) or ``FailureLocation`` (model error). :class:`Watch` holds the
logic of one wait: which keys to HEAD, how to read each answer, when to look again (backoff with
jitter), when to give up (an absolute deadline), and which event ends the wait. It does no I/O itself.
Two thin shells feed it HEAD answers: :func:`watch_sync` here (operator with ``deferrable=False``,
sensor in poke mode) and :meth:`SageMakerAsyncInferenceTrigger.run` (aiobotocore, in the triggerer).

How HEAD answers are read (S3 HeadObject):

- 200: the object is there.
- 404: not there yet.
- 403: ambiguous. Without ``s3:ListBucket`` S3 answers 403 for a missing key, so it may mean "not
  there yet" or "no read access at all". The wait goes on; the log explains it once and the timeout
  error says so.
- 5xx, throttling (503 SlowDown), connection errors: transient; botocore has already retried them.
  The wait goes on at the next poll; they never end it.
- anything else (400, credentials missing, ...): not a state of the inference; raised as is.

**The safety checks' budget.** A wait woken by notifications (push) still checks S3 now and then, in case
a notification is lost: one location per check, output and failure in turn (:meth:`Watch.safety_targets`),
at an interval that grows to the safety ceiling ``max_poll_interval`` (default
:data:`DEFAULT_PUSH_MAX_POLL_INTERVAL`, 300 s). Each check is a HEAD, about 1 to 4 ms of the triggerer's CPU,
so their number, not the notifications, sets what 10,000 push waits cost. A :class:`SafetyBudget` per event
loop (one per triggerer) caps the loop's safety checks at ``checks_per_second`` (the deployment setting
``[sagemaker_async] safety_checks_per_second``, default :data:`DEFAULT_SAFETY_CHECKS_PER_SECOND`, 20): the
ceiling of each of the ``n`` push waits the loop holds becomes (:func:`safety_ceiling`)

.. code-block:: text

    ceiling(n) = max(max_poll_interval, n / (0.9 * checks_per_second))        (0.9: the mean jitter)

so with the defaults it stays 300 s up to 5,400 waits and grows beyond: 556 s at 10,000 waits, 5,556 s at
100,000 (at 20 HEADs per second in all). **Worst case for a lost notification**: the result is seen by the
next safety check of its location, at most two checks later, so within ``2 * ceiling(n)`` after it was
written (600 s up to 5,400 waits at the defaults, 1,111 s at 10,000, ``n / 9`` s beyond 5,400) -- latency,
never the outcome, and never past the deadline, which ends the wait with its own check. While the queue
fails, the waits poll at ``min(max_poll_interval, 30 s)``, outside the budget (as without a queue).
"""

from __future__ import annotations

import enum
import hashlib
import logging
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotocoreConnectionError

from airflow_sagemaker_async.common.records import COMPLETED, FAILED, TIMED_OUT, WatchEvent
from airflow_sagemaker_async.common.validation import parse_s3_uri

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_sagemaker_async.common.records import InferenceStatus

#: Seconds before the first check; the interval then grows by :data:`BACKOFF_FACTOR` per poll.
DEFAULT_POLL_INTERVAL: Final = 2.0
#: Ceiling of the poll interval, seconds.
DEFAULT_MAX_POLL_INTERVAL: Final = 30.0
#: Ceiling of the poll interval when a notification queue wakes the wait (safety polling), seconds; stretched
#: by the loop's :class:`SafetyBudget` when it holds many waits. While the queue fails, the ceiling is
#: ``min(max_poll_interval, DEFAULT_MAX_POLL_INTERVAL)``.
DEFAULT_PUSH_MAX_POLL_INTERVAL: Final = 300.0
BACKOFF_FACTOR: Final = 1.5
#: Each interval is drawn uniformly from [JITTER_LOW * interval, interval] so triggers started
#: together drift apart instead of polling S3 in lockstep.
JITTER_LOW: Final = 0.8
#: The mean of a jittered interval, as a fraction of the interval (uniform on [JITTER_LOW, 1]).
MEAN_JITTER: Final = (JITTER_LOW + 1.0) / 2
#: Cap on the safety checks (HEADs) per second one event loop makes for all the push waits it holds, when
#: ``[sagemaker_async] safety_checks_per_second`` says nothing: see :class:`SafetyBudget`.
DEFAULT_SAFETY_CHECKS_PER_SECOND: Final = 20.0
EXPIRY_HINT: Final = (
    "SageMaker writes no S3 object for a request that expired in its queue (older than "
    "RequestTTLSeconds, e.g. while the endpoint scaled up from zero), so an expired request shows only "
    "as this timeout; check the endpoint's ExpiredRequests CloudWatch metric or its SNS error topic."
)
FORBIDDEN_HINT: Final = (
    "S3 answered 403 (Forbidden) to HeadObject. Without s3:ListBucket on the bucket S3 answers 403 "
    "instead of 404 for a key that does not exist yet, so the wait goes on; if the role lacks "
    "s3:GetObject the result can never be seen. Grant s3:ListBucket on the bucket and s3:GetObject on "
    "the output and failure prefixes."
)


def utcnow() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(UTC)


def isoformat(moment: datetime) -> str:
    """Format an aware datetime as ISO-8601 UTC, e.g. ``2026-11-21T06:00:00.123456+00:00``."""
    return moment.astimezone(UTC).isoformat()


class Probe(enum.Enum):
    """How one HEAD answer reads."""

    FOUND = "found"
    ABSENT = "absent"
    FORBIDDEN = "forbidden"
    TRANSIENT = "transient"


@dataclass(frozen=True)
class ProbeResult:
    """One HEAD answer: its reading, the object's LastModified when found, the error when not."""

    probe: Probe
    last_modified: datetime | None = None
    error: BaseException | None = None


@dataclass(frozen=True)
class Target:
    """One location to HEAD: ``kind`` is ``"output"`` or ``"failure"``."""

    kind: str
    uri: str
    bucket: str
    key: str


def read_head_error(error: Exception) -> ProbeResult:
    """
    Read a HeadObject error as a :class:`ProbeResult`.

    :raises Exception: ``error`` itself when it says nothing about the inference (400, credentials, ...).
    """
    if isinstance(error, ClientError):
        meta = error.response.get("ResponseMetadata", {})
        status = int(meta.get("HTTPStatusCode") or 0)
        code = str(error.response.get("Error", {}).get("Code", ""))
        if status == 404 or code in {"404", "NoSuchKey", "NotFound"}:
            return ProbeResult(Probe.ABSENT)
        if status == 403 or code in {"403", "AccessDenied", "Forbidden"}:
            return ProbeResult(Probe.FORBIDDEN, error=error)
        if status >= 500 or status == 429 or code in {"SlowDown", "Throttling", "ThrottlingException"}:
            return ProbeResult(Probe.TRANSIENT, error=error)
        raise error
    if isinstance(error, (BotocoreConnectionError, HTTPClientError, OSError, TimeoutError)):
        return ProbeResult(Probe.TRANSIENT, error=error)
    raise error


def read_head_response(response: dict[str, Any]) -> ProbeResult:
    """Read a successful HeadObject response as ``FOUND``."""
    return ProbeResult(Probe.FOUND, last_modified=response.get("LastModified"))


@dataclass
class PollSchedule:
    """
    When to look again: backoff with seeded jitter up to a ceiling, never past a deadline; no I/O.

    :param seed: text the jitter is seeded from (a request's or a batch's identity, never the clock), so a
        rebuilt trigger keeps its rhythm and two waits get different ones.
    :param deadline: aware datetime; :meth:`next_delay` answers ``None`` once it has passed.
    :param poll_interval: seconds before the first re-check.
    :param max_poll_interval: ceiling of the interval, seconds.
    """

    seed: str
    deadline: datetime
    poll_interval: float
    max_poll_interval: float
    _interval: float = field(init=False)
    _random: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self._interval = self.poll_interval
        self._random = random.Random(hashlib.sha256(self.seed.encode()).digest())  # noqa: S311 - jitter

    def next_delay(self, now: datetime | None = None) -> float | None:
        """
        Return the seconds to sleep before the next check, or ``None`` if the deadline has passed.

        The interval starts at ``poll_interval``, grows by :data:`BACKOFF_FACTOR` per call up to
        ``max_poll_interval``, is jittered down by up to 20 %, and never sleeps past the deadline (so
        the last check happens at the deadline).
        """
        remaining = (self.deadline - (now or utcnow())).total_seconds()
        if remaining <= 0:
            return None
        delay = self._interval * self._random.uniform(JITTER_LOW, 1.0)
        self._interval = min(self._interval * BACKOFF_FACTOR, self.max_poll_interval)
        return min(delay, remaining)

    def set_ceiling(self, max_poll_interval: float) -> None:
        """Change the ceiling (seconds); the current interval is lowered to it if above."""
        self.max_poll_interval = max_poll_interval
        self._interval = min(self._interval, max_poll_interval)


def safety_ceiling(base: float, waits: int, checks_per_second: float) -> float:
    """
    Return the safety ceiling, seconds, of each of ``waits`` push waits that share ``checks_per_second``.

    ``max(base, waits / (MEAN_JITTER * checks_per_second))``: a wait at its ceiling checks once per
    ``MEAN_JITTER * ceiling`` seconds on average (one HEAD: :meth:`Watch.safety_targets`), so the waits together
    make at most ``checks_per_second`` HEADs per second; with few waits the ceiling stays ``base``.

    :param base: the wait's own ceiling (its ``max_poll_interval``: 300 s by default with a queue), seconds.
    :param waits: the push waits the event loop holds, this one included.
    :param checks_per_second: the loop's cap, > 0 (``math.inf``: no cap, the ceiling stays ``base``).
    """
    return max(base, waits / (MEAN_JITTER * checks_per_second))


class SafetyBudget:
    """
    One event loop's budget of safety checks: counts the push waits it holds and stretches their ceiling; no I/O.

    A wait calls :meth:`join` while notifications can wake it and :meth:`leave` when it ends; before each
    sleep it sets its ceiling to :meth:`ceiling`. The loop's safety checks then stay under
    ``checks_per_second`` HEADs per second whatever the number of waits, once their intervals have reached the
    ceiling (an interval grows 1.5x per check; a sleep already started is not shortened when waits leave).
    The cost, latency for a lost notification, is in the module docstring.

    :param checks_per_second: the cap, HEADs per second, > 0 (``math.inf``: no cap); default
        :data:`DEFAULT_SAFETY_CHECKS_PER_SECOND`.
    :raises ValueError: when ``checks_per_second`` is not a number > 0.
    """

    def __init__(self, checks_per_second: float = DEFAULT_SAFETY_CHECKS_PER_SECOND) -> None:
        if not checks_per_second > 0:  # also refuses NaN
            raise ValueError(
                f"safety_checks_per_second must be > 0 (HEADs per second of one triggerer's safety checks), got "
                f"{checks_per_second!r}; set [sagemaker_async] safety_checks_per_second to a positive number, or "
                "inf for no cap."
            )
        self.checks_per_second = float(checks_per_second)
        self.waits = 0

    def join(self) -> None:
        """Count one more push wait."""
        self.waits += 1

    def leave(self) -> None:
        """Count one push wait less."""
        self.waits = max(0, self.waits - 1)

    def ceiling(self, base: float) -> float:
        """Return the safety ceiling, seconds, for a wait whose own ceiling is ``base`` (:func:`safety_ceiling`)."""
        return safety_ceiling(base, max(self.waits, 1), self.checks_per_second)


@dataclass
class Watch:
    """
    The state of one wait for an asynchronous inference; no I/O.

    A shell asks :meth:`targets` what to HEAD, feeds each answer to :meth:`observe` (which returns the
    final event once an object is found), and asks :meth:`next_delay` how long to sleep (``None`` once
    the deadline has passed, then :meth:`timeout_event` ends the wait).

    :param inference_id: the request's InferenceId, for messages.
    :param output_location: S3 URI from InvokeEndpointAsync's ``OutputLocation``.
    :param failure_location: S3 URI from ``FailureLocation``, or ``None`` (endpoint without S3FailurePath).
    :param deadline: aware datetime after which the wait ends with a timeout.
    :param poll_interval: seconds before the first re-check, default 2.
    :param max_poll_interval: ceiling of the interval in seconds, default 30.
    :param log: where the 403 explanation and transient errors are logged.
    :param endpoint_name: the endpoint, echoed in the events (for the outcome), default ``None``.
    :param submitted_at: ISO-8601 time of submission, echoed in the events, default ``None``.
    :param endpoint_instances_at_submit: the endpoint's instance count at submission
        (:mod:`~airflow_sagemaker_async.common.capacity`), echoed in the events when known, default ``None``.
    :param not_before: aware datetime before which a final event is held back (the fast-event guard of a
        deferred wait, see :mod:`airflow_sagemaker_async.inference.waiting`), default ``None`` (never held).
    """

    inference_id: str
    output_location: str
    failure_location: str | None
    deadline: datetime
    poll_interval: float = DEFAULT_POLL_INTERVAL
    max_poll_interval: float = DEFAULT_MAX_POLL_INTERVAL
    log: logging.Logger | Any = field(default_factory=lambda: logging.getLogger(__name__))
    endpoint_name: str | None = None
    submitted_at: str | None = None
    not_before: datetime | None = None
    endpoint_instances_at_submit: int | None = None
    checks: int = 0
    forbidden_seen: bool = False
    transient_errors: int = 0
    safety_checks: int = 0
    _schedule: PollSchedule = field(init=False)
    _targets: tuple[Target, ...] = field(init=False)

    def __post_init__(self) -> None:
        # Seeded from the request, not the clock: a rebuilt trigger keeps its own rhythm.
        self._schedule = PollSchedule(
            f"{self.inference_id}\n{self.output_location}", self.deadline, self.poll_interval, self.max_poll_interval
        )
        targets = [("output", self.output_location)]
        if self.failure_location:
            targets.append(("failure", self.failure_location))
        self._targets = tuple(Target(kind, uri, *parse_s3_uri(uri, f"{kind}_location")) for kind, uri in targets)

    @property
    def targets(self) -> tuple[Target, ...]:
        """The locations to HEAD, output first."""
        return self._targets

    def safety_targets(self) -> tuple[Target, ...]:
        """
        Return the one location a safety check looks at while notifications arrive: output, failure, output ...

        With push healthy, a notification ends the wait and the safety checks only cover a lost one: each
        location is still looked at every other check, for half the HEADs. (A check counts once in ``checks``.)
        """
        target = self._targets[self.safety_checks % len(self._targets)]
        self.safety_checks += 1
        if target is not self._targets[0]:
            self.checks += 1  # observe() counts a check at the output's HEAD
        return (target,)

    def observe(self, target: Target, result: ProbeResult) -> WatchEvent | None:
        """Take one HEAD answer; return the final :class:`~.records.WatchEvent` if it ends the wait, else ``None``."""
        if target is self._targets[0]:
            self.checks += 1
        if result.probe is Probe.FOUND:
            completed = isoformat(result.last_modified) if result.last_modified else None
            return self._event(COMPLETED if target.kind == "output" else FAILED, target.uri, completed)
        if result.probe is Probe.FORBIDDEN and not self.forbidden_seen:
            self.forbidden_seen = True
            self.log.warning("Inference %s: %s (location %s)", self.inference_id, FORBIDDEN_HINT, target.uri)
        elif result.probe is Probe.TRANSIENT:
            self.transient_errors += 1
            if self.transient_errors == 1 or self.transient_errors % 10 == 0:
                self.log.warning(
                    "Inference %s: transient error #%d while checking %s, the wait goes on: %r",
                    self.inference_id,
                    self.transient_errors,
                    target.uri,
                    result.error,
                )
        return None

    def next_delay(self, now: datetime | None = None) -> float | None:
        """Return the seconds to sleep before the next check, or ``None`` past the deadline (:class:`PollSchedule`)."""
        return self._schedule.next_delay(now)

    def hold(self, now: datetime | None = None) -> float:
        """Return the seconds a final event must still be held back (0 once ``not_before`` has passed)."""
        if self.not_before is None:
            return 0.0
        return max(0.0, (self.not_before - (now or utcnow())).total_seconds())

    def timeout_event(self) -> WatchEvent:
        """Return the event that ends the wait at the deadline (``status`` ``TimedOut``)."""
        return self._event(TIMED_OUT, None, None)

    def expired_event(self) -> WatchEvent:
        """
        Return the event that ends the wait on SageMaker's ``Expired`` notification (``TimedOut``, ``expired``).

        Trusted without S3 (nothing is written for an expired request): see
        :mod:`airflow_sagemaker_async.push.notifications`.
        """
        return self._event(TIMED_OUT, None, None, expired=True)

    def set_ceiling(self, max_poll_interval: float) -> None:
        """Change the ceiling of the interval (push healthy or not); the current interval never exceeds it."""
        self.max_poll_interval = max_poll_interval
        self._schedule.set_ceiling(max_poll_interval)

    def _event(
        self, status: InferenceStatus, location: str | None, completed_at: str | None, *, expired: bool = False
    ) -> WatchEvent:
        event: WatchEvent = {
            "status": status,
            "inference_id": self.inference_id,
            "endpoint_name": self.endpoint_name,
            "submitted_at": self.submitted_at,
            "output_location": self.output_location,
            "failure_location": self.failure_location,
            "location": location,
            "completed_at": completed_at,
            "detected_at": isoformat(utcnow()),
            "deadline": isoformat(self.deadline),
            "checks": self.checks,
            "s3_forbidden": self.forbidden_seen,
            "expired": expired,
        }
        if self.endpoint_instances_at_submit is not None:
            event["endpoint_instances_at_submit"] = self.endpoint_instances_at_submit
        return event


def head_sync(client: Any, target: Target) -> ProbeResult:
    """HEAD ``target`` with a boto3 S3 client and read the answer (never raises for 403/404/5xx)."""
    try:
        return read_head_response(client.head_object(Bucket=target.bucket, Key=target.key))
    except Exception as error:
        return read_head_error(error)


def check_sync(watch: Watch, client: Any) -> WatchEvent | None:
    """Run one check of both locations with a boto3 S3 client; return the final event or ``None``."""
    for target in watch.targets:
        event = watch.observe(target, head_sync(client, target))
        if event is not None:
            return event
    return None


def watch_sync(watch: Watch, client: Any, sleep: Callable[[float], None] = time.sleep) -> WatchEvent:
    """
    Wait on the worker until an object appears or the deadline passes; return the final event.

    :param watch: the wait's state.
    :param client: a boto3 S3 client (``S3Hook(...).conn``).
    :param sleep: how to wait, default :func:`time.sleep`.
    """
    while True:
        event = check_sync(watch, client)
        if event is not None:
            return event
        delay = watch.next_delay()
        if delay is None:
            return watch.timeout_event()
        sleep(delay)
