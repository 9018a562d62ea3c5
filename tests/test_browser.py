"""A real headless Chromium browses the MLflow UI over a store filled by a real training run, in
a fresh profile each time: what a user opening ``digitlab-ui`` for the first time sees."""

from __future__ import annotations

import re
import sys

import pytest

from conftest import CHROMIUM, http_server
from digitlab.training.run import train

FILTER_IMAGE = "figures/filters/conv1_final.png"

pytestmark = [pytest.mark.browser, pytest.mark.slow]


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
    """``digitlab-ui`` (the project's command, which runs MLflow's UI) on a free 127.0.0.1 port
    over the trained store; stopped at teardown."""

    def command(port: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "digitlab.cli.ui",
            "--backend-store-uri",
            trained["uri"],
            "--port",
            str(port),
        ]

    with http_server(command, tmp_path / "mlflow-ui.log") as url:
        yield url


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
        # No settings of our own: digitlab-ui's page picks MLflow's training view.
        context = browser.new_context(viewport={"width": 1600, "height": 1000})
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
        expect(page.locator(f'a[href="#/experiments/{experiment}/runs/{run_id}"]')).to_have_text(
            name
        )

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
        image = page.locator(f'img[alt="{FILTER_IMAGE}"]')
        node = page.get_by_test_id("artifact-tree-node").filter(has_text="conv1_final.png")
        # On a busy machine the tree may still be re-rendering the opened folders when the
        # file is clicked, and the click selects nothing: click again, as a user would.
        for attempt in range(3):
            node.click()
            try:
                expect(image).to_be_visible(timeout=20_000)
                break
            except AssertionError:
                if attempt == 2:
                    raise
        loaded = "img => img.complete && img.naturalWidth > 0"
        page.wait_for_function(loaded, arg=image.element_handle())
        assert image.evaluate("img => img.naturalWidth") > 0
    except Exception as e:
        shot = tmp_path / "browser-failure.png"
        page.screenshot(path=str(shot), full_page=True)
        raise AssertionError(f"browser check failed; screenshot at {shot}: {e}") from e


def test_the_experiment_opens_as_the_runs_table_with_metric_columns(
    mlflow_ui, trained, page, tmp_path
):
    """The experiment's page, as a first visit opens it: MLflow's training view (not GenAI's
    traces overview), no assistant panel taking the side of the window, and the runs table with
    digitlab's metrics as columns, inside the window, holding the run's values."""
    from playwright.sync_api import expect

    from digitlab.tracking.ui_server import METRIC_COLUMNS

    run, experiment = trained["run"], trained["experiment_id"]
    shot = tmp_path / "experiment-page.png"
    try:
        page.goto(f"{mlflow_ui}/#/experiments/{experiment}")
        expect(page).to_have_url(
            re.compile(rf"#/experiments/{experiment}/runs\?(.*&)?workflowType=machine_learning")
        )
        link = page.locator(f'a[href="#/experiments/{experiment}/runs/{run.info.run_id}"]')
        expect(link).to_have_text(run.info.run_name)
        width = 1440  # a laptop's window: the columns fit it
        for metric in METRIC_COLUMNS:
            header = page.locator(f'.ag-header-cell[col-id="metrics.`{metric}`"]')
            expect(header).to_be_visible()
            expect(header).to_contain_text(metric)
            box = header.bounding_box()
            assert 0 <= box["x"] and box["x"] + box["width"] <= width, (metric, box)
        cell = page.locator('.ag-row .ag-cell[col-id="metrics.`test/acc`"]').first
        expect(cell).to_have_text(re.compile(r"^\s*[0-9.]+\s*$"))
        assert float(cell.inner_text()) == pytest.approx(run.data.metrics["test/acc"], abs=5e-3)
        # The assistant is its button in the corner; its panel (a chat box) is closed.
        expect(page.get_by_placeholder(re.compile("Ask a question"))).to_be_hidden()
    finally:
        page.screenshot(path=str(shot), full_page=True)
        print(f"screenshot: {shot}")
