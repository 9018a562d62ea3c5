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
        # No settings of our own: a first visit, as MLflow lays it out.
        context = browser.new_context(viewport={"width": 1600, "height": 1000})
        try:
            page = context.new_page()
            page.set_default_timeout(page_timeout)
            yield page
        finally:
            browser.close()


def choose_model_training(page, ui: str, experiment: str) -> None:
    """What README tells a first visit to do: open the experiment, which MLflow shows in its
    GenAI layout, and pick *Model training* in the sidebar's switch: the runs table opens."""
    from playwright.sync_api import expect

    page.goto(f"{ui}/#/experiments/{experiment}")
    expect(page).to_have_url(re.compile(r"[?&]workflowType=genai(&|$)"))
    # MLflow's GenAI overview greets a first visit with a note that holds the page until read.
    page.get_by_role("button", name="Got it").click()
    page.get_by_text("Model training", exact=True).click()
    expect(page).to_have_url(
        re.compile(rf"#/experiments/{experiment}/runs\?(.*&)?workflowType=machine_learning")
    )


def test_run_params_metric_and_filter_image_show_in_the_browser(mlflow_ui, trained, page, tmp_path):
    from playwright.sync_api import expect

    run, experiment = trained["run"], trained["experiment_id"]
    run_id, name = run.info.run_id, run.info.run_name
    run_url = f"{mlflow_ui}/#/experiments/{experiment}/runs/{run_id}"
    test_acc = run.data.metrics["test/acc"]
    try:
        choose_model_training(page, mlflow_ui, experiment)
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


def test_the_experiment_opens_in_mlflows_layout_and_keeps_the_model_training_choice(
    mlflow_ui, trained, page, tmp_path
):
    """MLflow's own page, unpatched: a first visit opens the experiment in MLflow's GenAI layout;
    once *Model training* is picked in the sidebar, the runs table holds the run with its
    values, and the browser keeps the choice: the experiment opens there next time."""
    from playwright.sync_api import expect

    run, experiment = trained["run"], trained["experiment_id"]
    shot = tmp_path / "experiment-page.png"
    try:
        choose_model_training(page, mlflow_ui, experiment)
        link = page.locator(f'a[href="#/experiments/{experiment}/runs/{run.info.run_id}"]')
        expect(link).to_have_text(run.info.run_name)
        page.goto(f"{mlflow_ui}/#/")
        page.goto(f"{mlflow_ui}/#/experiments/{experiment}")
        expect(page).to_have_url(
            re.compile(rf"#/experiments/{experiment}/runs\?(.*&)?workflowType=machine_learning")
        )
        expect(link).to_have_text(run.info.run_name)
    finally:
        page.screenshot(path=str(shot), full_page=True)
        print(f"screenshot: {shot}")
