"""A real headless Chromium browses the MLflow UI over a store filled by a real training run."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import CHROMIUM
from digitlab.training.run import train

FILTER_IMAGE = "figures/filters/conv1_final.png"

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_health(url: str, server: subprocess.Popen, log: Path, seconds: float = 300) -> None:
    """Poll /health until it answers OK; fail early (with the server's log) if the server died."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.read().strip() == b"OK":
                    return
        except OSError:
            pass
        try:
            server.wait(timeout=0.5)  # doubles as the pause between polls
        except subprocess.TimeoutExpired:
            continue
        pytest.fail(f"mlflow ui exited with {server.returncode}:\n{log.read_text()[-3000:]}")
    tail = log.read_text()[-3000:]
    pytest.fail(f"mlflow ui did not answer {url}/health in {seconds:.0f} s:\n{tail}")


@pytest.fixture
def trained(make_cfg, tmp_path) -> dict:
    """One short LeNet run; train() creates the experiment (absolute artifact location) first."""
    cfg = make_cfg("model=lenet", "trainer.limit_train_batches=2", "figures.enabled=true")
    result = train(cfg, output_dir=tmp_path / "job", choices={"model": "lenet", "data": "mnist"})
    from mlflow.tracking import MlflowClient

    client = MlflowClient(cfg.logger.tracking_uri)
    run = client.get_run(result["run_id"])
    return {"uri": cfg.logger.tracking_uri, "run": run, "experiment_id": run.info.experiment_id}


@pytest.fixture
def mlflow_ui(trained, tmp_path):
    """``mlflow ui`` on a free 127.0.0.1 port over the trained store; stopped at teardown."""
    port = free_port()
    log = tmp_path / "mlflow-ui.log"
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", trained["uri"],
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with log.open("w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                  start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(url, server, log)
        yield url
    finally:
        # The UI runs as a process group (uvicorn forks a worker): stop all of it.
        try:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


@pytest.fixture
def page(tmp_path):
    from playwright.sync_api import expect, sync_playwright

    # Generous: the first page load compiles cold JavaScript, slow on a busy 2-core machine.
    expect.set_options(timeout=60_000)
    page_timeout = 60_000
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--disable-gpu", "--disable-quic", "--disable-dev-shm-usage"],
        )
        context = browser.new_context(viewport={"width": 1600, "height": 1000})
        # Open the UI in its classic training view, without the assistant panel.
        context.add_init_script(
            "localStorage.setItem('mlflow.workflowType_v1', JSON.stringify('machine_learning'));"
            "localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');"
        )
        try:
            page = context.new_page()
            page.set_default_timeout(page_timeout)
            yield page
        finally:
            browser.close()


def test_run_params_metric_and_filter_image_show_in_the_browser(mlflow_ui, trained, page, tmp_path):
    from playwright.sync_api import expect

    run, experiment = trained["run"], trained["experiment_id"]
    run_id, name = run.info.run_id, run.info.run_name
    run_url = f"{mlflow_ui}/#/experiments/{experiment}/runs/{run_id}"
    test_acc = run.data.metrics["test/acc"]
    try:
        page.goto(f"{mlflow_ui}/#/experiments/{experiment}/runs")
        expect(page.locator(f'a[href="#/experiments/{experiment}/runs/{run_id}"]')).to_have_text(name)

        page.goto(run_url)
        expect(page.get_by_role("heading", name=name)).to_be_visible()
        expect(page.get_by_test_id("key-value-Run ID")).to_contain_text(run_id)
        param = page.get_by_role("row").filter(has_text="model._target_")
        expect(param).to_contain_text("digitlab.models.LeNet")
        metric = page.get_by_role("row").filter(has_text="test/acc")
        value = metric.get_by_role("cell").nth(1)
        expect(value).to_have_text(re.compile(r"^\s*[0-9.]+\s*$"))
        assert float(value.inner_text()) == pytest.approx(test_acc, abs=5e-3)  # UI rounds

        page.goto(f"{run_url}/artifacts")
        for folder in ("figures", "filters"):
            page.get_by_test_id("artifact-tree-node").filter(has_text=folder).first.click()
        page.get_by_test_id("artifact-tree-node").filter(has_text="conv1_final.png").click()
        image = page.locator(f'img[alt="{FILTER_IMAGE}"]')
        expect(image).to_be_visible()
        loaded = "img => img.complete && img.naturalWidth > 0"
        page.wait_for_function(loaded, arg=image.element_handle())
        assert image.evaluate("img => img.naturalWidth") > 0
    except Exception as e:
        shot = tmp_path / "browser-failure.png"
        page.screenshot(path=str(shot), full_page=True)
        raise AssertionError(f"browser check failed; screenshot at {shot}: {e}") from e
