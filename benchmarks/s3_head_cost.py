"""
CPU per S3 HeadObject, client side (what a triggerer pays per safety check) and server side (the local backend).

    .venv/bin/python benchmarks/s3_head_cost.py                 # 3,000 HEADs at concurrency 1 and 16 (~1 min)
    .venv/bin/python benchmarks/s3_head_cost.py --heads 10000 --concurrency 1 4 16

The backend (``sagemaker-async-local up --no-demo``) runs in its own process. This process HEADs keys that do
not exist (404: a wait's usual answer) through one aiobotocore S3 client with the defaults a trigger gets from
``S3Hook.get_async_conn`` (pool of 10 connections), ``concurrency`` HEADs in flight at a time, as the waits of
one event loop do. Measured per HEAD: this process's CPU (user + sys, all threads), the backend process's CPU,
and the TCP connections this process opened (aiohttp's ``TCPConnector._create_connection`` calls: a server that
closes every connection shows about one per HEAD, keep-alive about one per connection of the pool).

Output: a Markdown table on stdout and ``benchmarks/results/s3_head_cost.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import psutil
from _common import RESULTS_DIR, client_kwargs, fmt, markdown_table, write_json

from airflow_sagemaker_async.local.harness import BackendProcess

BUCKET = "bench-head"


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


async def _run(ready: dict[str, Any], backend: psutil.Process, heads: int, concurrency: int) -> dict[str, Any]:
    from aiobotocore.session import get_session
    from botocore.exceptions import ClientError

    kwargs = client_kwargs(ready)
    opened = [0]
    original = aiohttp.TCPConnector._create_connection

    async def create_connection(self: Any, *args: Any, **kw: Any) -> Any:
        opened[0] += 1
        return await original(self, *args, **kw)

    aiohttp.TCPConnector._create_connection = create_connection  # type: ignore[method-assign]
    async with get_session().create_client("s3", **kwargs) as client:
        await client.head_bucket(Bucket=BUCKET)  # warm up: endpoint resolution, first connection
        gate = asyncio.Semaphore(concurrency)
        run_id = uuid.uuid4().hex[:8]
        not_found = 0

        async def head(index: int) -> None:
            nonlocal not_found
            async with gate:
                try:
                    await client.head_object(Bucket=BUCKET, Key=f"{run_id}/{index}.out")
                except ClientError as error:
                    if error.response["ResponseMetadata"]["HTTPStatusCode"] != 404:
                        raise
                    not_found += 1

        opened[0] = 0
        cpu, server_cpu, wall = _cpu(), sum(backend.cpu_times()[:2]), time.perf_counter()
        await asyncio.gather(*(head(i) for i in range(heads)))
        cpu, wall = _cpu() - cpu, time.perf_counter() - wall
        server_cpu = sum(backend.cpu_times()[:2]) - server_cpu
        connections = opened[0]
    aiohttp.TCPConnector._create_connection = original  # type: ignore[method-assign]
    return {
        "heads": heads,
        "concurrency": concurrency,
        "not_found": not_found,
        "wall_s": wall,
        "heads_per_s": heads / wall,
        "client_cpu_ms_per_head": 1000 * cpu / heads,
        "server_cpu_ms_per_head": 1000 * server_cpu / heads,
        "connections_opened": connections,
        "load_average": os.getloadavg(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heads", type=int, default=3000, help="HEADs per concurrency level, default 3000")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16], help="HEADs in flight, default 1 16")
    parser.add_argument("--label", default="", help="a name for this run in the JSON (e.g. before / after)")
    parser.add_argument("--out-dir", default=str(RESULTS_DIR))
    args = parser.parse_args()
    work_dir = Path(args.out_dir) / "s3_head_cost"
    work_dir.mkdir(parents=True, exist_ok=True)
    results = []
    with BackendProcess(work_dir, demo=False, quiet=True) as backend:
        import boto3

        boto3.client("s3", **client_kwargs(backend.ready)).create_bucket(Bucket=BUCKET)
        assert backend.process is not None
        server = psutil.Process(backend.process.pid)
        for concurrency in args.concurrency:
            results.append(asyncio.run(_run(backend.ready, server, args.heads, concurrency)))
            print(f"concurrency {concurrency}: done", file=sys.stderr, flush=True)
    write_json(Path(args.out_dir) / "s3_head_cost.json", {"label": args.label, "results": results})
    headers = ["concurrency", "HEADs", "HEAD/s", "client CPU ms per HEAD", "backend CPU ms per HEAD"]
    headers += ["TCP connections opened", "load average (1 min)"]
    rows = [
        [
            str(r["concurrency"]),
            f"{r['heads']:,}",
            fmt(r["heads_per_s"], 0),
            fmt(r["client_cpu_ms_per_head"], 2),
            fmt(r["server_cpu_ms_per_head"], 2),
            f"{r['connections_opened']:,}",
            fmt(r["load_average"][0], 2),
        ]
        for r in results
    ]
    print(markdown_table(headers, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
