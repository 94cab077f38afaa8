"""
End to end: the batch progress page in a real headless Chromium, served by a real Airflow's API server.

A batch of 300 items (every 25th malformed; the model sleeps 0.4 s per item) runs under the cluster of
:mod:`tests.e2e.airflow_cluster` (its own dags folder); the test opens the task's "Batch progress" extra link with
the UI's ``_token`` cookie, sees the chart drawn and the figures grow while the batch runs, then the end with the
manifest linked and the first failure reasons. Without a token the page and its JSON answer 401, with a token
Airflow did not sign 403.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/servers`` installs them): without them the module is
skipped with a one-line reason, except under ``CI=true``, where that is a failure. ``SAVE_SCREENSHOT=path``
saves the page mid-batch (``docs/images/batch-progress.png`` was made so).
"""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from airflow_sagemaker_async.local.harness import AirflowCluster, free_port, wait_for
from tests.e2e.airflow_cluster import examples_environment

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_sagemaker_async.local.backend import LocalEndpoint, LocalSageMakerAsyncBackend

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(420)]

DAGS = Path(__file__).parent / "dags" / "progress_page"
DAG_ID = "progress_page_batch"
STARTUP_TIMEOUT = 180.0
RUN_TIMEOUT = 240.0


def require_chromium() -> None:
    """Skip with the one-line reason when Chromium or its driver is missing; fail under ``CI=true``."""
    missing = [name for name in ("chromium", "chromedriver") if shutil.which(name) is None]
    if missing:
        reason = f"{' and '.join(missing)} not installed (apt-get install chromium chromium-driver; .ci/servers)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
    sagemaker_async_backend: LocalSageMakerAsyncBackend,
    sagemaker_async_iris_endpoint: LocalEndpoint,
) -> Iterator[AirflowCluster]:
    require_chromium()
    home = tmp_path_factory.mktemp("progress-airflow")
    env = examples_environment(
        home, sagemaker_async_backend, sagemaker_async_iris_endpoint, api_port=free_port(), dags_folder=DAGS
    )
    with AirflowCluster(env) as server:
        server.migrate_db()
        server.start_components(STARTUP_TIMEOUT)
        wait_for("the DAG to be parsed", lambda: server.dag_count(DAG_ID) >= 1, STARTUP_TIMEOUT, server, interval=1)
        yield server


@pytest.fixture
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=900,900"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def status_of(url: str, token: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_the_page_draws_a_running_batch_and_updates_until_the_manifest(cluster: AirflowCluster, browser: Any) -> None:
    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN
    from selenium.webdriver.common.by import By

    run_id = cluster.trigger(DAG_ID, {"custom_attributes": "sleep=0.4"})
    links_path = f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/score/links"
    seen: dict[str, Any] = {}

    def link_ready() -> bool:
        seen["links"] = cluster.request("GET", links_path)
        return "Batch progress" in str(seen["links"]) and "/sagemaker-async/" in str(seen["links"])

    wait_for("the Batch progress link while the batch runs", link_ready, RUN_TIMEOUT, cluster, interval=1)
    url = next(v for v in (seen["links"].get("extra_links") or seen["links"]).values() if "/sagemaker-async/" in str(v))
    assert cluster.run_state(DAG_ID, run_id) == "running"
    # No token: Airflow's auth answers 401; a token it did not sign, 403; the API's own token, the JSON.
    data_url = url.replace("/batch-progress?", "/batch-progress/data?")
    assert status_of(data_url) == 401
    assert status_of(url) == 401
    assert status_of(data_url, token="eyJhbGciOiJIUzI1NiJ9.e30.not-signed-by-airflow") == 403
    assert status_of(data_url, token=cluster.token) in {200, 404}  # 404 until the first progress write

    browser.get(f"{cluster.base}/api/v2/version")  # the origin, to set the UI's cookie on
    browser.add_cookie({"name": COOKIE_NAME_JWT_TOKEN, "value": cluster.token, "path": "/"})
    browser.get(url)

    def ended() -> int:
        value = browser.find_element(By.ID, "ended").text
        return int(value) if value.isdigit() else -1

    wait_for("the page to show items ended", lambda: ended() > 0, RUN_TIMEOUT, cluster, interval=0.5)
    first = ended()
    assert first < 300, "the batch ended before the page could show it running"
    assert browser.find_element(By.ID, "line-Completed").get_attribute("points")
    wait_for("the page to update", lambda: 0 < first < ended() < 300, RUN_TIMEOUT, cluster, interval=0.5)
    assert float(browser.find_element(By.ID, "rate").text) > 0
    assert browser.find_element(By.ID, "eta").text not in {"", "…"}
    if target := os.environ.get("SAVE_SCREENSHOT"):
        browser.save_screenshot(target)

    def status() -> str:
        return str(browser.find_element(By.ID, "status").text)

    # Every item can be counted (a write before the manifest is built) while the batch still runs: wait for its end.
    wait_for("the page to show the end", lambda: status() == "(ended)", RUN_TIMEOUT, cluster, interval=1)
    assert ended() == 300
    assert browser.find_element(By.ID, "n-Failed").text == "12"
    assert browser.find_element(By.ID, "manifest-link").text.endswith("/manifest.jsonl")
    reasons = [row.text for row in browser.find_elements(By.CSS_SELECTOR, "#failures tr")]
    assert len(reasons) == 5
    assert all("Failed" in row and "Row 1 must hold exactly 4 numbers" in row for row in reasons)
    points = browser.find_element(By.ID, "line-Completed").get_attribute("points").split()
    assert len(points) >= 3
