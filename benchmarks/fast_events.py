"""
How often does Airflow fail a fast deferrable task ("state mismatch"), with and without the fast-event guard?

    .venv/bin/python benchmarks/fast_events.py                 # 3 runs with min_deferral_seconds=0, 3 with the default
    .venv/bin/python benchmarks/fast_events.py --runs 5 --at-once 2 --modes guard-default
    .venv/bin/python benchmarks/fast_events.py --topology celery --runs 6 --at-once 2   # PostgreSQL + Celery

apache/airflow#71580 / #72716: when a trigger fires before the scheduler has processed the executor's event of
the attempt that deferred, an Airflow 3.3 scheduler can mark the resumed task failed. The plugin's guard holds
every trigger's event until ``[sagemaker_async] min_deferral_seconds`` (default 10 s) after the deferral.

For each mode (``min_deferral_seconds=0``, then the default), a fresh real Airflow on 127.0.0.1
(``AirflowCluster``: scheduler with the LocalExecutor, dag-processor, triggerer, api-server; SQLite) runs the DAG
of ``tests/e2e/test_fast_events.py`` (``tests/e2e/dags/fast_events/``: 16 mapped single-operator inferences of
0-2 s and one batch of 40 items of 0.5 s) ``--runs`` times, ``--at-once`` runs at a time, against the local
backend (its own process). Triggers check every 0.5-1 s (``[sagemaker_async] poll_interval`` /
``max_poll_interval``), as in the test. Counted per mode: task instances not ``success``, task instances on a
second try, "state mismatch" entries of Airflow's event log (REST ``/api/v2/eventLogs``), and the scheduler log's
lines "... finished with state success, but the task instance's state attribute is ...".

``--topology celery`` (or ``SAGEMAKER_ASYNC_TOPOLOGY=celery``) runs each mode on the production topology instead:
PostgreSQL, the CeleryExecutor with Redis, two schedulers, two Celery workers, two triggerers
(:mod:`airflow_sagemaker_async.local.topology`); the scheduler lines are counted in both schedulers' logs.

Output: a Markdown table on stdout and ``benchmarks/results/fast_events.json``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import REPO_DIR, RESULTS_DIR, markdown_table, run_script, write_json

from airflow_sagemaker_async.local.harness import (
    AirflowCluster,
    BackendProcess,
    airflow_environment,
    free_port,
    wait_for,
)
from airflow_sagemaker_async.local.topology import cluster_servers, topology_from

DAGS_FOLDER = REPO_DIR / "tests" / "e2e" / "dags" / "fast_events"
DAG_ID = "sagemaker_async_fast_events"
MISMATCH_LINE = "but the task instance's state attribute is"
#: ``min_deferral_seconds`` of each mode: 0 (guard off) and None (the default, 10 s).
MODES: dict[str, float | None] = {"guard-0": 0.0, "guard-default": None}


def run_mode(
    backend: BackendProcess, work_dir: Path, min_deferral: float | None, runs: int, at_once: int, topology: str
) -> dict[str, Any]:
    """Start a fresh cluster with the guard at ``min_deferral`` (None: default), run the DAG; return the counts."""
    with cluster_servers(work_dir, topology) as servers:
        return _run_mode(backend, work_dir, min_deferral, runs, at_once, servers)


def _run_mode(
    backend: BackendProcess, work_dir: Path, min_deferral: float | None, runs: int, at_once: int, servers: Any
) -> dict[str, Any]:
    env = airflow_environment(
        work_dir / "airflow-home",
        ready=backend.ready,
        dags_folder=DAGS_FOLDER,
        api_port=free_port(),
        poll_interval=0.5,
        max_poll_interval=1.0,
        min_deferral_seconds=min_deferral,
        servers=servers,
    )
    results: list[dict[str, Any]] = []
    with AirflowCluster(env) as cluster:
        cluster.migrate_db()
        cluster.start_components(240)
        wait_for(f"the dag-processor to parse {DAG_ID}", lambda: cluster.dag_count(DAG_ID) == 1, 240, cluster)
        remaining = runs
        while remaining:
            started = time.monotonic()
            batch = [cluster.trigger(DAG_ID) for _ in range(min(at_once, remaining))]
            remaining -= len(batch)
            for run_id in batch:
                state = wait_for(
                    f"{run_id} to finish",
                    lambda r=run_id: (s := cluster.run_state(DAG_ID, r)) in {"success", "failed"} and s,
                    300,
                    cluster,
                    interval=1,
                )
                answer = cluster.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances?limit=100")
                instances = answer["task_instances"]
                query = urllib.parse.urlencode(
                    {"dag_id": DAG_ID, "run_id": run_id, "event": "state mismatch", "limit": 100}
                )
                events = cluster.request("GET", f"/api/v2/eventLogs?{query}")
                results.append(
                    {
                        "run_id": run_id,
                        "state": state,
                        "wall_s": time.monotonic() - started,
                        "task_instances": len(instances),
                        "not_success": sorted(
                            f"{ti['task_id']}[{ti['map_index']}]={ti['state']}"
                            for ti in instances
                            if ti["state"] != "success"
                        ),
                        "second_try": sum(1 for ti in instances if ti["try_number"] > 1),
                        "state_mismatch_events": int(events["total_entries"]),
                    }
                )
                print(f"  {results[-1]}", file=sys.stderr, flush=True)
        scheduler_lines = sum(
            process.log().count(MISMATCH_LINE)
            for name, process in cluster.processes.items()
            if name.startswith("scheduler")
        )
    return {
        "min_deferral_seconds": "default (10)" if min_deferral is None else min_deferral,
        "runs": results,
        "task_instances": sum(r["task_instances"] for r in results),
        "not_success": sum(len(r["not_success"]) for r in results),
        "second_try": sum(r["second_try"] for r in results),
        "state_mismatch_events": sum(r["state_mismatch_events"] for r in results),
        "scheduler_log_lines": scheduler_lines,
        "failed_runs": sum(1 for r in results if r["state"] != "success"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="DAG runs per mode; default 3")
    parser.add_argument("--at-once", type=int, default=1, help="runs triggered together; default 1")
    parser.add_argument(
        "--modes", nargs="+", choices=list(MODES), default=list(MODES), help="guard settings to run; default both"
    )
    parser.add_argument("--out-dir", default=str(RESULTS_DIR), help="default benchmarks/results")
    parser.add_argument(
        "--topology",
        choices=("local", "celery"),
        help="local (SQLite, LocalExecutor) or celery; default $SAGEMAKER_ASYNC_TOPOLOGY, else local",
    )
    args = parser.parse_args(argv)
    topology = topology_from(args.topology)

    out_dir = Path(args.out_dir)
    suffix = "" if topology == "local" else f"_{topology}"
    work_dir = out_dir / f"fast_events{suffix}"
    shutil.rmtree(work_dir, ignore_errors=True)
    started = time.perf_counter()
    modes: list[dict[str, Any]] = []
    document = {
        "benchmark": "fast_events",
        "created_at": datetime.now(UTC).isoformat(),
        "settings": {
            "runs": args.runs,
            "at_once": args.at_once,
            "poll_interval": 0.5,
            "max_poll_interval": 1.0,
            "topology": topology,
        },
        "modes": modes,
    }
    with BackendProcess(work_dir, quiet=True) as backend:
        for name in args.modes:
            print(f"{name}: min_deferral_seconds={MODES[name]} ...", file=sys.stderr, flush=True)
            modes.append(run_mode(backend, work_dir / name, MODES[name], args.runs, args.at_once, topology))
            document["wall_s"] = time.perf_counter() - started
            # What each mode found, even if a later one fails.
            write_json(out_dir / f"fast_events{suffix}.json", document)
    print(
        markdown_table(
            [
                "min_deferral_seconds",
                "runs (failed)",
                "task instances",
                "not success",
                "on a 2nd try",
                "'state mismatch' events",
                "scheduler log lines",
            ],
            [
                [
                    str(mode["min_deferral_seconds"]),
                    f"{len(mode['runs'])} ({mode['failed_runs']})",
                    str(mode["task_instances"]),
                    str(mode["not_success"]),
                    str(mode["second_try"]),
                    str(mode["state_mismatch_events"]),
                    str(mode["scheduler_log_lines"]),
                ]
                for mode in modes
            ],
        )
    )
    print(f"\nJSON: {out_dir / f'fast_events{suffix}.json'}\nTotal wall time: {document['wall_s']:,.0f} s")
    return 0


if __name__ == "__main__":
    run_script(main)
