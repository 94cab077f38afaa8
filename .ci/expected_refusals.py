"""
pytest plugin for the platform sets (.ci/platform-test): a refusal by design is an expected failure.

With an older botocore (MWAA 3.2.1's 1.42.84), the plugin refuses on purpose what that botocore cannot send
(an inline ``Body``, ``PrefixAwareId``) with a ``SageMakerAsyncParameterError`` saying "needs botocore >= X"
(:data:`airflow_sagemaker_async.common.rules.FIELDS_ADDED`), and botocore itself refuses a request carrying them.
A test written for the newest botocore then fails with exactly such a refusal; this plugin reports it as
xfailed, with the botocore release as its reason. Any other failure stays a failure.
``tests/test_botocore_range.py`` checks the refusals themselves.

Loaded with ``-p expected_refusals`` (``PYTHONPATH=.ci``), only by .ci/platform-test.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

# Ours ("needs botocore >= X"); the batch operator's, whose inline limit is 0 without Body; botocore's own
# (a client of that botocore cannot send the field: "Unknown parameter", or a KeyError in its serializer
# when its parameter validation is off).
_REFUSAL = re.compile(
    r"needs botocore >= (?P<ours>\d+\.\d+\.\d+)|"
    r"(?P<batch>more than the 0 bytes InvokeEndpointAsync accepts inline)|"
    r'Unknown parameter in input: "(?P<unknown>Body|PrefixAwareId)"|'
    r"botocore/serialize\.py[\s\S]*KeyError: '(?P<serializer>Body|PrefixAwareId)'"
)
_ADDED = {"Body": "1.43.29", "PrefixAwareId": "1.43.68"}
_counted: list[str] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    """Report a failure whose text is such a refusal as xfailed."""
    outcome = yield
    report = outcome.get_result()
    if not report.failed or call.excinfo is None:
        return
    match = _REFUSAL.search(str(report.longrepr))
    if match:
        field = match["unknown"] or match["serializer"] or "Body"
        report.outcome = "skipped"
        report.wasxfail = f"refused by design: needs botocore >= {match['ours'] or _ADDED[field]}"
        _counted.append(item.nodeid)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say how many tests were refusals by design."""
    if _counted:
        terminalreporter.write_line(
            f"expected_refusals: {len(_counted)} tests need a newer botocore than installed (xfailed by design)"
        )
