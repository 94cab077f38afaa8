"""
The package's metrics (``airflow_sagemaker_async.common.metrics``) as a real StatsD server receives them.

Each test starts a StatsD UDP listener on 127.0.0.1 and a fresh Python process with Airflow's ``[metrics]``
pointing at it (Airflow sets its metrics client up once per process, from the configuration it reads then), which
emits through the module as the operators, triggers and receiver do. No mock of ``Stats``: what is asserted is
what crossed the socket. Metrics from a real scheduler, worker and triggerer: ``tests/e2e/test_airflow_cluster.py``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from airflow_sagemaker_async.common import metrics
from airflow_sagemaker_async.push.notifications import Notification, parse_message
from tests.statsd_listener import StatsdListener

ROOT = Path(__file__).resolve().parents[1]

#: What the operators, the triggers and the receiver emit for one inference, one batch wave and a few messages.
EMIT = textwrap.dedent(
    """
    import asyncio
    from airflow_sagemaker_async.common import metrics

    metrics.submitted("async", endpoint_name="iris-endpoint")
    metrics.submitted("batch", endpoint_name="iris-endpoint", count=25)

    async def trigger():
        async with metrics.holding_wait():
            metrics.s3_request("head", kind="inference")
            metrics.s3_request("head", kind="inference")
            metrics.s3_request("list", kind="batch")
            for fate in ("routed", "not_ours", "stale", "malformed"):
                metrics.notification(fate)

    asyncio.run(trigger())
    metrics.inference_ended(
        {
            "status": "Completed",
            "endpoint_name": "iris-endpoint",
            "submitted_at": "2026-12-05T10:00:00+00:00",
            "completed_at": "2026-12-05T10:00:04+00:00",
            "detected_at": "2026-12-05T10:00:04.750000+00:00",
        },
        kind="operator",
    )
    metrics.batch_items_ended({"Completed": 20, "Failed": 4, "TimedOut": 1}, endpoint_name="iris-endpoint")
    metrics.batch_items_ended({"Completed": 5, "Failed": 0}, endpoint_name="iris-endpoint")
    print("emitted")
    """
)


#: What the triggerer does (airflow/jobs/triggerer_job_runner.py, 3.2 and 3.3): set up airflow-core's own Stats
#: only, then fork the trigger runner, where the triggers emit.
LIKE_THE_TRIGGERER = textwrap.dedent(
    """
    import os
    from airflow._shared.observability.metrics import stats
    from airflow.observability.metrics import stats_utils

    if hasattr(stats, "initialize"):  # Airflow 3.3
        stats.initialize(factory=stats_utils.get_stats_factory(), export_legacy_names=True)
    else:  # Airflow 3.2
        stats.Stats.initialize(factory=stats_utils.get_stats_factory(stats.Stats))
    pid = os.fork()
    if pid == 0:
        from airflow_sagemaker_async.common import metrics

        metrics.s3_request("head", kind="inference")
        print("emitted through", metrics.stats().__module__, flush=True)
        os._exit(0)
    os.waitpid(pid, 0)
    """
)


def _emit(listener: StatsdListener, code: str = EMIT, **settings: str) -> str:
    env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW__METRICS__")}
    env.update(listener.airflow_environment(**settings))
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "emitted" in done.stdout
    assert "not sent" not in done.stderr, done.stderr  # metrics._report_once: nothing failed on the way
    return done.stdout


def test_every_metric_reaches_statsd_under_airflow_prefix_with_the_dimension_in_the_name() -> None:
    with StatsdListener() as listener:
        _emit(listener)
        listener.wait_for("batch items", lambda: listener.total("airflow.sagemaker_async.batch_items.Completed") == 25)
        ours = listener.metrics("airflow.sagemaker_async.")
        by_name = {metric.name: metric for metric in ours}

        assert listener.total("airflow.sagemaker_async.submissions.async") == 1
        assert listener.total("airflow.sagemaker_async.submissions.batch") == 25
        assert listener.total("airflow.sagemaker_async.s3_requests.head") == 2
        assert listener.total("airflow.sagemaker_async.s3_requests.list") == 1
        for fate in ("routed", "not_ours", "stale", "malformed"):
            assert listener.total(f"airflow.sagemaker_async.notifications.{fate}") == 1
        assert listener.total("airflow.sagemaker_async.outcomes.Completed") == 1
        assert listener.total("airflow.sagemaker_async.batch_items.Failed") == 4
        assert listener.total("airflow.sagemaker_async.batch_items.TimedOut") == 1
        assert "airflow.sagemaker_async.batch_items.Failed" in by_name  # a zero count is not sent...
        assert sum(m.name.endswith(".Failed") and m.name.startswith("airflow.sagemaker_async.batch") for m in ours) == 1
        # Timers in milliseconds: LastModified -> detected 750 ms, submitted -> detected 4,750 ms.
        assert by_name["airflow.sagemaker_async.detection_latency"].type == "ms"
        assert by_name["airflow.sagemaker_async.detection_latency"].value == pytest.approx(750)
        assert by_name["airflow.sagemaker_async.submit_to_outcome.Completed"].value == pytest.approx(4750)
        # The gauge: one wait held, then none, named after this host.
        host = socket.gethostname().replace(".", "__")
        gauges = [m for m in ours if m.name == f"airflow.sagemaker_async.waits_held.{host}"]
        assert [(m.type, m.value) for m in gauges] == [("g", 1), ("g", 0)]
        # Plain StatsD drops tags: none reached the wire, the dimensions are in the names above.
        assert all(not metric.tags and "," not in metric.name for metric in ours)


def test_influxdb_tagging_appends_the_tags_to_each_name() -> None:
    with StatsdListener() as listener:
        _emit(listener, statsd_influxdb_enabled="True", statsd_prefix="prod")
        name = "prod.sagemaker_async.outcomes.Completed,status=Completed,kind=operator,endpoint_name=iris-endpoint"
        listener.wait_for("the tagged outcome", lambda: listener.total(name) == 1)
        assert listener.total("prod.sagemaker_async.submissions.batch,kind=batch,endpoint_name=iris-endpoint") == 25
        assert not listener.metrics("airflow.")  # Airflow's statsd_prefix, not ours, is in front


def test_a_trigger_emits_through_the_stats_the_triggerer_set_up() -> None:
    # apache/airflow#69172: on Airflow 3.2 the task SDK's Stats (airflow.sdk.observability.stats) is silent there;
    # 3.3 sets the SDK's up as well (airflow.sdk.serde, at import), but the triggerer's client is core's.
    with StatsdListener() as listener:
        said = _emit(listener, LIKE_THE_TRIGGERER)
        listener.wait_for("the trigger's HEAD", lambda: listener.total("airflow.sagemaker_async.s3_requests.head") == 1)
    assert "emitted through airflow._shared.observability.metrics.stats" in said


#: A trigger in a triggerer-like process; says in which thread Airflow 3.3 parsed its metrics registry (YAML).
REGISTRY_THREAD = textwrap.dedent(
    """
    import asyncio, os, threading
    from airflow._shared.observability.metrics import metrics_registry, stats
    from airflow.observability.metrics import stats_utils

    stats.initialize(factory=stats_utils.get_stats_factory(), export_legacy_names=True)
    parse = metrics_registry.MetricsRegistry.__init__

    def spy(self):
        print("registry parsed in", threading.current_thread().name, flush=True)
        parse(self)

    metrics_registry.MetricsRegistry.__init__ = spy
    pid = os.fork()
    if pid == 0:
        from airflow_sagemaker_async.common import metrics

        async def trigger():
            async with metrics.holding_wait():
                metrics.s3_request("head", kind="inference")
            print("emitted", flush=True)

        asyncio.run(trigger())
        os._exit(0)
    os.waitpid(pid, 0)
    """
)


def test_the_first_metric_of_a_trigger_process_is_prepared_off_the_event_loop() -> None:
    from airflow._shared.observability.metrics import stats

    if not hasattr(stats, "_get_registry"):
        pytest.skip("Airflow 3.2 has no metrics registry to parse")
    with StatsdListener() as listener:
        said = _emit(listener, REGISTRY_THREAD)
    assert "registry parsed in" in said
    assert "registry parsed in MainThread" not in said  # the loop's thread: ~0.1 s of YAML parsing on the loop


def test_no_airflow_metric_name_starts_with_the_package_prefix() -> None:
    from airflow.sdk._shared.observability.metrics import metrics_registry

    names = [entry["name"] for entry in metrics_registry.read_metrics_yaml(str(metrics_registry.YAML_REGISTRY_PATH))]
    assert len(names) > 50  # Airflow's own registry was read
    assert not [name for name in names if name.split(".")[0] == metrics.PREFIX]
    assert not metrics.PREFIX.startswith("airflow")  # Airflow's statsd_prefix goes in front: no "airflow.airflow."


COMPLETED_MESSAGE = json.dumps(
    {
        "awsRegion": "us-east-1",
        "eventTime": "2026-12-05T10:00:04.000Z",
        "receivedTime": "2026-12-05T10:00:00.000Z",
        "invocationStatus": "Completed",
        "requestParameters": {"endpointName": "iris-endpoint", "inputLocation": "s3://b/in"},
        "responseParameters": {"contentType": "application/json", "outputLocation": "s3://b/out/x.out"},
        "inferenceId": "i-1",
        "eventVersion": "1.0",
        "eventSource": "aws:sagemaker",
        "eventName": "InferenceResult",
    }
)
TEST_MESSAGE = json.dumps({"eventName": "TestNotification", "endpointName": "ep", "eventSource": "aws:sagemaker"})


@pytest.mark.parametrize(
    ("body", "routed", "deleted", "fate"),
    [
        (COMPLETED_MESSAGE, True, True, "routed"),
        (COMPLETED_MESSAGE, False, False, "not_ours"),
        (COMPLETED_MESSAGE, False, True, "stale"),
        ("{not json", False, False, "malformed"),
        ("{not json", False, True, "malformed"),
        (TEST_MESSAGE, False, True, "ignored"),
    ],
)
def test_notification_fate_names_what_the_receiver_did_with_what_the_parser_made(
    body: str, routed: bool, deleted: bool, fate: str
) -> None:
    parsed = parse_message(body)
    assert isinstance(parsed, Notification) == (body == COMPLETED_MESSAGE)  # the message is one the parser reads
    assert metrics.notification_fate(parsed, routed=routed, deleted=deleted) == fate
