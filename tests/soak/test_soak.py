"""
The short soak (issues #14, #20) in CI: 1,000 inputs through batch + push under every fault at once, nothing lost,
on both topologies: SQLite + LocalExecutor, and PostgreSQL + Celery (two schedulers, two workers, two triggerers,
with the Celery worker, both triggerers, a scheduler, Redis and PostgreSQL as faults too).

Runs ``python -m tests.soak.soak --items 1000`` in a process of its own (its local backend must not share this
process's moto with the pytest plugin's), prints its report, and fails when the soak does: a lost or duplicated
manifest line, a wrong status, an invocation repeated outside the documented at-least-once case, or a task or
run that did not succeed. See ``tests/soak/soak.py`` for what runs and which faults are injected.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_celery_topology

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.timeout(1500)]

REPO = Path(__file__).resolve().parents[2]


# The LocalExecutor topology's short soak runs with `make soak-short-local` (and its 10,000-item soak with
# `make soak`): the Celery topology's soak injects the same faults and more, and make test keeps under ~25 min.
@pytest.mark.parametrize("topology", [pytest.param("local", marks=pytest.mark.soak_local), pytest.param("celery")])
def test_short_soak_loses_nothing_duplicates_nothing_and_reports_true_statuses(tmp_path: Path, topology: str) -> None:
    if topology == "celery":
        require_celery_topology()
    command = [sys.executable, "-m", "tests.soak.soak", "--items", "1000", "--work-dir", str(tmp_path / "soak")]
    soak = subprocess.run(
        [*command, "--topology", topology],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1400,
        check=False,
    )
    print(soak.stdout[-20000:])
    assert soak.returncode == 0, (
        f"the soak failed (logs under {tmp_path}):\n{soak.stdout[-6000:]}\n{soak.stderr[-4000:]}"
    )
    assert "RESULT: PASS" in soak.stdout
    # The worker's SIGKILL and most of the topology's faults came before the run ended (a fast run may end
    # before the last ones: the short soak is about a subset; make soak / soak-celery inject them all).
    kills = soak.stdout.count("   kill: ")
    assert kills >= (4 if topology == "celery" else 2), soak.stdout[-3000:]
