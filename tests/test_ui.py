"""digitlab-ui serves the project's store on 127.0.0.1 and the run summary names it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from digitlab.cli import ui
from digitlab.tracking import store as tracking
from digitlab.tracking import ui_server


def test_ui_serves_the_logger_store_on_localhost(monkeypatch, tmp_path):
    monkeypatch.setenv("DIGITLAB_ROOT", str(tmp_path))
    (tmp_path / "mlruns").mkdir()
    (tmp_path / "mlruns" / "mlflow.db").touch()
    calls = []
    monkeypatch.setattr(ui.os, "execv", lambda path, argv: calls.append(argv))
    monkeypatch.setattr(ui.os, "environ", dict(ui.os.environ))  # what main sets stays here
    ui.main([])
    (argv,) = calls
    # MLflow's own `mlflow ui`, run by digitlab's launcher (its page opens in the training view).
    assert argv[1:3] == ["-c", ui_server.LAUNCHER]
    assert argv[3:] == [
        "ui",
        "--backend-store-uri",
        f"sqlite:///{tmp_path}/mlruns/mlflow.db",
        "--host",
        "127.0.0.1",
        "--port",
        "5000",
        "--workers",
        "1",
    ]
    # One server process, and none of MLflow's job runner's: they only compete for the cores.
    assert ui.os.environ["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    ui.main(["--port", "5123", "--host", "0.0.0.0", "--workers", "3"])
    assert calls[1][-6:] == ["--host", "0.0.0.0", "--port", "5123", "--workers", "3"]


def test_ui_without_a_store_fails_in_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("DIGITLAB_ROOT", str(tmp_path))
    monkeypatch.setattr(ui.os, "execv", lambda *a: pytest.fail("must not start the UI"))
    with pytest.raises(SystemExit) as exit_info:
        ui.main([])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("digitlab-ui: error: no MLflow store at ") and err.count("\n") == 1


def test_the_launcher_serves_mlflows_app_through_digitlabs_page(monkeypatch):
    """`mlflow ui` starts uvicorn on MLflow's app; under the launcher, on :func:`classic_app`."""
    import mlflow.server

    monkeypatch.setattr(
        mlflow.server, "_build_uvicorn_command", mlflow.server._build_uvicorn_command
    )  # restored after the test
    ui_server.serve_classic_page()
    command = mlflow.server._build_uvicorn_command(
        None, "127.0.0.1", 5000, 1, "mlflow.server.fastapi_app:app"
    )
    assert command[-2:] == ["--factory", "digitlab.tracking.ui_server:classic_app"]
    assert command[command.index("--port") + 1] == "5000"
    other = mlflow.server._build_uvicorn_command(None, "127.0.0.1", 5000, 1, "plugin:app")
    assert other[-1] == "plugin:app"  # an app of another name (--app-name) is left alone


def test_the_page_opens_in_the_training_view_with_the_metric_columns(monkeypatch):
    """MLflow 3's page keeps its layout in the browser (localStorage), GenAI unless chosen; the
    experiment kind tag no longer picks it. The page digitlab serves sets the browser's first
    choice: the training view, the assistant's panel closed, digitlab's metrics as columns."""
    import mlflow.server

    monkeypatch.setitem(
        mlflow.server.app.view_functions, "serve", mlflow.server.app.view_functions["serve"]
    )  # restored after the test
    ui_server.classic_app()
    response = mlflow.server.app.test_client().get("/")
    page = response.get_data(as_text=True)
    assert response.status_code == 200 and response.mimetype == "text/html"
    assert response.headers["Cache-Control"] == "no-cache"
    head = page[: page.index("static/js/main.")]  # before MLflow's own script
    assert """"mlflow.workflowType_v1": '"machine_learning"'""" in head
    assert '"mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true"' in head
    for metric in ui_server.METRIC_COLUMNS:
        assert f"metrics.`{metric}`" in head
    assert "getItem(key) === null" in head  # a choice the user made stays theirs


def test_digitlab_experiments_are_of_the_training_kind(tmp_path, migrated_db):
    """The experiment kind MLflow 3 records as a tag: set on the experiments digitlab creates,
    and on those an earlier digitlab created without it; a kind the user chose stays."""
    from mlflow.tracking import MlflowClient

    from conftest import copy_store

    uri = copy_store(tmp_path, migrated_db)["tracking_uri"]
    client = MlflowClient(uri)
    new = tracking.get_or_create_experiment(client, "digitlab", str(tmp_path / "artifacts"))
    older = client.create_experiment("older")  # as digitlab made them before
    chosen = client.create_experiment("chosen", tags={tracking.KIND_TAG: "genai_development"})
    for name in ("older", "chosen"):
        tracking.get_or_create_experiment(client, name, None)

    def kind(experiment_id: str) -> str | None:
        return client.get_experiment(experiment_id).tags.get(tracking.KIND_TAG)

    assert kind(new) == kind(older) == "custom_model_development"
    assert kind(chosen) == "genai_development"


def test_run_summary_prints_the_ui_command():
    default = "sqlite:////somewhere/mlruns/mlflow.db"
    assert tracking.ui_command(default, default) == "uv run digitlab-ui"
    other = "sqlite:////tmp/other.db"
    assert tracking.ui_command(other, default) == f"uv run digitlab-ui --backend-store-uri {other}"


def test_ui_module_does_not_import_torch():
    code = "import sys, digitlab.cli.ui; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_ui_process_does_not_print_starlettes_deprecation_of_mlflows_import():
    """MLflow's server imports a module Starlette deprecates: the warning is MLflow's business,
    left out of digitlab-ui's output; the same import without the UI's environment shows it."""
    import os
    import subprocess
    import sys

    from digitlab.tracking.ui_server import mlflow_ui_environment

    code = "import mlflow.server.fastapi_app"
    plain = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    shown = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=plain, timeout=120
    )
    assert "StarletteDeprecationWarning" in shown.stderr  # so the check below can fail
    quiet = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=mlflow_ui_environment(plain),
        timeout=120,
    )
    assert quiet.returncode == 0 and "DeprecationWarning" not in quiet.stderr, quiet.stderr
