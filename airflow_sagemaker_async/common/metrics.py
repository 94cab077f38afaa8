"""
The package's metrics: every name, in one place, emitted through Airflow's own ``Stats``.

Airflow sends them where the deployment sends its own metrics (``[metrics]``: StatsD, StatsD with Datadog or
InfluxDB tags, or OpenTelemetry); nothing is sent when metrics are off. The full table, with the tags and when
each is emitted, is ``docs/reference/metrics.md``.

**Names.** Every name starts with :data:`PREFIX` (``sagemaker_async.``). Airflow's client puts its own
``[metrics] statsd_prefix`` (or ``otel_prefix``; default ``airflow``) in front of every name, its own and
ours, so on the wire a name reads ``airflow.sagemaker_async.outcomes.Completed``. No name of Airflow's
starts with ``sagemaker_async`` (a test checks Airflow's metrics registry), so none collides.

**Tags.** Every metric is also sent with tags (``status``, ``kind``, ``endpoint_name``, ...). Airflow passes
them on with ``statsd_datadog_enabled`` (Datadog tags), ``statsd_influxdb_enabled`` (``,key=value`` appended to
the name) and OpenTelemetry (attributes); plain StatsD drops them. So the one dimension that matters for each
metric (a status, a fate, a kind: small fixed sets) is also the last part of its name, which plain StatsD
keeps; the rest (the endpoint) is in the tags only, to keep names few.

**Never in the way of a wait.** Each function here catches everything and logs it once per process (a metric
is never worth a failed task or a dead trigger). A send is one UDP datagram (StatsD) or an in-memory
update (OpenTelemetry). The slow steps, once per process (building Airflow's client, its host name resolved;
in 3.3 parsing Airflow's metrics registry, a YAML file), are done off the event loop by :func:`holding_wait`
at the start of each trigger, before a trigger emits anything else.

**Which ``Stats``.** Airflow keeps two: the task SDK's (``airflow.sdk.observability.stats``, set up by the
task runner on the worker) and airflow-core's (set up by the scheduler, the triggerer, ...). In 3.2 the
triggerer sets up only the core one, so the SDK one is silent there (apache/airflow#69172, fix proposed in
#69270; 3.3 happens to set the SDK one up in every process, when ``airflow.sdk.serde`` is imported).
:func:`stats` takes airflow-core's where an Airflow component set it up (so a trigger uses the client the
triggerer built, not a second one), else the task SDK's where the task runner did, and when neither was (a
script, a test), sets up the task SDK's from ``[metrics]`` as the task runner does. That reads private attributes
of Airflow's stats modules (which changed between 3.2 and 3.3); if they change again, the metrics go
silent, never the tasks.

The I/O-free cores (``watch``, ``notifications``, ``batch/core``) emit nothing: the shells do (the operators,
``inference/waiting`` for outcomes, the triggers, the receiver).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Literal

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

__all__ = [
    "BATCH_ITEMS",
    "DETECTION_LATENCY",
    "NOTIFICATIONS",
    "OUTCOMES",
    "PREFIX",
    "S3_REQUESTS",
    "SUBMISSIONS",
    "SUBMIT_TO_OUTCOME",
    "WAITS_HELD",
    "batch_items_ended",
    "holding_wait",
    "inference_ended",
    "notification",
    "notification_fate",
    "s3_request",
    "stats",
    "submitted",
]

log = logging.getLogger(__name__)

#: The first part of every name (Airflow's ``statsd_prefix`` goes in front of it on the wire).
PREFIX: Final = "sagemaker_async"

#: Counter, ``.<kind>``: InvokeEndpoint* calls made by the operators (``async``, ``batch``, ``realtime``,
#: ``streaming``); a batch wave counts its items. Tags ``kind``, ``endpoint_name``.
SUBMISSIONS: Final = f"{PREFIX}.submissions"
#: Counter, ``.head`` / ``.list``: S3 requests made by the triggers (the triggerer's S3 load). Tag ``kind``
#: (``inference``, ``batch``).
S3_REQUESTS: Final = f"{PREFIX}.s3_requests"
#: Counter, ``.<fate>``: SQS messages the notification receiver took, by fate (:func:`notification_fate`).
#: A message handed back and received again counts again. Tag ``fate``.
NOTIFICATIONS: Final = f"{PREFIX}.notifications"
#: Counter, ``.<status>``: inferences that ended (``Completed``, ``Failed``, ``TimedOut``), on the worker,
#: once per finished wait of the async operator or the sensor. Tags ``status``, ``kind``, ``endpoint_name``.
OUTCOMES: Final = f"{PREFIX}.outcomes"
#: Counter, ``.<status>``: batch items that ended, by status, counted by the batch operator. Tags ``status``,
#: ``endpoint_name``.
BATCH_ITEMS: Final = f"{PREFIX}.batch_items"
#: Gauge, ``.<hostname>``: waits (trigger runs of this package) the triggerer on that host holds now. Tag
#: ``hostname``.
WAITS_HELD: Final = f"{PREFIX}.waits_held"
#: Timer (ms): from the result object's LastModified to when a check saw it (HeadObject's Last-Modified is in
#: whole seconds: up to 1 s high). Tags ``status``, ``kind``, ``endpoint_name``.
DETECTION_LATENCY: Final = f"{PREFIX}.detection_latency"
#: Timer (ms), ``.<status>``: from InvokeEndpointAsync's answer to when the wait saw the result (or gave up).
#: Tags ``status``, ``kind``, ``endpoint_name``.
SUBMIT_TO_OUTCOME: Final = f"{PREFIX}.submit_to_outcome"

SubmissionKind = Literal["async", "batch", "realtime", "streaming"]
Fate = Literal["routed", "not_ours", "stale", "malformed", "ignored"]


@dataclass
class _Process:
    """What this module keeps per process."""

    #: the Stats chosen, for which pid (re-chosen after a fork: the triggerer forks its trigger runner).
    pid: int | None = None
    chosen: Any = None
    #: what failed once already (logged once).
    reported: set[str] = field(default_factory=set)
    #: waits held now (:func:`holding_wait`), and this host's name.
    held: int = 0
    hostname: str | None = None


_process = _Process()


def _report_once(what: str, error: BaseException) -> None:
    if what not in _process.reported:
        _process.reported.add(what)
        log.warning("Metric %s not sent (%s: %s); metrics go on without it", what, type(error).__name__, error)


def _factory_of(module: Any) -> Any:
    if hasattr(module, "_factory"):  # Airflow 3.3 / task SDK 1.3: module-level state
        return module._factory
    return vars(module.Stats).get("factory")  # Airflow 3.2 / task SDK 1.2: set on the Stats class


def _set_up(module: Any) -> bool:
    factory = _factory_of(module)
    return factory is not None and getattr(factory, "__name__", "") != "NoStatsLogger"


def _choose() -> Any:
    with contextlib.suppress(ImportError):
        core = importlib.import_module("airflow._shared.observability.metrics.stats")
        if _set_up(core):  # the triggerer, the scheduler, the executors (apache/airflow#69172)
            return core.Stats
    sdk = importlib.import_module("airflow.sdk._shared.observability.metrics.stats")
    if _set_up(sdk):  # the task runner
        return sdk.Stats
    # Nobody set metrics up in this process: the task SDK's Stats from [metrics], as the task runner does.
    from airflow.sdk.observability.metrics import stats_utils

    get_stats_factory: Any = stats_utils.get_stats_factory
    try:
        factory = get_stats_factory()
    except TypeError:  # task SDK 1.2 takes the Stats class
        factory = get_stats_factory(sdk.Stats)
    if hasattr(sdk, "initialize"):
        sdk.initialize(factory=factory, export_legacy_names=False)
    else:
        sdk.Stats.initialize(factory=factory)
    return sdk.Stats


def stats() -> Any:
    """
    Return Airflow's ``Stats`` this process emits through (see the module doc); chosen once per process.

    :raises ImportError: no Airflow task SDK (the functions below catch it).
    """
    pid = os.getpid()
    if _process.pid != pid:
        _process.chosen = _choose()
        _process.pid = pid
    return _process.chosen


def _warm_up() -> None:
    chosen = stats()
    # Build the backend now (Airflow 3.3: _get_backend; 3.2: any attribute of the Stats class does it), and
    # 3.3's registry of Airflow's own names, which each emit looks ours up in: its first use parses a YAML
    # file (~0.1 s of CPU, more on a loaded machine), which must not happen on the event loop.
    module = importlib.import_module(chosen.__module__)
    if hasattr(module, "_get_registry"):
        module._get_registry()
    if hasattr(module, "_get_backend"):
        module._get_backend()
    else:
        getattr(chosen, "incr")  # noqa: B009 (the metaclass builds the backend on attribute access)


def _incr(name: str, count: int, tags: dict[str, Any]) -> None:
    try:
        stats().incr(name, count=count, tags=tags)
    except Exception as error:
        _report_once(name, error)


def _timing(name: str, delta: timedelta, tags: dict[str, Any]) -> None:
    try:
        stats().timing(name, max(delta, timedelta(0)), tags=tags)
    except Exception as error:
        _report_once(name, error)


def _tags(**tags: Any) -> dict[str, Any]:
    return {key: value for key, value in tags.items() if value is not None}


def submitted(kind: SubmissionKind, *, endpoint_name: str, count: int = 1) -> None:
    """
    Count InvokeEndpoint* calls an operator made: :data:`SUBMISSIONS` ``.<kind>``.

    :param kind: ``async`` (the async operator), ``batch`` (the batch operator), ``realtime``, ``streaming``.
    :param endpoint_name: the endpoint invoked (tag).
    :param count: calls made, default 1 (a batch wave: its items).
    """
    if count > 0:
        _incr(f"{SUBMISSIONS}.{kind}", count, _tags(kind=kind, endpoint_name=endpoint_name))


def s3_request(operation: Literal["head", "list"], *, kind: Literal["inference", "batch"]) -> None:
    """
    Count one S3 request a trigger made: :data:`S3_REQUESTS` ``.head`` (HeadObject) or ``.list`` (ListObjectsV2).

    :param kind: the trigger: ``inference`` (also the sensor's) or ``batch``.
    """
    _incr(f"{S3_REQUESTS}.{operation}", 1, {"kind": kind})


def notification_fate(parsed: object, *, routed: bool, deleted: bool) -> Fate:
    """
    Return the fate of one received SQS message, as :data:`NOTIFICATIONS` names it.

    ``routed`` (it woke a wait here), ``not_ours`` (a SageMaker notification for no wait here, handed back to
    the other triggerers), ``stale`` (for no wait here, and too old to keep: deleted), ``malformed`` (not a
    SageMaker notification), ``ignored`` (SageMaker's ``TestNotification``, deleted).

    :param parsed: what :func:`airflow_sagemaker_async.push.notifications.parse_message` made of it: a
        ``Notification``, ``Malformed`` or ``Ignored`` (told apart by class name: this module imports no other).
    :param routed: it woke at least one wait.
    :param deleted: the receiver deletes it.
    """
    kind = type(parsed).__name__
    if kind == "Malformed":
        return "malformed"
    if kind == "Ignored":
        return "ignored"
    if routed:
        return "routed"
    return "stale" if deleted else "not_ours"


def notification(fate: Fate) -> None:
    """Count one message the receiver took: :data:`NOTIFICATIONS` ``.<fate>`` (see :func:`notification_fate`)."""
    _incr(f"{NOTIFICATIONS}.{fate}", 1, {"fate": fate})


def _parse(moment: str | None) -> datetime | None:
    if not moment:
        return None
    try:
        return datetime.fromisoformat(moment)
    except ValueError:
        return None


def inference_ended(outcome: Mapping[str, Any], *, kind: Literal["operator", "sensor"]) -> None:
    """
    Emit the end of one wait, on the worker: its outcome, and how long it took.

    :data:`OUTCOMES` ``.<status>``, :data:`SUBMIT_TO_OUTCOME` ``.<status>`` (when the submission time is known)
    and :data:`DETECTION_LATENCY` (when S3 gave the object's LastModified).

    :param outcome: an :class:`~airflow_sagemaker_async.common.records.Outcome` (``status``, ``endpoint_name``,
        ``submitted_at``, ``completed_at``, ``detected_at``).
    :param kind: ``operator`` (the async operator) or ``sensor``.
    """
    try:
        status = outcome["status"]
        tags = _tags(status=status, kind=kind, endpoint_name=outcome.get("endpoint_name"))
        _incr(f"{OUTCOMES}.{status}", 1, tags)
        detected = _parse(outcome.get("detected_at"))
        submitted_at = _parse(outcome.get("submitted_at"))
        completed = _parse(outcome.get("completed_at"))
    except Exception as error:
        _report_once(OUTCOMES, error)
        return
    if detected is not None and submitted_at is not None:
        _timing(f"{SUBMIT_TO_OUTCOME}.{status}", detected - submitted_at, tags)
    if detected is not None and completed is not None:
        _timing(DETECTION_LATENCY, detected - completed, tags)


def batch_items_ended(counts: Mapping[str, int], *, endpoint_name: str) -> None:
    """
    Count batch items that ended: :data:`BATCH_ITEMS` ``.<status>``, by how many ended with each status.

    :param counts: items that just ended, by status (``{"Completed": n, "Failed": n, "TimedOut": n}``).
    :param endpoint_name: the batch's endpoint (tag).
    """
    for status, count in counts.items():
        if count > 0:
            _incr(f"{BATCH_ITEMS}.{status}", count, _tags(status=status, endpoint_name=endpoint_name))


def _emit_held() -> None:
    try:
        if _process.hostname is None:
            _process.hostname = socket.gethostname()
        host = _process.hostname
        # A dot in a name part would add a level; Airflow replaces it with "__" in its own names too.
        stats().gauge(f"{WAITS_HELD}.{host.replace('.', '__')}", _process.held, tags={"hostname": host})
    except Exception as error:
        _report_once(WAITS_HELD, error)


@contextlib.asynccontextmanager
async def holding_wait() -> AsyncIterator[None]:
    """
    Count one wait held by this triggerer while the block runs: :data:`WAITS_HELD` ``.<hostname>``.

    The first time in a process, it first builds Airflow's metrics client in a thread, so that nothing of it
    (a host name resolution, reading configuration) runs on the event loop. Never raises of its own.
    """
    if _process.pid != os.getpid():
        try:
            await asyncio.to_thread(_warm_up)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            _report_once("set-up", error)
    _process.held += 1
    _emit_held()
    try:
        yield
    finally:
        _process.held -= 1
        _emit_held()
