"""
Orchestration overhead through Airflow: M inferences via the operator, submit -> outcome in XCom.

    .venv/bin/python benchmarks/airflow_overhead.py            # M = 20, model sleep 2 s (~2 min)
    .venv/bin/python benchmarks/airflow_overhead.py --m 50 --sleep 5

Runs the DAG ``benchmarks/dags/sagemaker_async_overhead.py`` (one mapped
``SageMakerInvokeEndpointAsyncOperator`` over M payloads, CustomAttributes ``sleep=<s>``) with
``airflow dags test`` (SQLite, a fresh AIRFLOW_HOME under ``benchmarks/results/airflow_overhead/``)
against the local backend's demo ``iris-endpoint``. ``dags test`` runs the mapped task instances one after
the other and each deferred trigger in line, so every inference is measured alone (no queueing in the
backend, no concurrency in the trigger).

The backend runs in this (orchestrating) process, so its ``invocations()`` records say when each request
was received, handed to the model container and finished (object written to S3); Airflow runs in a child
process. For each inference, from the outcome in XCom (metadata DB) and the backend's record:

- ``total``     = outcome ``detected_at`` - ``submitted_at`` (submit -> the trigger saw the object);
- ``model``     = record ``finished_time`` - ``started_time`` (the model's own time incl. the S3 write);
- ``overhead``  = total - model (what orchestration adds: queueing, the poll schedule, the trigger);
- ``detection`` = ``detected_at`` - ``finished_time`` (object written -> seen by the trigger).

Output: a Markdown table on stdout and ``benchmarks/results/airflow_overhead.json``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import BENCHMARKS_DIR, RESULTS_DIR, fmt, markdown_table, percentile, write_json

from airflow_sagemaker_async.local.harness import (
    HarnessError,
    MetadataReader,
    airflow_environment,
    dags_test,
    migrate_db,
)

DAG_ID = "sagemaker_async_overhead"


def _seconds(later: datetime | str, earlier: datetime | str) -> float:
    def parse(value: datetime | str) -> datetime:
        return value if isinstance(value, datetime) else datetime.fromisoformat(value)

    return (parse(later) - parse(earlier)).total_seconds()


def _read_outcomes(env: dict[str, str]) -> list[dict[str, Any]]:
    """Return the ``return_value`` XComs of the benchmark DAG's mapped task, read through Airflow's models."""
    with MetadataReader(env) as metadata:
        run = metadata.last_run(DAG_ID)
    xcoms = {} if run is None else run.xcoms
    outcomes = [{**value, "map_index": index} for (task_id, index), value in xcoms.items() if task_id == "infer"]
    return sorted(outcomes, key=lambda outcome: outcome["map_index"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--m", type=int, default=20, help="inferences (mapped task instances); default 20")
    parser.add_argument("--sleep", type=float, default=2.0, help="model time per request, seconds; default 2")
    parser.add_argument("--poll-interval", type=float, default=2.0, help="operator poll_interval, s; default 2")
    parser.add_argument("--out-dir", default=str(RESULTS_DIR), help="default benchmarks/results")
    parser.add_argument("--timeout", type=float, default=1800, help="give up on `dags test` after this; default 1800")
    args = parser.parse_args(argv)

    from airflow_sagemaker_async.local import LocalSageMakerAsyncBackend
    from airflow_sagemaker_async.local.cli import create_demo, ready_document

    out_dir = Path(args.out_dir)
    work_dir = out_dir / "airflow_overhead"
    airflow_home = work_dir / "airflow-home"
    shutil.rmtree(airflow_home, ignore_errors=True)
    started = time.perf_counter()
    with LocalSageMakerAsyncBackend() as backend:
        ready = ready_document(backend, create_demo(backend))
        env = airflow_environment(
            airflow_home,
            ready=ready,
            dags_folder=BENCHMARKS_DIR / "dags",
            extra={
                "SAGEMAKER_ASYNC_BENCH_M": str(args.m),
                "SAGEMAKER_ASYNC_BENCH_SLEEP": f"{args.sleep:g}",
                "SAGEMAKER_ASYNC_BENCH_POLL_INTERVAL": f"{args.poll_interval:g}",
            },
        )
        print("airflow db migrate ...", file=sys.stderr, flush=True)
        migrate_started = time.perf_counter()
        migrate_db(env, work_dir / "db-migrate.log", 600)
        migrate_s = time.perf_counter() - migrate_started
        print(f"airflow dags test {DAG_ID} (M={args.m}) ...", file=sys.stderr, flush=True)
        dags_test_started = time.perf_counter()
        code = dags_test(env, DAG_ID, work_dir / "dags-test.log", timeout=args.timeout)
        dags_test_s = time.perf_counter() - dags_test_started
        if code != 0:
            raise HarnessError(f"airflow dags test {DAG_ID} ended with {code}; see {work_dir / 'dags-test.log'}")
        records = {record.inference_id: record for record in backend.invocations(ready["demo"]["endpoint_name"])}
    outcomes = _read_outcomes(env)
    rows = []
    for outcome in outcomes:
        record = records[outcome["inference_id"]]
        total = _seconds(outcome["detected_at"], outcome["submitted_at"])
        model = _seconds(record.finished_time, record.started_time)
        rows.append(
            {
                "map_index": outcome["map_index"],
                "inference_id": outcome["inference_id"],
                "status": outcome["status"],
                "total_s": total,
                "model_s": model,
                "overhead_s": total - model,
                "queue_s": _seconds(record.started_time, record.received_time),
                "detection_s": _seconds(outcome["detected_at"], record.finished_time),
            }
        )
    summary = {
        name: {
            "p50": percentile([row[f"{name}_s"] for row in rows], 50),
            "p95": percentile([row[f"{name}_s"] for row in rows], 95),
            "max": max((row[f"{name}_s"] for row in rows), default=None),
        }
        for name in ("total", "model", "overhead", "queue", "detection")
    }
    document = {
        "benchmark": "airflow_overhead",
        "created_at": datetime.now(UTC).isoformat(),
        "settings": {"m": args.m, "model_sleep_s": args.sleep, "poll_interval_s": args.poll_interval},
        "completed": sum(1 for row in rows if row["status"] == "Completed"),
        "db_migrate_s": migrate_s,
        "dags_test_s": dags_test_s,
        "wall_s": time.perf_counter() - started,
        "summary": summary,
        "inferences": rows,
    }
    write_json(out_dir / "airflow_overhead.json", document)
    labels = {
        "total": "submit -> detected (XCom)",
        "model": "model's own time (backend)",
        "overhead": "**overhead** = total - model",
        "queue": "queue in the backend",
        "detection": "object written -> detected",
    }
    table = [
        [labels[name], *(fmt(summary[name][q], 2) for q in ("p50", "p95", "max"))]
        for name in ("total", "model", "overhead", "queue", "detection")
    ]
    print(markdown_table(["seconds", "p50", "p95", "max"], table))
    print(
        f"\n{document['completed']}/{args.m} inferences Completed (outcomes read from XCom); "
        f"`dags test` took {dags_test_s:.1f} s ({dags_test_s / max(args.m, 1):.1f} s per inference, run one "
        f"after the other), `db migrate` {migrate_s:.1f} s.\nJSON: {out_dir / 'airflow_overhead.json'}"
    )
    print(f"Total wall time: {time.perf_counter() - started:,.0f} s")
    return 0 if document["completed"] == args.m else 1


if __name__ == "__main__":
    sys.exit(main())
