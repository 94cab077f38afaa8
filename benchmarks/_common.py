"""Helpers shared by the benchmarks: percentiles, Markdown tables, JSON results.

Processes (the local backend in its own process, Airflow's environment and commands) come from
``airflow_sagemaker_async.local.harness``.
"""

from __future__ import annotations

import json
import math
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from airflow_sagemaker_async.local.harness import HarnessError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

BENCHMARKS_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCHMARKS_DIR.parent
RESULTS_DIR = BENCHMARKS_DIR / "results"


def percentile(values: Sequence[float], q: float) -> float | None:
    """Return the ``q``-th percentile (0-100, linear interpolation) of ``values``; ``None`` when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def fmt(value: float | None, digits: int = 2, unit: str = "") -> str:
    """Format a number for a table cell; ``-`` for ``None``."""
    if value is None:
        return "-"
    return f"{value:,.{digits}f}{unit}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Return a GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path: Path, document: Any) -> None:
    """Write ``document`` as indented JSON, atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(document, indent=2, default=str) + "\n")
    temporary.replace(path)


def run_script(main: Callable[[], int]) -> NoReturn:
    """
    Run a benchmark's ``main`` and exit with its status.

    SIGTERM unwinds the ``with`` blocks, so the backend and every Airflow process are stopped too; a
    :class:`~airflow_sagemaker_async.local.harness.HarnessError` ends with its message and status 2.
    """
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        sys.exit(main())
    except HarnessError as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        sys.exit(2)


def client_kwargs(ready: dict[str, Any]) -> dict[str, str]:
    """Return boto3 client arguments (endpoint, region, credentials) for a local backend's ready document."""
    return {
        "endpoint_url": ready["endpoint_url"],
        "region_name": ready["region_name"],
        "aws_access_key_id": ready["aws_access_key_id"],
        "aws_secret_access_key": ready["aws_secret_access_key"],
    }
