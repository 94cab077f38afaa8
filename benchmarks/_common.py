"""Helpers shared by the benchmarks: the local backend in its own process, percentiles, Markdown tables."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

BENCHMARKS_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCHMARKS_DIR.parent
RESULTS_DIR = BENCHMARKS_DIR / "results"


def console_script(name: str) -> str:
    """Return the path of a console script installed next to this interpreter (the venv's ``bin``)."""
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else name


@contextlib.contextmanager
def local_backend(
    work_dir: Path, *, demo: bool = False, time_scale: float = 1.0, startup_timeout: float = 60.0
) -> Iterator[dict[str, Any]]:
    """
    Run ``sagemaker-async-local up`` in a separate process; yield its ready document; stop it on exit.

    A separate process, so that moto and the runtime never share the GIL with what is measured.
    Its log goes to ``work_dir/backend.log``.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    ready_file = work_dir / "backend-ready.json"
    ready_file.unlink(missing_ok=True)
    command = [console_script("sagemaker-async-local"), "up", "--ready-file", str(ready_file), "--quiet"]
    command += ["--time-scale", str(time_scale)]
    if not demo:
        command.append("--no-demo")
    with (work_dir / "backend.log").open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + startup_timeout
            while not ready_file.exists():
                if process.poll() is not None:
                    raise RuntimeError(f"sagemaker-async-local exited with {process.returncode}; see {log.name}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"sagemaker-async-local not ready after {startup_timeout:.0f} s; see {log.name}")
                time.sleep(0.1)
            yield json.loads(ready_file.read_text())
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def airflow_env(ready: dict[str, Any], airflow_home: Path, **extra: str) -> dict[str, str]:
    """Return ``os.environ`` plus the backend's ``aws_default`` connection, a private AIRFLOW_HOME and ``extra``."""
    airflow_home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(
        AIRFLOW_HOME=str(airflow_home),
        AIRFLOW_CONN_AWS_DEFAULT=ready["airflow_conn_aws_default"],
        AWS_ACCESS_KEY_ID=ready["aws_access_key_id"],
        AWS_SECRET_ACCESS_KEY=ready["aws_secret_access_key"],
        AWS_DEFAULT_REGION=ready["region_name"],
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__UNIT_TEST_MODE="False",
    )
    env.update(extra)
    return env


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
