"""
The short soak (issue #14) in CI: 1,000 inputs through batch + push under every fault at once, nothing lost.

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

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.timeout(1500)]

REPO = Path(__file__).resolve().parents[2]


def test_short_soak_loses_nothing_duplicates_nothing_and_reports_true_statuses(tmp_path: Path) -> None:
    soak = subprocess.run(
        [sys.executable, "-m", "tests.soak.soak", "--items", "1000", "--work-dir", str(tmp_path / "soak")],
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
