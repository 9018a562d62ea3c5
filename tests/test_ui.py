"""digitlab-ui serves the project's store on 127.0.0.1 and the run summary names it."""

from __future__ import annotations

import socket
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
    calls, checked = [], []
    monkeypatch.setattr(ui.os, "execv", lambda path, argv: calls.append(argv))
    # whether 5000 is free on this machine is not this test's business
    monkeypatch.setattr(ui, "check_port", lambda host, port, fix: checked.append((host, port)))
    monkeypatch.setattr(ui.os, "environ", dict(ui.os.environ))  # what main sets stays here
    ui.main([])
    (argv,) = calls
    # MLflow's own `mlflow ui`, run by digitlab's launcher (which only adds an exit status).
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
    assert checked == [("127.0.0.1", 5000), ("0.0.0.0", 5123)]  # each before its server


@pytest.fixture
def busy_port():
    """A port a listening socket of the test holds on 127.0.0.1."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield held.getsockname()[1]


def test_ui_on_a_busy_port_says_so_in_one_line_and_announces_nothing(
    monkeypatch, tmp_path, capsys, busy_port
):
    monkeypatch.setenv("DIGITLAB_ROOT", str(tmp_path))
    (tmp_path / "mlruns").mkdir()
    (tmp_path / "mlruns" / "mlflow.db").touch()
    monkeypatch.setattr(ui.os, "execv", lambda *a: pytest.fail("must not start the UI"))
    with pytest.raises(SystemExit) as exit_info:
        ui.main(["--port", str(busy_port)])
    assert exit_info.value.code == 1
    out, err = capsys.readouterr()
    assert out == ""  # no "MLflow UI ... at http://..." for a server that cannot start
    assert err == (
        f"digitlab-ui: error: port {busy_port} on 127.0.0.1 is already in use (another MLflow "
        "UI, or another program): choose another with --port N\n"
    )


def test_digitlab_ui_on_a_busy_port_raises_one_line(tmp_path, migrated_db, busy_port):
    import digitlab
    from conftest import copy_store
    from digitlab.errors import DigitlabError

    uri = copy_store(tmp_path, migrated_db)["tracking_uri"]
    with pytest.raises(DigitlabError, match=f"^port {busy_port} on 127.0.0.1 is already in use"):
        digitlab.ui(uri, port=busy_port)


def test_the_ui_process_exits_non_zero_when_its_server_fails(tmp_path, migrated_db, busy_port):
    """The server's own start fails (here: the port, taken after any check could see it free):
    ``mlflow ui`` exits 0 whatever its server did; digitlab's UI process does not."""
    import os

    from conftest import copy_store

    uri = copy_store(tmp_path, migrated_db)["tracking_uri"]
    failed = subprocess.run(
        ui_server.mlflow_ui_command(uri, port=busy_port),
        capture_output=True,
        text=True,
        env=ui_server.mlflow_ui_environment(dict(os.environ)),
        timeout=300,
    )
    assert failed.returncode == 1, failed.stderr[-3000:]
    assert failed.stderr.splitlines()[-1] == (
        "digitlab-ui: error: the MLflow UI server stopped by itself: its lines above say why"
    )


def test_ui_without_a_store_fails_in_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("DIGITLAB_ROOT", str(tmp_path))
    monkeypatch.setattr(ui.os, "execv", lambda *a: pytest.fail("must not start the UI"))
    with pytest.raises(SystemExit) as exit_info:
        ui.main([])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("digitlab-ui: error: no MLflow store at ") and err.count("\n") == 1


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
