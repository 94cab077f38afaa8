"""Streaming figures from the streaming example: time to first part and stream throughput, local backend.

Run:  .venv/bin/python benchmarks/streaming.py [--repeats 3] [--json PATH]

Starts the local backend in this process (moto + runtime on 127.0.0.1), creates the example's endpoint
``text-streaming`` (the bundled streaming text model), and runs the operator of
``example_dags/example_sagemaker_streaming.py`` (``SageMakerInvokeEndpointWithResponseStreamOperator``,
``aws_default`` pointing at the backend) the way the example does, in three cases:

- **example**: the example's own request (64 tokens, the model's default 20 ms between tokens), written to
  S3: time to first part is the backend + container latency; throughput is bounded by the model's pace.
- **bulk to S3**: 400 parts of 64 KiB with no delay (25 MiB): the stream's ceiling through event-stream
  framing, botocore's decoder and an S3 multipart upload (8 MiB parts) into moto.
- **bulk to a file**: the same stream appended to a local file, flushed per part.

Each case runs ``--repeats`` times; the table shows the median and the range. Everything shares the machine
(the model container, the runtime, moto and the operator): figures are for comparison, not for AWS.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

PROMPT = {"inputs": "Explain what Airflow does with a stream", "parameters": {"max_new_tokens": 64}}
CASES: dict[str, dict[str, Any]] = {
    "example (64 tokens, 20 ms apart) -> S3": {"custom_attributes": None, "destination": "s3"},
    "bulk 400 x 64 KiB -> S3 multipart": {
        "custom_attributes": "tokens=400,token_bytes=65536,delay=0",
        "destination": "s3",
    },
    "bulk 400 x 64 KiB -> local file": {
        "custom_attributes": "tokens=400,token_bytes=65536,delay=0",
        "destination": "file",
    },
}


class StandInTaskInstance:
    dag_id, task_id, run_id, map_index, try_number = "example_sagemaker_streaming", "generate", "bench", -1, 1

    def xcom_push(self, key: str, value: Any) -> None:
        """Links are pushed to XCom; nobody reads them here."""


def run_case(case: dict[str, Any], number: int, directory: Path) -> dict[str, float]:
    from airflow_sagemaker_async.realtime.streaming import SageMakerInvokeEndpointWithResponseStreamOperator

    destination: dict[str, str] = (
        {"output_location": f"s3://sagemaker-async-local/bench/streaming-{number}.txt"}
        if case["destination"] == "s3"
        else {"output_file": str(directory / f"streaming-{number}.txt")}
    )
    operator = SageMakerInvokeEndpointWithResponseStreamOperator(
        task_id="generate",
        aws_conn_id="aws_default",
        endpoint_name="text-streaming",
        input_data=PROMPT,
        content_type="application/json",
        custom_attributes=case["custom_attributes"],
        **destination,
    )
    outcome = operator.execute({"ti": StandInTaskInstance()})  # type: ignore[arg-type]
    # From the request to the last part (the operator's clients are made before it invoked).
    seconds = (
        datetime.fromisoformat(outcome["completed_at"]) - datetime.fromisoformat(outcome["invoked_at"])
    ).total_seconds()
    return {
        "time_to_first_part_ms": 1000 * float(outcome["time_to_first_part_seconds"] or 0.0),
        "seconds": seconds,
        "parts": float(outcome["parts"]),
        "bytes": float(outcome["output_bytes"]),
        "mib_per_second": outcome["output_bytes"] / 2**20 / seconds,
        "parts_per_second": outcome["parts"] / seconds,
    }


def summary(values: list[float], digits: int) -> str:
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per case, default 3")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    arguments = parser.parse_args()

    os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="bench-streaming-airflow-"))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"
    from airflow_sagemaker_async.local import LocalSageMakerAsyncBackend

    with LocalSageMakerAsyncBackend() as backend, tempfile.TemporaryDirectory() as directory:
        os.environ["AIRFLOW_CONN_AWS_DEFAULT"] = backend.airflow_connection_env()
        backend.create_endpoint("text-streaming", model="text", async_inference=False)
        run_case(CASES["example (64 tokens, 20 ms apart) -> S3"], 0, Path(directory))  # warm-up: clients, imports
        results: dict[str, list[dict[str, float]]] = {
            name: [run_case(case, n, Path(directory)) for n in range(arguments.repeats)] for name, case in CASES.items()
        }

    print(f"Streaming, local backend, median (min-max) of {arguments.repeats} runs\n")
    print("| case | parts | bytes | time to first part (ms) | request to last part (s) | parts/s | MiB/s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, runs in results.items():
        column = {key: [run[key] for run in runs] for key in runs[0]}
        print(
            f"| {name} | {column['parts'][0]:.0f} | {column['bytes'][0]:,.0f} | "
            f"{summary(column['time_to_first_part_ms'], 1)} | {summary(column['seconds'], 2)} | "
            f"{summary(column['parts_per_second'], 0)} | {summary(column['mib_per_second'], 2)} |"
        )
    if arguments.json is not None:
        arguments.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
